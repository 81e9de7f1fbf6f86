"""The command line's own contract: fast start, help, version, docs that stay true."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from canvascast_cli.cli.app import COMMANDS, app
from canvascast_cli.cli.context import Services
from canvascast_cli.timeline import timeline_schema
from tests.helpers import REPO, ASGIBridge, Result, run_subprocess

Cli = Callable[..., Result]  # the ``cli`` fixture: canvascast's arguments -> Result
HEAVY = ("numpy", "cv2", "av", "PIL", "torch", "modal", "whisper", "faster_whisper",
         "diffusers", "imageio_ffmpeg", "pydantic", "httpx", "tenacity", "fastapi", "uvicorn",
         "sqlite3", "prometheus_client", "supabase", "storage3", "zoneinfo", "markdown_it",
         "rich.markdown", "rich.traceback", "attr", "pygments")
# What a help page may load at most: a budget that fails when a new import drags a library
# in (bench/startup_bench.py's ratio is the real target). `import typer, rich` alone loads
# 144 modules; `canvascast --help` 217 (no command module: 250 when they were all imported,
# 350 in the measurement), a command's own help 224-231 (346 when typer's coercion
# imported pydantic for the root options nobody gave).
HELP_MODULE_BUDGET = 230
COMMAND_HELP_MODULE_BUDGET = 245
HELP_RUN = ("import io, contextlib, json, sys; sys.argv = ['canvascast', *{args!r}]\n"
            "from canvascast_cli.cli.app import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        main()\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(json.dumps(sorted(sys.modules)))")


def modules_loaded_by(*args: str) -> list[str]:
    """The modules `canvascast ARGS` has loaded when it exits (main(), as a user runs it:
    typer's help renderer without rich.markdown and rich.traceback, nor pydantic for
    values not given)."""
    result = subprocess.run([sys.executable, "-c", HELP_RUN.format(args=list(args))],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "COLUMNS": "100"})
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_cli_start_imports_nothing_heavy() -> None:
    code = ("import sys, canvascast_cli.cli.app; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_help_loads_nothing_heavy_and_no_command_within_a_module_budget() -> None:
    """`canvascast --help` lists the commands from app.COMMANDS: no command module."""
    loaded = modules_loaded_by("--help")
    assert [m for m in HEAVY if m in loaded] == []
    assert [m for m in loaded if m.startswith("canvascast_cli.cli.")] == [
        "canvascast_cli.cli.app", "canvascast_cli.cli.lean_help"]
    assert len(loaded) <= HELP_MODULE_BUDGET, f"--help loads {len(loaded)} modules"


@pytest.mark.parametrize("args", [["render", "--help"], ["transcribe", "--help"],
                                  ["breaker", "--help"], ["warm", "set", "--help"]])
def test_a_commands_help_loads_its_module_and_nothing_heavy(args: list[str]) -> None:
    """Its module (and what it imports), no pydantic: the root's options were not given."""
    loaded = modules_loaded_by(*args)
    assert [m for m in HEAVY if m in loaded] == []
    assert f"canvascast_cli.cli.{COMMANDS[args[0]].module}" in loaded
    assert len(loaded) <= COMMAND_HELP_MODULE_BUDGET, f"{args} loads {len(loaded)} modules"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_table_lists_each_command_as_its_module_defines_it(name: str) -> None:
    """Listings (`canvascast --help`, completions) show what the command itself says."""
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="canvascast")
    listed = root.get_command(ctx, name)
    real = root.commands[name]  # imports it
    assert listed is not None and listed is not real
    assert root.get_command(ctx, name) is real

    def shown(command: Any) -> tuple[Any, ...]:
        line = inspect.cleandoc(command.short_help or command.help).split("\n\n")[0]
        return (command.name, command.rich_help_panel, line, command.get_short_help_str(),
                command.hidden, command.deprecated)

    assert shown(listed) == shown(real)


