"""Deploying the Modal app: a child process with a deadline, and what follows a deploy.

``canvascast deploy`` never calls Modal's SDK in its own process. It runs this module
(``python -m canvascast_cli.ops.deploy RESULT_FILE OPTIONS_JSON``) as a child, in a process
group of its own, with no stdin (never a prompt) and its output forwarded line by line
to the parent's stderr (token values masked). The child

1. probes Modal (``Client.from_env()`` + ``hello()``, bounded by ``probe_timeout``):
   no answer is ``ModalUnavailable`` (exit 3) within seconds, not after the SDK's own
   ~60 s; a token Modal refuses is ``InvalidInput`` (exit 2) naming the variables;
2. imports ``modal_functions.app`` (the settings come from ``CANVASCAST_CONFIG`` and the
   ``CANVASCAST_*`` variables, as the parent read them);
3. calls ``app.deploy(name=, environment_name=, tag=)``, inside
   ``modal.enable_output()`` when ``progress`` (not under ``--json``);
4. writes one JSON line to RESULT_FILE: ``{"result": {...}}`` or ``{"error": {...}}`` (an
   error's ``to_dict()``, which the parent raises again as the same class).

``run_child`` is the parent's side: it kills the child's process group at the deadline
(``ModalUnavailable``: exit 3) or when the parent is interrupted (the interrupt goes on:
exit 130), and reads the result. ``reapply_overrides`` puts the operator's warm-pool
overrides back after a deploy (Modal resets them on every redeploy).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import IO, Any

from pydantic.dataclasses import dataclass

from canvascast_cli import env
from canvascast_cli.errors import (
    CanvasCastError,
    InvalidInput,
    JobFailed,
    ModalUnavailable,
    from_dict,
)
from canvascast_cli.ops.access import TOKEN_HELP
from canvascast_cli.ops.fleet import Autoscaler, Fleet

DEPLOY_TIMEOUT = 1800.0  # seconds: a first deploy builds every image
PROBE_TIMEOUT = 10.0  # seconds Modal has to answer the first call
IMPORT_TIMEOUT = 60.0  # seconds the dry run's import of the app may take
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of the child's group
APP_MODULE = "modal_functions.app"
# The child: this module run by the same Python (tests point it elsewhere).
CHILD: tuple[str, ...] = (sys.executable, "-m", "canvascast_cli.ops.deploy")
MASK = "***"


@dataclass(frozen=True, kw_only=True)
class Deployed:
    """What a deploy made: Modal's app id, and where the job API answers."""

    app: str
    app_id: str | None
    environment: str | None
    tag: str
    functions: list[str]
    web_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class Reapplied:
    """One warm-pool override put back after the deploy (``error``: it was not)."""

    function: str
    settings: dict[str, int]
    ok: bool
    error: str | None = None


# ---------------------------------------------------------------------------------------
# The child


