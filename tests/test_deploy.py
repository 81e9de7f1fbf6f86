"""``canvascast deploy``: the plan, the dry run, the token check, an unreachable Modal, the
child's deadline, and a successful deploy through a fake child and a fake fleet — all
offline."""

from __future__ import annotations

import inspect
import io
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli.cli.context import Services
from canvascast_cli.config import function_cost_per_second, load_config
from canvascast_cli.errors import InvalidInput, JobFailed, ModalUnavailable
from canvascast_cli.ops import deploy as ops_deploy
from canvascast_cli.ops.fleet import Autoscaler, Ping, PoolStats
from canvascast_cli.ops.plan import API_SECRET, HF_SECRET, build_plan, image_packages
from tests.helpers import REPO, Cli

MODAL_TOML = REPO / "modal.toml"
TOKEN_ID, TOKEN_SECRET = "ak-test-id-4242", "as-test-secret-4242"
PIN = re.compile(r"^[a-z0-9][a-z0-9-]*==[^\s=]+$")


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE", "MODAL_SERVER_URL",
                 "MODAL_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-such-modal.toml"))


@pytest.fixture
def token(no_token: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("MODAL_TOKEN_SECRET", TOKEN_SECRET)


# ---------------------------------------------------------------------------------------
# The plan


def test_dry_run_plan_is_the_config(cli: Cli, no_token: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVASCAST_FUNCTIONS__RENDER_VIDEO__MIN_CONTAINERS", "1")
    result = cli("--config", MODAL_TOML, "deploy", "--dry-run", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    body = result.json()
    settings = load_config(MODAL_TOML, env={
        "CANVASCAST_FUNCTIONS__RENDER_VIDEO__MIN_CONTAINERS": "1"}).settings
    assert body["dry_run"] is True and body["app_id"] is None
    plan = body["plan"]
    assert body["app"] == plan["app"] == settings.app.name
    assert plan["volume"] == settings.app.volume
    assert set(plan["secrets"]) == {API_SECRET, HF_SECRET}
    rows = {fn["name"]: fn for fn in plan["functions"]}
    assert set(rows) == {"render_video", "transcribe_audio", "generate_images", "api"}
    for name in ("render_video", "transcribe_audio", "generate_images"):
        fn = getattr(settings.functions, name)
        row = rows[name]
        for key in ("gpu", "cpu", "memory", "timeout", "startup_timeout", "retries",
                    "min_containers", "max_containers", "buffer_containers",
                    "scaledown_window"):
            assert row[key] == getattr(fn, key), (name, key)
    assert rows["render_video"]["min_containers"] == 1
    rate = function_cost_per_second(settings, "render_video")
    assert rows["render_video"]["idle_cost_per_hour"] == pytest.approx(rate * 3600, abs=1e-8)
    assert rows["render_video"]["idle_cost_per_day"] == pytest.approx(rate * 86400, abs=1e-8)
    assert rows["transcribe_audio"]["idle_cost_per_hour"] == 0
    assert plan["idle_cost_per_hour"] == pytest.approx(rate * 3600, abs=1e-8)
    assert rows["api"]["secrets"] == [API_SECRET]
    assert (plan["schedule"] is None) == (not settings.warm.windows)
    images = {image["name"]: image for image in plan["images"]}
    assert set(images) == {"render", "whisper", "images", "web"}
    for image in images.values():
        assert image["packages"] and all(PIN.match(p) for p in image["packages"]), image
    assert any(p.startswith("torch==") for p in images["images"]["packages"])
    assert not any(p.startswith("torch==") for p in images["render"]["packages"])


def test_plan_options_are_the_decorators(no_token: None) -> None:
    """The plan is built from the arguments the decorators get: the app module's own."""
    import modal_functions.app as modal_app
    from modal_functions.image_gen import HF_SECRET as image_secret
    from modal_functions.resources import function_options

    settings = modal_app.settings
    plan = build_plan(settings)
    for fn in plan.functions[:3]:
        assert fn.options == function_options(settings, fn.name)  # type: ignore[arg-type]
    assert modal_app.API_SECRET == API_SECRET and image_secret == HF_SECRET


def test_plan_shows_the_reconcilers_schedule() -> None:
    from canvascast_cli.ops.windows import cron_expression

    settings = load_config(MODAL_TOML, env={
        "CANVASCAST_WARM__TIMEZONE": "Europe/Berlin",
        "CANVASCAST_WARM__WINDOWS": '[{function = "render_video", start = "08:30", '
                                    'end = "18:00", min_containers = 1}]'}).settings
    plan = build_plan(settings, images={"render": ["x==1"]})
    assert plan.schedule is not None
    assert plan.schedule.cron == cron_expression(settings) and plan.schedule.cron
    assert plan.schedule.timezone == "Europe/Berlin"
    assert "render_video" in plan.schedule.windows[0]
    assert plan.images[0].packages == ["x==1"]
    # The reconciler is a function of the deploy too, with the options app.py gives it.
    from modal_functions.resources import RECONCILER_OPTIONS

    (reconciler,) = [f for f in plan.functions if f.name == "reconcile_warm_pools"]
    assert reconciler.options == RECONCILER_OPTIONS and reconciler.secrets == []
    # Every day 08:30-18:00, one render container: 9.5 h x 7 days, idle.
    rate = 4.0 * 0.0000131 + 8192 / 1024 * 0.00000222
    assert plan.schedule.usd_per_week == pytest.approx(9.5 * 3600 * 7 * rate)
    assert plan.schedule.usd_per_30_days == pytest.approx(9.5 * 3600 * 30 * rate)
    without = build_plan(load_config(MODAL_TOML, env={}).settings)
    assert "reconcile_warm_pools" not in [f.name for f in without.functions]


def test_image_packages_are_the_locks() -> None:
    from modal_functions.images import LOCK_FILE, Lock

    lock = Lock.read(LOCK_FILE)
    packages = image_packages()
    for pins in packages.values():
        for pin in pins:
            name, version = pin.split("==")
            assert lock.versions[name] == version


def test_dry_run_text_shows_the_plan(cli: Cli, no_token: None) -> None:
    result = cli("--config", MODAL_TOML, "deploy", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "render_video" in result.stdout and "canvascast-api" in result.stdout
    assert "pinned packages" in result.stdout and "Idle cost" in result.stdout
    assert "nothing was deployed" in result.stderr


def test_dry_run_with_an_invalid_config_is_exit_2(cli: Cli, no_token: None,
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "modal.toml"
    bad.write_text("[functions.render_video]\ntimeout = 5\n")
    result = cli("--config", bad, "deploy", "--dry-run", "--json")
    assert result.exit_code == 2
    error = result.json()["error"]
    assert error["code"] == "CONFIG_INVALID"
    assert "functions.render_video.timeout" in json.dumps(error)


def test_dry_run_import_failure_is_exit_2_with_the_last_line() -> None:
    with pytest.raises(InvalidInput, match=r"ModuleNotFoundError.*no_such_module_xyz"):
        ops_deploy.check_import(dict(os.environ), module="no_such_module_xyz")


# ---------------------------------------------------------------------------------------
# No token, no Modal


def test_no_token_is_exit_2_at_once(cli: Cli, no_token: None) -> None:
    began = time.monotonic()
    result = cli("--config", MODAL_TOML, "deploy", "--json")
    assert time.monotonic() - began < 5
    assert result.exit_code == 2
    error = result.json()["error"]
    assert "MODAL_TOKEN_ID" in error["message"] and "MODAL_TOKEN_SECRET" in error["message"]
    text = cli("--config", MODAL_TOML, "deploy")
    assert text.exit_code == 2 and "MODAL_TOKEN_ID" in text.stderr and not text.stdout


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("where", ["black_hole", "closed"])
def test_unreachable_modal_is_exit_3_within_seconds(
        cli: Cli, token: None, monkeypatch: pytest.MonkeyPatch, where: str,
        request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("black_hole") if where == "black_hole" else closed_port()
    monkeypatch.setenv("MODAL_SERVER_URL", url)
    began = time.monotonic()
    result = cli("--config", MODAL_TOML, "deploy", "--json")
    took = time.monotonic() - began
    assert result.exit_code == 3, result.stdout + result.stderr
    assert took < 30, f"an unreachable Modal took {took:.1f} s"
    assert result.json()["error"]["code"] == "MODAL_UNAVAILABLE"
    for secret in (TOKEN_ID, TOKEN_SECRET):
        assert secret not in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------
# The child and its deadline


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


SLEEPER = """
import subprocess, sys, time
from pathlib import Path
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
Path(sys.argv[1]).write_text(str(grandchild.pid))
print("building images...", flush=True)
time.sleep(120)
"""


def test_the_child_is_killed_with_its_group_at_the_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    began = time.monotonic()
    with pytest.raises(ModalUnavailable, match=r"did not finish within 1 s") as caught:
        ops_deploy.run_child([sys.executable, "-c", SLEEPER, str(pid_file)],
                             environ=dict(os.environ), deadline=1.0,
                             result=tmp_path / "result.json", echo=io.StringIO())
    assert time.monotonic() - began < 20
    assert caught.value.exit_code == 3
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild), "the child's own child outlived the deadline"


def test_deploy_deadline_message_names_modal_app_list(tmp_path: Path) -> None:
    fake = tmp_path / "slow.py"
    fake.write_text("import time; time.sleep(60)\n")
    with pytest.raises(ModalUnavailable, match="modal app list"):
        ops_deploy.deploy_in_child(environ=dict(os.environ), environment=None, tag="",
                                   timeout=1, child=[sys.executable, str(fake)],
                                   echo=io.StringIO())


def test_an_interrupt_kills_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            ops_deploy.run_child([sys.executable, "-c", SLEEPER, str(pid_file)],
                                 environ=dict(os.environ), deadline=60,
                                 result=tmp_path / "r.json", echo=io.StringIO())
    finally:
        timer.cancel()
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_the_childs_error_comes_back_as_its_class_with_secrets_masked(
        tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text(
        "import json, sys\n"
        "print('token is " + TOKEN_SECRET + "', flush=True)\n"
        "path = sys.argv[1]\n"
        "open(path, 'w').write(json.dumps({'error': {'code': 'CONFIG_INVALID', "
        "'message': 'bad " + TOKEN_SECRET + "', 'retryable': False}}))\n"
        "sys.exit(2)\n")
    echo = tmp_path / "echo.txt"
    with open(echo, "w") as stream, pytest.raises(InvalidInput) as caught:
        ops_deploy.deploy_in_child(
            environ={**os.environ, "MODAL_TOKEN_SECRET": TOKEN_SECRET}, environment="dev",
            tag="abc", timeout=30, child=[sys.executable, str(script)], echo=stream)
    assert caught.value.code == "CONFIG_INVALID" and caught.value.exit_code == 2
    assert TOKEN_SECRET not in caught.value.message
    assert TOKEN_SECRET not in echo.read_text() and "token is ***" in echo.read_text()


def test_a_child_that_dies_without_a_result_is_exit_1(tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match="without a result: boom"):
        ops_deploy.run_child([sys.executable, "-c", "print('boom'); raise SystemExit(9)"],
                             environ=dict(os.environ), deadline=30,
                             result=tmp_path / "none.json", echo=io.StringIO())


# ---------------------------------------------------------------------------------------
# The deploy step and the probe, with fakes


class FakeApp:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.app_id: str | None = None

    def deploy(self, **kwargs: Any) -> FakeApp:
        self.calls.append(kwargs)
        self.app_id = "ap-123"
        return self


class FakeSdk:
    def __init__(self, hello: Any = None) -> None:
        self.outputs = 0
        self._hello = hello
        sdk = self

        class Client:
            @staticmethod
            def from_env() -> Any:
                return Client()

            def hello(self) -> None:
                if sdk._hello is not None:
                    sdk._hello()

        self.Client = Client

    def enable_output(self) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def shown() -> Iterator[None]:
            self.outputs += 1
            yield

        return shown()


def test_run_deploy_passes_name_environment_tag() -> None:
    app, sdk = FakeApp(), FakeSdk()
    deployed = ops_deploy.run_deploy(app, name="canvascast", environment="staging",
                                     tag="abc123", functions=["render_video", "api"],
                                     progress=True, sdk=sdk,
                                     web_url=lambda: "https://x--api.modal.run")
    assert app.calls == [{"name": "canvascast", "environment_name": "staging",
                          "tag": "abc123"}]
    assert sdk.outputs == 1
    assert deployed.app_id == "ap-123" and deployed.web_url == "https://x--api.modal.run"
    quiet = ops_deploy.run_deploy(FakeApp(), name="c", environment=None, tag="",
                                  functions=[], progress=False, sdk=sdk)
    assert sdk.outputs == 1 and quiet.web_url is None


def test_probe_bounds_a_silent_modal_and_names_a_refused_token() -> None:
    gate = threading.Event()
    began = time.monotonic()
    with pytest.raises(ModalUnavailable, match=r"did not answer within 0\.5 s"):
        ops_deploy.probe(FakeSdk(hello=lambda: gate.wait(30)), 0.5)
    assert time.monotonic() - began < 10
    gate.set()

    class AuthError(Exception):
        pass

    def refuse() -> None:
        raise AuthError("Token ID is malformed")

    with pytest.raises(InvalidInput, match="MODAL_TOKEN_ID"):
        ops_deploy.probe(FakeSdk(hello=refuse), 5)
    ops_deploy.probe(FakeSdk(), 5)  # answers: no error


# ---------------------------------------------------------------------------------------
# A successful deploy end to end (fake child, fake fleet)


FAKE_CHILD = """
import json, sys
result = sys.argv[1]
options = json.loads(sys.argv[2])
seen = {"tag": options["tag"], "env": options["environment"],
        "progress": options["progress"]}
print("fake modal: deploying", flush=True)
open(result, "w").write(json.dumps({"result": {
    "app": "canvascast", "app_id": "ap-fake", "environment": seen["env"],
    "tag": seen["tag"], "functions": ["render_video", "api"],
    "web_url": "https://fake--api.modal.run", "seen": seen}}))
"""


class FakeFleet:
    def __init__(self, fail: set[str] = frozenset(),  # type: ignore[assignment]
                 published: dict[str, Autoscaler] | None = None) -> None:
        self.updates: list[tuple[str, Autoscaler]] = []
        self.fail = fail
        self.published = dict(published or {})
        self.closed = False

    def settings(self, function: str) -> Autoscaler:
        return Autoscaler()

    def stats(self, function: str) -> PoolStats:
        return PoolStats(runners=0, backlog=0)

    def update(self, function: str, settings: Autoscaler) -> Autoscaler:
        if function in self.fail:
            raise ModalUnavailable("update: Modal did not answer within 5 s")
        self.updates.append((function, settings))
        return settings

    def ping(self, function: str, timeout: float) -> Ping:
        raise NotImplementedError

    def web_url(self, function: str) -> str | None:
        return None

    def published_overrides(self) -> dict[str, Autoscaler]:
        return dict(self.published)

    def publish_override(self, function: str, settings: Autoscaler | None) -> None:
        raise AssertionError("a deploy publishes nothing")

    def close(self) -> None:
        self.closed = True


def test_a_deploy_reapplies_overrides_and_records_the_event(
        cli: Cli, token: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from canvascast_cli.cli.ops_common import state_db
    from canvascast_cli.ops.overrides import Events, Overrides

    child = tmp_path / "child.py"
    child.write_text(FAKE_CHILD)
    monkeypatch.setattr(ops_deploy, "CHILD", (sys.executable, str(child)))
    overrides = Overrides(state_db(), "canvascast")
    overrides.set("render_video", Autoscaler(min_containers=2), by="ops@test")
    overrides.set("transcribe_audio", Autoscaler(max_containers=3), by="ops@test")
    fleet = FakeFleet(fail={"transcribe_audio"})
    services = Services(fleet=lambda settings: fleet)

    result = cli("--config", MODAL_TOML, "deploy", "--env", "staging", "--tag", "abc123",
                 "--json", services=services)
    assert result.exit_code == 0, result.stdout + result.stderr
    body = result.json()
    assert body["app_id"] == "ap-fake" and body["dry_run"] is False
    assert body["environment"] == "staging" and body["tag"] == "abc123"
    assert body["web_url"] == "https://fake--api.modal.run"
    assert body["plan"]["environment"] == "staging"
    assert fleet.updates == [("render_video", Autoscaler(min_containers=2))] and fleet.closed
    reapplied = {r["function"]: r for r in body["overrides_reapplied"]}
    assert reapplied["render_video"] == {"function": "render_video",
                                         "settings": {"min_containers": 2}, "ok": True,
                                         "error": None}
    assert reapplied["transcribe_audio"]["ok"] is False
    assert "did not answer" in reapplied["transcribe_audio"]["error"]
    events = Events(state_db()).since()
    assert [(e.kind, e.subject) for e in events] == [("deploy", "canvascast")]
    assert "ap-fake" in (events[0].detail or "") and "abc123" in (events[0].detail or "")

    text = cli("--config", MODAL_TOML, "deploy", services=Services(fleet=lambda s: FakeFleet()))
    assert text.exit_code == 0, text.stderr
    assert text.stdout.strip() == "https://fake--api.modal.run"
    assert "re-applied warm override for render_video: min_containers=2" in text.stderr
    assert "fake modal: deploying" in text.stderr
    assert TOKEN_SECRET not in text.stdout + text.stderr


def test_a_deploy_from_ci_applies_the_published_overrides(
        cli: Cli, token: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CI has no state file of its own: the overrides operators published (warm set on
    their machines) are applied again, over this machine's for the same function."""
    from canvascast_cli.cli.ops_common import state_db
    from canvascast_cli.ops.overrides import Overrides

    child = tmp_path / "child.py"
    child.write_text(FAKE_CHILD)
    monkeypatch.setattr(ops_deploy, "CHILD", (sys.executable, str(child)))
    Overrides(state_db(), "canvascast").set("render_video", Autoscaler(min_containers=9))
    fleet = FakeFleet(published={"render_video": Autoscaler(min_containers=1),
                                 "generate_images": Autoscaler(scaledown_window=300)})
    result = cli("--config", MODAL_TOML, "deploy", "--json",
                 services=Services(fleet=lambda settings: fleet))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert sorted(fleet.updates) == [
        ("generate_images", Autoscaler(scaledown_window=300)),
        ("render_video", Autoscaler(min_containers=1))]


# ---------------------------------------------------------------------------------------
# Modal's SDK and the CI workflow


def test_the_sdk_names_used_exist_in_the_installed_modal() -> None:
    import modal
    import modal.exception

    params = inspect.signature(modal.App.deploy).parameters
    assert {"name", "environment_name", "tag"} <= set(params)
    assert callable(modal.enable_output)
    assert callable(modal.Client.from_env) and callable(modal.Client.hello)
    assert callable(modal.Function.get_web_url)
    assert hasattr(modal.App, "app_id")
    assert issubclass(modal.exception.AuthError, Exception)
    assert issubclass(modal.exception.ConnectionError, Exception)
    assert modal.exception.AuthError.__name__ == "AuthError"  # probe matches by name


def test_the_ci_workflow_runs_commands_that_exist() -> None:
    from tests.test_messages import check

    text = (REPO / "docs" / "ci" / "github-actions.yml").read_text(encoding="utf-8")
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(text)
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    runs = [step["run"] for job in workflow["jobs"].values() for step in job["steps"]
            if "run" in step]
    commands = [part.split(">")[0].strip() for run in runs for part in run.split("&&")
                if part.strip().startswith("canvascast ")]
    assert "canvascast deploy --dry-run --json" in commands
    assert "canvascast config validate" in commands
    assert any(c.startswith("canvascast deploy --tag ${{ github.sha }}") for c in commands)
    for command in commands:
        assert check(command.replace("${{ github.sha }}", "SHA")) is None, command
    deploy = workflow["jobs"]["deploy"]
    step_env = [step.get("env", {}) for step in deploy["steps"]]
    assert {"MODAL_TOKEN_ID": "${{ secrets.MODAL_TOKEN_ID }}",
            "MODAL_TOKEN_SECRET": "${{ secrets.MODAL_TOKEN_SECRET }}"} in step_env
    assert "secrets." not in json.dumps(workflow["jobs"]["plan"])
    assert any("pip install -c requirements.lock" in run for run in runs)


def test_a_bad_environment_name_is_exit_2(cli: Cli, no_token: None) -> None:
    result = cli("--json", "deploy", "--dry-run", "--env", "bad env!")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["message"].startswith("--env: 'bad env!'")


def test_supabase_storage_adds_its_secret_to_the_job_functions() -> None:
    from modal_functions import app as modal_app

    settings = load_config(MODAL_TOML, env={"CANVASCAST_STORAGE__PROVIDER": "supabase"}
                           ).settings
    plan = build_plan(settings)
    assert modal_app.STORAGE_SECRET in plan.secrets
    jobs = [f for f in plan.functions if f.name in ("render_video", "transcribe_audio",
                                                    "generate_images")]
    assert all(f.secrets == [modal_app.STORAGE_SECRET] for f in jobs)
    assert modal_app.STORAGE_SECRET not in build_plan(load_config(MODAL_TOML, env={})
                                                      .settings).secrets