def test_missing_values_are_coerced_as_typer_does_without_pydantic() -> None:
    """lean_help passes a value nobody gave through typer's own coercion without building
    its pydantic adapter; a given value is coerced (and refused) as before."""
    code = ("import sys, typer\n"
            "if sys.argv[1] == 'lean':\n"
            "    from canvascast_cli.cli import lean_help; lean_help.install()\n"
            "app = typer.Typer()\n"
            "@app.command()\n"
            "def f(a: list[int] | None = typer.Option(None, '--a'), n: int | None = None):\n"
            "    print(repr(a), repr(n), 'pydantic' in sys.modules)\n"
            "typer.main.get_command(app).main(sys.argv[2:], standalone_mode=False)")

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True)
        return done.stdout or done.stderr.strip().splitlines()[-1]  # or the error's line

    assert run("lean") == "None None False\n"
    assert run("plain") == "None None True\n"
    assert run("lean", "--a", "1", "--a", "2", "--n", "3") == "[1, 2] 3 True\n"
    bad = run("lean", "--n", "x")
    assert "valid integer" in bad and bad == run("plain", "--n", "x")


def test_lean_help_renders_what_typer_renders() -> None:
    """The deferred names stand in only while typer.rich_utils loads; the help text is
    the same, and a stand-in called later is the real class."""
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    plain = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv=['canvascast', 'render', '--help']; "
         "from canvascast_cli.cli.app import app; app()"],
        capture_output=True, text=True, env=env)
    lean = run_subprocess("render", "--help", env=env)
    assert lean.stdout == plain.stdout and "--frames" in lean.stdout
    check = ("from canvascast_cli.cli import lean_help; lean_help.install(); "
             "import typer.rich_utils as r, sys; "
             "assert 'rich.markdown' not in sys.modules; "
             "m = r.Markdown('# hi'); import rich.markdown; "
             "assert isinstance(m, rich.markdown.Markdown); "
             "assert r.Traceback.from_exception.__qualname__ == 'Traceback.from_exception'; "
             "print('ok')")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_help_version_and_exit_codes_documented() -> None:
    result = run_subprocess("--help")
    assert result.exit_code == 0
    assert "Exit codes: 0 ok, 1 job failed, 2 usage or invalid input" in result.stdout
    assert "CANVASCAST_JSON" in result.stdout
    render_help = run_subprocess("render", "--help")
    assert "Exit codes:" in render_help.stdout and "--overwrite" in render_help.stdout
    version = run_subprocess("--version")
    assert version.exit_code == 0 and version.stdout.startswith("canvascast ")


def test_usage_error_exit_code_2() -> None:
    result = run_subprocess("render", "x.json", "--crf", "99")
    assert result.exit_code == 2


def test_docs_schema_matches_the_model() -> None:
    text = (REPO / "docs" / "timeline.md").read_text()
    block = re.search(r"<!-- schema:start -->\n```json\n(.*?)\n```", text, re.S)
    assert block, "docs/timeline.md lost its schema block"
    assert json.loads(block.group(1)) == timeline_schema(), (
        "docs/timeline.md's schema is stale: regenerate it from `canvascast render --schema`")


def test_demo_timeline_is_valid() -> None:
    from canvascast_cli.engines.render.inputs import resolve_timeline
    from canvascast_cli.timeline import load_timeline_file

    path = REPO / "examples" / "demo" / "timeline.json"
    timeline = load_timeline_file(path)
    resolved = resolve_timeline(timeline, path.parent)
    assert timeline.total_frames == 930 and len(resolved.words) > 50


# --- every way a run ends: one document under --json, a documented exit code ----------


@pytest.mark.parametrize("args", [["render", "x.json", "--crf", "99"],
                                  ["render", "x.json", "--preset", "bogus"],
                                  ["transcribe", "a.wav", "--offset", "-1"],
                                  ["no-such-command"]])