def probe(sdk: Any, timeout: float = PROBE_TIMEOUT) -> None:
    """One bounded round trip to Modal with the configured token: ``ModalUnavailable``
    when it does not answer within ``timeout`` s, ``InvalidInput`` when it refuses the
    token. The calls run in a daemon thread: the SDK's own wait cannot be cut short, so a
    caller that gets ``ModalUnavailable`` should end the process (the child does)."""
    box: dict[str, BaseException | bool] = {}

    def hello() -> None:
        try:
            client = sdk.Client.from_env()
            client.hello()
            box["ok"] = True
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    thread = threading.Thread(target=hello, name="modal-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ModalUnavailable(f"Modal did not answer within {timeout:g} s (unreachable, or "
                               "the network is down); nothing was deployed")
    error = box.get("error")
    if isinstance(error, BaseException):
        raise _probe_error(error) from None


def _probe_error(exc: BaseException) -> CanvasCastError:
    name = type(exc).__name__
    said = " ".join(str(exc).split())[:300]
    if name in ("AuthError", "PermissionDeniedError"):
        return InvalidInput(f"Modal refused the token ({name}: {said}); {TOKEN_HELP}")
    if name in ("ConnectionError", "TimeoutError", "OSError") or isinstance(exc, OSError):
        return ModalUnavailable(f"Modal cannot be reached ({name}: {said}); nothing was "
                                "deployed")
    from canvascast_cli.protocol.modal_calls import to_canvascast

    return to_canvascast(exc, doing="reach Modal")


def run_deploy(app: Any, *, name: str, environment: str | None, tag: str,
               functions: Sequence[str], progress: bool, sdk: Any,
               web_url: Callable[[], str | None] | None = None) -> Deployed:
    """``app.deploy(...)`` (Modal's progress shown when ``progress``), then the job API's
    URL; ``app`` is the ``modal.App`` (tests: a fake with ``deploy`` and ``app_id``)."""
    with sdk.enable_output() if progress else nullcontext():
        app.deploy(name=name, environment_name=environment, tag=tag)
    url = None
    if web_url is not None:
        try:
            url = web_url()
        except Exception as exc:  # the deploy stands; the URL is a convenience
            print(f"canvascast: the job API's URL could not be read ({type(exc).__name__})",
                  file=sys.stderr)
    return Deployed(app=name, app_id=getattr(app, "app_id", None), environment=environment,
                    tag=tag, functions=list(functions), web_url=str(url) if url else None)


def child_main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point: probe, import, deploy; one JSON line to RESULT_FILE.
    Arguments: RESULT_FILE and a JSON object of ``environment``, ``tag``,
    ``probe_timeout`` and ``progress`` (``child_argv`` writes them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m canvascast_cli.ops.deploy RESULT_FILE OPTIONS_JSON",
              file=sys.stderr)
        return 2
    result = Path(args[0])
    try:
        options = json.loads(args[1])
        sdk = importlib.import_module("modal")
        probe(sdk, float(options.get("probe_timeout") or PROBE_TIMEOUT))
        module = importlib.import_module(APP_MODULE)
        settings = module.settings
        jobs = list(getattr(module, "JOB_FUNCTIONS", {}))
        names = [*jobs, "api"] + [n for n in ("reconcile_warm_pools",) if hasattr(module, n)]
        deployed = run_deploy(module.app, name=settings.app.name,
                              environment=options.get("environment")
                              or settings.app.environment,
                              tag=str(options.get("tag") or ""), functions=names,
                              progress=bool(options.get("progress")), sdk=sdk,
                              web_url=lambda: module.api.get_web_url())
        write_result(result, {"result": json.loads(_dumps(deployed))})
        return 0
    except BaseException as exc:
        error = exc if isinstance(exc, CanvasCastError) else _as_error(exc)
        write_result(result, {"error": error.to_dict()})
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(error.exit_code)  # a probe thread may still wait on Modal: do not join it


def child_argv(result: Path, *, environment: str | None, tag: str, probe_timeout: float,
               progress: bool, child: Sequence[str] | None = None) -> list[str]:
    """The child's command line (``CHILD``, or ``child``, then its two arguments)."""
    options = {"environment": environment, "tag": tag, "probe_timeout": probe_timeout,
               "progress": progress}
    return [*(child or CHILD), str(result), json.dumps(options)]


def _as_error(exc: BaseException) -> CanvasCastError:
    if isinstance(exc, KeyboardInterrupt):
        from canvascast_cli.errors import Interrupted

        return Interrupted("deploy interrupted")
    from canvascast_cli.protocol.modal_calls import to_canvascast

    return to_canvascast(exc, doing="deploy")


def _dumps(record: Any) -> str:
    from canvascast_cli.records import dumps

    return dumps(record, indent=None)


def write_result(path: Path, body: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# The parent


def secrets_of(environ: Mapping[str, str]) -> list[str]:
    """The values output must never show: the Modal token, the job API's bearer."""
    return [v for k in (env.MODAL_TOKEN_ID, *env.SECRETS) if len(v := environ.get(k, "")) >= 4]


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def run_child(argv: Sequence[str], *, environ: Mapping[str, str], deadline: float,
              result: Path, echo: IO[str] | None = None,
              on_timeout: Callable[[float], CanvasCastError] | None = None) -> dict[str, Any]:
    """Run ``argv`` (which writes its JSON result to ``result``) with stdin closed, its
    output forwarded to ``echo`` (stderr) with secrets masked, killed with its whole
    process group after ``deadline`` seconds or when this process is interrupted.
    Returns the result's body; raises the error the child reported (same class), the
    ``on_timeout`` error at the deadline, or ``JobFailed`` with the child's last lines."""
    echo = echo if echo is not None else sys.stderr
    hidden = secrets_of(environ)
    tail: deque[str] = deque(maxlen=20)
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=dict(environ),
                            start_new_session=True, text=True, errors="replace", bufsize=1)

    def forward() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = mask(line, hidden)
            tail.append(line.rstrip("\n"))
            try:
                echo.write(line)
                echo.flush()
            except (OSError, ValueError):  # the terminal went away: keep draining
                pass

    reader = threading.Thread(target=forward, name="deploy-output", daemon=True)
    reader.start()
    try:
        proc.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        reader.join(2)
        if on_timeout is not None:
            raise on_timeout(deadline) from None
        raise ModalUnavailable(f"did not finish within {deadline:g} s") from None
    except BaseException:  # Ctrl-C, SIGTERM (signals.Terminated): the child goes too
        kill_group(proc)
        reader.join(2)
        raise
    reader.join(5)
    if proc.stdout is not None:
        proc.stdout.close()
    body = _read_result(result)
    if body is None:
        last = [line for line in tail if line.strip()][-3:]
        raise JobFailed(f"the deploy process exited with status {proc.returncode} without a "
                        "result" + (": " + " | ".join(last) if last else ""))
    if "error" in body:
        raise from_dict(body["error"]).rewritten(lambda text: mask(text, hidden))
    return dict(body.get("result") or {})


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the child's process group, SIGKILL after ``KILL_GRACE`` s; reaped."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 10.0)):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the group may outlive its leader: anything left gets SIGKILL
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def deploy_in_child(*, environ: Mapping[str, str], environment: str | None, tag: str,
                    timeout: float = DEPLOY_TIMEOUT, progress: bool = True,
                    probe_timeout: float = PROBE_TIMEOUT,
                    child: Sequence[str] | None = None,
                    echo: IO[str] | None = None) -> dict[str, Any]:
    """The deploy, in a child process (``CHILD``, or ``child``), within ``timeout`` s."""
    with tempfile.TemporaryDirectory(prefix="canvascast-deploy-") as folder:
        result = Path(folder) / "result.json"
        argv = child_argv(result, environment=environment, tag=tag,
                          probe_timeout=probe_timeout, progress=progress, child=child)
        return run_child(argv, environ=environ, deadline=timeout, result=result, echo=echo,
                         on_timeout=lambda seconds: ModalUnavailable(
                             f"deploy did not finish within {seconds:g} s; Modal may still be "
                             "building — check `modal app list`, or give a longer --timeout"))


def check_import(environ: Mapping[str, str], *, timeout: float = IMPORT_TIMEOUT,
                 module: str = APP_MODULE) -> None:
    """Modal's decoration-time checks, cheaply: import the app in a child Python (no
    network, no token). ``InvalidInput`` (exit 2) with the error's last line if it fails."""
    try:
        done = subprocess.run([sys.executable, "-c", f"import {module}"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", env=dict(environ), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise JobFailed(f"importing {module} took over {timeout:g} s; nothing was "
                        "deployed") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = mask(lines[-1], secrets_of(environ)) if lines else f"exit {done.returncode}"
        raise InvalidInput(f"{module} does not import, so Modal would refuse it: {last}")


# ---------------------------------------------------------------------------------------
# After the deploy


def reapply_overrides(fleet: Fleet, overrides: Mapping[str, Autoscaler]) -> list[Reapplied]:
    """Put each operator override back (Modal reset them all); a failure is reported in
    the result, never raised: the deploy itself succeeded."""
    done = []
    for function, settings in overrides.items():
        given = settings.given()
        if not given:
            continue
        try:
            fleet.update(function, settings)
            done.append(Reapplied(function=function, settings=given, ok=True))
        except Exception as exc:
            message = exc.message if isinstance(exc, CanvasCastError) else (
                f"{type(exc).__name__}: {exc}")
            done.append(Reapplied(function=function, settings=given, ok=False,
                                  error=message))
    return done


if __name__ == "__main__":
    sys.exit(child_main())