def test_usage_errors_under_json_are_one_document(args: list[str]) -> None:
    result = run_subprocess("--json", *args)
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "INVALID_INPUT" and error["retryable"] is False
    assert "Value error" not in error["message"]
    plain = run_subprocess(*args)
    assert plain.exit_code == 2 and plain.stdout == "" and "Usage:" in plain.stderr


def test_unexpected_failure_is_one_line_traceback_only_verbose(cli: Cli, tmp_path: Path) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom\nsecond line")

    services = Services(image_provider=broken)
    result = cli("--json", "images", "a cat", "-o", tmp_path / "out", services=services)
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "JOB_FAILED" and error["message"].startswith(
        "internal error: RuntimeError: boom (run with --verbose")
    assert "Traceback" not in result.stderr
    verbose = cli("--verbose", "images", "a cat", "-o", tmp_path / "out", services=services)
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr
    assert "error: internal error: RuntimeError: boom" in verbose.stderr


UNWRITABLE = [("/proc", "No such file or directory"), ("/sys", "Permission denied")]


@pytest.mark.parametrize(("folder", "reason"), UNWRITABLE)
def test_unwritable_outputs_are_refused_before_any_work(cli: Cli, folder: str, reason: str) -> None:
    # The inputs do not exist either: the destination is checked first, so the job never
    # starts (for transcribe: no model is loaded, no audio decoded).
    cases = [("render", "missing.json", "-o", f"{folder}/x.mp4"),
             ("transcribe", "missing.wav", "-o", f"{folder}/x.json"),
             ("images", "a cat", "--provider", "placeholder", "-o", f"{folder}/cc-images")]
    for args in cases:
        if args[0] == "render":
            (Path.cwd() / "missing.json").write_text(json.dumps(
                {"output": {"width": 320, "height": 180, "fps": 10},
                 "scenes": [{"image": "nope.jpg", "duration": 1}]}))
        result = cli("--json", *args)
        assert result.exit_code == 2, (args, result.stdout)
        error = json.loads(result.stdout)["error"]
        assert error["message"].startswith("-o: cannot write in"), error
        assert reason in error["message"]


def test_read_only_and_full_filesystems(cli: Cli, tmp_path: Path, media: Path) -> None:
    """Real mounts where this machine allows them (root in a sandbox): a read-only
    filesystem is refused up front; a full one fails the job (exit 1), leaving nothing."""
    from tests.helpers import write_timeline

    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    mounted: list[Path] = []
    for folder, options in ((ro, "ro,size=1m"), (full, "size=16k")):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            for m in mounted:
                subprocess.run(["umount", str(m)])
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(folder)
    try:
        timeline = write_timeline(media, {"output": {"width": 320, "height": 180, "fps": 10},
                                          "scenes": [{"image": "img0.jpg", "duration": 3}],
                                          "narration": "narration.wav"})
        result = cli("--json", "render", timeline, "-o", ro / "x.mp4")
        assert result.exit_code == 2
        assert "Read-only file system" in json.loads(result.stdout)["error"]["message"]
        result = cli("--json", "render", timeline, "-o", full / "x.mp4")
        assert result.exit_code == 1, result.stdout
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "FFMPEG_FAILED" and "No space left" in str(error)
        assert list(full.iterdir()) == []
    finally:
        for m in mounted:
            subprocess.run(["umount", str(m)])


@pytest.mark.parametrize(("output", "message"), [
    ("x.mkv", "-o: x.mkv must end in .mp4 or .m4v"),
    ("-", "-o: '-' (stdout) is not supported"),
])
def test_render_outputs_it_cannot_write_properly(cli: Cli, output: str, message: str) -> None:
    (Path.cwd() / "t.json").write_text(json.dumps(
        {"output": {"width": 320, "height": 180, "fps": 10},
         "scenes": [{"image": "nope.jpg", "duration": 1}]}))
    result = cli("--json", "render", "t.json", "-o", output)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["message"].startswith(message)
    assert not Path(output).exists() or (output == "-" and not Path("-").exists())


def test_render_refuses_to_overwrite_its_own_input(cli: Cli, media: Path) -> None:
    import imageio_ffmpeg

    from tests.helpers import write_timeline

    voice = media / "voice.mp4"  # narration in an MP4 file: a name -o could be given
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i",
                    str(media / "narration.wav"), "-c:a", "aac", str(voice)], check=True)
    before = voice.read_bytes()
    timeline = write_timeline(media, {"output": {"width": 320, "height": 180, "fps": 10},
                                      "scenes": [{"image": "img0.jpg", "duration": 2}],
                                      "narration": "voice.mp4"})
    result = cli("--json", "render", timeline, "-o", voice, "--overwrite")
    assert result.exit_code == 2
    assert "is one of the render's own inputs" in json.loads(result.stdout)["error"]["message"]
    assert voice.read_bytes() == before


def test_images_seeds_always_fit(cli: Cli, tmp_path: Path) -> None:
    from canvascast_cli.engines.images.job import MAX_SEED, plan_images
    from canvascast_cli.engines.images.style import StyleConfig

    result = cli("--json", "images", "a", "b", "--provider", "placeholder",
                 "--seed", str(MAX_SEED), "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "--seed: 2147483647 + 1 (one seed per image) passes" in result.stdout
    for _ in range(200):  # random base seeds leave room for every image's seed
        job = plan_images(["p"] * 50, StyleConfig(), output_dir=tmp_path / "o",
                          provider="placeholder", environ={})
        assert job.seed >= 0 and job.seed + 49 <= MAX_SEED


def test_transcribe_output_format_and_stdout(cli: Cli, tmp_path: Path) -> None:
    result = cli("--json", "transcribe", "missing.wav", "-o", tmp_path / "out.docx")
    assert result.exit_code == 2
    assert "cannot tell the format from 'out.docx'" in result.json()["error"]["message"]
    assert not (tmp_path / "out.docx").exists()
    dash = cli("--json", "transcribe", "missing.wav", "-o", "-")
    assert dash.exit_code == 2 and "missing.wav" in dash.json()["error"]["message"]
    assert not Path("-").exists()


# --- the remote path through the CLI, against the job API in-process ----------------
#
# The job API (server.app.create_app) runs in this process behind ``ASGIBridge`` as the
# CLI's httpx transport; its runner runs each job at submit (server.work.execute), so
# results are real and no worker process starts. Nothing listens on a port.

TOKEN = "tok-" + "5ec2e7" * 6
SECRET = "S3cr3t-" + "9" * 12
ENDPOINT = "http://jobs.test"


class InlineRunner:
    """``server.runner.Runner`` in this process: a job runs when it is submitted.
    ``crash``: how many of the next jobs fail as a crashed container would."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.jobs: dict[str, Any] = {}
        self.crash = 0

    def submit(self, function: str, payload: Any) -> str:
        import uuid

        from canvascast_cli.errors import CanvasCastError, ContainerCrash
        from canvascast_cli.protocol import ErrorBody, JobStatus
        from canvascast_cli.server.work import execute

        job_id = f"job-{uuid.uuid4().hex}"
        try:
            if self.crash:
                self.crash -= 1
                raise ContainerCrash("the worker died (injected)")
            result = execute(function, payload, self.store)
        except CanvasCastError as exc:
            status = JobStatus(id=job_id, function=function, state="failed",
                               error=ErrorBody.of(exc))
        else:
            status = JobStatus(id=job_id, function=function, state="done", result=result)
        self.jobs[job_id] = status
        return job_id

    def finished(self, function: str, artifacts: dict[str, bytes]) -> str:
        """A job that made ``artifacts`` (name -> bytes), as a submitter left it."""
        import uuid

        from canvascast_cli.protocol import Artifact, JobResult, JobStatus

        job_id = f"job-{uuid.uuid4().hex}"
        stored = [Artifact(name=name, sha256=sha, size=size) for name, (sha, size) in
                  ((name, self.store.put_bytes(data)) for name, data in artifacts.items())]
        self.jobs[job_id] = JobStatus(id=job_id, function=function, state="done",
                                      result=JobResult(artifacts=stored))
        return job_id

    def status(self, job_id: str, wait: float = 0.0) -> Any:
        from canvascast_cli.errors import NotFound

        if job_id not in self.jobs:
            raise NotFound(f"no job {job_id}")
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> Any:
        return self.status(job_id)

    def live_blobs(self) -> set[str]:
        return set()

    def close(self) -> None:
        return None


class Recording(httpx.BaseTransport):
    """A transport that records each request (method, path) and may act before passing
    it on (``before``: another process taking a lock, say)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: list[tuple[str, str]] = []
        self.before: Callable[[httpx.Request], None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if self.before is not None:
            self.before(request)
        return self.inner.handle_request(request)

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))


@dataclass
class JobAPI:
    runner: InlineRunner
    transport: Recording
    sleeps: list[float]


@pytest.fixture
def job_api(tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[JobAPI]:
    """The job API in-process, as the ``cli`` fixture's transport, with MODAL_ENDPOINT
    and MODAL_TOKEN pointing at it; backoff sleeps are recorded, not slept."""
    from canvascast_cli.server.app import create_app
    from canvascast_cli.server.blobs import BlobStore

    store = BlobStore(tmp_path / "store")
    runner = InlineRunner(store)
    with ASGIBridge(create_app(store, runner, TOKEN)) as bridge:
        transport = Recording(bridge)
        sleeps: list[float] = []
        services.transport, services.sleep = transport, sleeps.append
        monkeypatch.setenv("MODAL_ENDPOINT", ENDPOINT)
        monkeypatch.setenv("MODAL_TOKEN", TOKEN)
        yield JobAPI(runner, transport, sleeps)


IMAGES = ("images", "a red kite", "--provider", "placeholder", "--size", "320x180",
          "--seed", "7")


def test_images_through_the_job_api_in_process(cli: Cli, job_api: JobAPI
                                               ) -> None:
    result = cli("--json", *IMAGES, "-o", "remote", "--remote")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = result.json()
    assert doc["backend"] == "http" and len(doc["job_ids"]) == 1
    assert Path(doc["images"][0]["file"]).is_file()
    assert job_api.transport.count("POST", "/v1/jobs/generate_images") == 1
    assert job_api.sleeps == [] and TOKEN not in result.stdout + result.stderr


def test_verbose_prints_attempts_and_timings(cli: Cli, job_api: JobAPI
                                             ) -> None:
    """Guards: ``--verbose`` promises attempts and timings; a job that crashed once shows
    both attempts, the retry and how long each took."""
    job_api.runner.crash = 1
    result = cli("--verbose", *IMAGES, "-o", "out", "--remote")
    assert result.exit_code == 0, result.stderr
    err = result.stderr
    assert "generate_images on http: up to 3 attempt(s)" in err
    assert re.search(r"attempt 1: job job-[0-9a-f]{32} failed after \d+\.\d s", err), err
    assert "retrying generate_images on http in" in err and "CONTAINER_CRASH" in err
    assert re.search(r"attempt 2: job job-[0-9a-f]{32} done after \d+\.\d s", err), err
    assert len(job_api.sleeps) == 1
    quiet = cli(*IMAGES, "-o", "out2", "--remote")
    assert quiet.exit_code == 0 and "attempt 1:" not in quiet.stderr


# -- MODAL_ENDPOINT is checked once, before any request ---------------------------------

BAD_ENDPOINTS = ["ftp://jobs.example", "jobs.example", "http://jobs.example/v1",
                 "https://jobs.example/api/v1/", "http://", "http://jobs.example?x=1",
                 "http://jobs.example#top", "http://jobs.example:port/"]
CREDENTIALS = [f"http://user:{SECRET}@jobs.example", f"https://{SECRET}@jobs.example",
               f"user:{SECRET}@jobs.example", f"http://user:{SECRET}@jobs.example:abc/",
               f"http://user:{SECRET[:4]}/{SECRET[4:]}@jobs.example",
               f"http://user:{SECRET}@jobs.example/v1"]


@pytest.mark.parametrize("endpoint", BAD_ENDPOINTS + CREDENTIALS)
def test_a_bad_endpoint_is_exit_2_before_any_request(
        cli: Cli, job_api: JobAPI, monkeypatch: pytest.MonkeyPatch,
        endpoint: str) -> None:
    """Guards: MODAL_ENDPOINT was never validated (``ftp://``, no scheme: retried, exit
    3, counted by the breaker; ``/v1`` at the end: a bare Not Found), and a token in
    the URL was printed back. Every command that would go remote refuses it, naming the
    variable, before a single request; the secret is never shown."""
    monkeypatch.setenv("MODAL_ENDPOINT", endpoint)
    job = "job-" + "0" * 32
    for args in ([*IMAGES, "-o", "out"], [*IMAGES, "-o", "out", "--remote"],
                 ["jobs", "wait", job, "-o", "x.mp4"]):
        result = cli("--json", *args)
        assert result.exit_code == 2, (args, result.stdout)
        error = result.json()["error"]
        assert error["code"] == "INVALID_INPUT" and error["message"].startswith(
            "MODAL_ENDPOINT: "), error
        verbose = cli("--verbose", *args)
        assert verbose.exit_code == 2 and "MODAL_ENDPOINT" in verbose.stderr
        for text in (result.stdout, result.stderr, verbose.stdout, verbose.stderr):
            assert SECRET not in text and SECRET[:4] + "/" not in text
    assert job_api.transport.requests == [] and job_api.sleeps == []
    assert not Path("out").exists()


def test_an_endpoint_in_modal_toml_is_checked_the_same(
        cli: Cli, job_api: JobAPI, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    monkeypatch.delenv("MODAL_ENDPOINT")
    Path("modal.toml").write_text('[app]\nendpoint = "http://jobs.example/v1"\n')
    result = cli("--json", *IMAGES, "-o", "out", "--remote")
    assert result.exit_code == 2
    error = result.json()["error"]
    assert error["code"] == "CONFIG_INVALID"  # checked with the rest of modal.toml
    assert any("app.endpoint:" in d and "without /v1" in d for d in error["details"])
    assert job_api.transport.requests == []
    Path("modal.toml").write_text('[app]\nendpoint = "http://user:TOKEN123@jobs.example"\n')
    for args in (("--json", *IMAGES, "-o", "out", "--remote"), ("config", "show"),
                 ("--json", "config", "show"), ("config", "validate")):
        shown = cli(*args)
        assert shown.exit_code == 2 and "TOKEN123" not in shown.stdout + shown.stderr
    # Without --remote the run stays here, warning about modal.toml — without the token.
    local = cli(*IMAGES, "-o", "out2")
    assert local.exit_code == 0 and "modal.toml: 1 problem" in local.stderr
    assert "TOKEN123" not in local.stdout + local.stderr


def test_a_good_endpoint_is_used_as_given(cli: Cli, job_api: JobAPI,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_ENDPOINT", ENDPOINT + "/")  # a trailing slash is fine
    result = cli("--json", *IMAGES, "-o", "out", "--remote")
    assert result.exit_code == 0, result.stdout
    assert job_api.transport.requests[0][1].startswith("/v1/")


# -- jobs wait ------------------------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_jobs_wait_and_remote_exit_alike_when_the_server_is_down(
        cli: Cli, services: Services, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """Guards: ``jobs wait`` exited 1 (CONNECTION_FAILED) where ``render --remote`` exits
    3: one mapping for both (retries spent -> remote unavailable)."""
    monkeypatch.setenv("MODAL_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MODAL_TOKEN", TOKEN)
    sleeps: list[float] = []
    services.sleep = sleeps.append
    waited = cli("--json", "jobs", "wait", "job-" + "0" * 32, "-o", "x.mp4")
    remote = cli("--json", *IMAGES, "-o", "out", "--remote")
    for result in (waited, remote):
        assert result.exit_code == 3, result.stdout
        error = result.json()["error"]
        assert error["code"] == "MODAL_UNAVAILABLE" and "cannot reach" in error["message"]
    assert len(sleeps) == 4  # two backoffs each: three tries, no more
    assert not Path("x.mp4").exists() and not Path("out").exists()


@pytest.mark.parametrize("bad", ["../blobs/" + "a" * 64, "../../v1/health", "job-1",
                                 "job-" + "0" * 32 + "/../../v1/health", "fc-a%2F..", " "])
def test_jobs_wait_checks_the_id_before_any_request(
        cli: Cli, job_api: JobAPI, bad: str) -> None:
    """Guards: the id went into the URL unescaped — ``../blobs/<sha>`` reached the blob
    route and ``../../v1/health`` ended in ``internal error: KeyError: 'state'``."""
    result = cli("--json", "jobs", "wait", bad, "-o", "x.mp4")
    assert result.exit_code == 2, result.stdout
    error = result.json()["error"]
    assert error["code"] == "NOT_FOUND" and "is not a job id" in error["message"]
    assert job_api.transport.requests == []
    assert not Path("x.mp4").exists()


def test_jobs_wait_fetches_by_id_and_refuses_the_wrong_suffix_first(
        cli: Cli, job_api: JobAPI) -> None:
    """Guards: a render's MP4 was written to ``-o x.json`` without a word. The suffix is
    checked against what the job made before anything is downloaded."""
    video = b"\x00\x00\x00\x18ftypmp42 not really a video"
    job = job_api.runner.finished("render_video", {"video.mp4": video})
    wrong = cli("--json", "jobs", "wait", job, "-o", "x.json")
    assert wrong.exit_code == 2, wrong.stdout
    assert "-o: x.json must end in .mp4 or .m4v" in wrong.json()["error"]["message"]
    assert job_api.transport.count("GET", "/v1/blobs/") == 0
    assert not Path("x.json").exists()
    right = cli("--json", "jobs", "wait", job, "-o", "x.mp4")
    assert right.exit_code == 0, right.stdout
    assert Path("x.mp4").read_bytes() == video
    assert right.json()["outputs"] == [str(Path("x.mp4").absolute())]
    transcript = job_api.runner.finished("transcribe_audio", {"transcript.json": b"{}"})
    assert cli("--json", "jobs", "wait", transcript, "-o", "t.mp4").exit_code == 2
    assert cli("--json", "jobs", "wait", transcript, "-o", "t.json").exit_code == 0
    unknown = cli("--json", "jobs", "wait", "job-" + "f" * 32, "-o", "u.mp4")
    assert unknown.exit_code == 2 and unknown.json()["error"]["code"] == "NOT_FOUND"


def test_jobs_wait_with_backend_local_says_what_is_wrong(
        cli: Cli, job_api: JobAPI) -> None:
    """Guards: it was refused as '--remote with --backend local' though no --remote was
    given."""
    result = cli("--json", "jobs", "wait", "job-" + "0" * 32, "-o", "x.mp4",
                 "--backend", "local")
    assert result.exit_code == 2
    message = result.json()["error"]["message"]
    assert message.startswith("--backend local: jobs run on a remote backend")
    assert "--remote" not in message and job_api.transport.requests == []


# -- a command group without its command ------------------------------------------------


@pytest.mark.parametrize("group", ["config", "jobs", "models"])
def test_a_group_without_its_command_under_json_is_one_document(
        cli: Cli, group: str) -> None:
    """Guards: ``--json config`` and ``--json jobs`` printed the help box on stdout."""
    result = cli("--json", group)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)  # the whole of stdout is one document
    assert doc["error"]["code"] == "INVALID_INPUT"
    assert doc["error"]["message"].startswith(f"canvascast {group}: give a command: ")
    assert "Usage" not in result.stdout
    plain = cli(group)
    assert "Usage: canvascast " + group in plain.stdout and "{" not in plain.stdout


def test_no_command_at_all_under_json_is_one_document(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVASCAST_JSON", "1")
    result = cli()
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["message"].startswith("canvascast: give a")


# -- the state file: locked or unusable -------------------------------------------------


def test_a_locked_state_file_never_fails_a_finished_remote_job(
        cli: Cli, job_api: JobAPI, services: Services) -> None:
    """Guards: another process holding the state file's lock turned a finished remote
    job into exit 1 JOB_FAILED ('database is locked') after the output was written.
    The lock is taken as the result is downloaded; the run ends 0 with a warning."""
    import sqlite3

    from canvascast_cli.dispatch.state import StateDB, default_path

    StateDB()  # created before the run, as any earlier run leaves it
    holder = sqlite3.connect(default_path(), isolation_level=None)

    def lock_on_download(request: httpx.Request) -> None:
        if request.method == "GET" and request.url.path.startswith("/v1/blobs/") \
                and not holder.in_transaction:
            holder.execute("BEGIN EXCLUSIVE")

    # A clock that runs fast: the ledger's deadline passes at its first look, so its
    # wait for the lock (SQLite's own busy wait included) is over without waiting.
    ticks = iter(range(1_800_000_000, 1_900_000_000, 10))
    services.clock = lambda: float(next(ticks))
    job_api.transport.before = lock_on_download
    try:
        result = cli(*IMAGES, "-o", "out", "--remote")
    finally:
        holder.rollback() if holder.in_transaction else None
        holder.close()
    assert result.exit_code == 0, result.stderr
    assert "warning: not recorded in the state file" in result.stderr
    assert "locked" in result.stderr
    assert len(list(Path("out").glob("*.png"))) == 1


def garbage_state() -> Path:
    from canvascast_cli.dispatch.state import default_path

    path = default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(range(256)) * 16)
    return path


def test_an_unusable_state_file_runs_locally_with_a_warning(
        cli: Cli, job_api: JobAPI) -> None:
    """Guards: with the state file unusable (garbage bytes) the default mode exited 1
    instead of warning and running locally; ``--remote`` refuses, naming the file."""
    path = garbage_state()
    result = cli(*IMAGES, "-o", "out")
    assert result.exit_code == 0, result.stderr
    assert f"warning: {path} is not a usable canvascast state database" in result.stderr
    assert "running locally" in result.stderr
    assert len(list(Path("out").glob("*.png"))) == 1
    doc = cli("--json", *IMAGES, "-o", "out2", "--no-cache")
    assert doc.exit_code == 0 and doc.json()["backend"] == "local"
    assert str(path) in doc.json()["fallback"]["reason"]
    strict = cli("--json", *IMAGES, "-o", "out3", "--remote", "--no-cache")
    assert strict.exit_code != 0
    assert str(path) in strict.json()["error"]["message"]
    assert "move it aside" in strict.json()["error"]["message"]
    assert not Path("out3").exists() or not list(Path("out3").glob("*.png"))
    assert job_api.transport.requests == []  # no request was sent in any of them


# -- errors name the user's files -------------------------------------------------------


def test_a_remote_error_names_the_users_file(cli: Cli, job_api: JobAPI,
                                             media: Path) -> None:
    """The worker only knows ``blob:<sha>.jpg``; the user is shown their own path."""
    from tests.helpers import write_timeline

    bad = media / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    timeline = write_timeline(media, {"output": {"width": 320, "height": 180, "fps": 10},
                                      "scenes": [{"image": "broken.jpg", "duration": 1}]})
    result = cli("--json", "render", timeline, "-o", "x.mp4", "--remote")
    assert result.exit_code == 2, result.stdout
    error = result.json()["error"]
    text = json.dumps(error)
    assert str(bad) in text and "blob:" not in text, error
    assert not Path("x.mp4").exists()
