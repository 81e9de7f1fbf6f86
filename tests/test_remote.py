"""The remote path end to end: the job API on loopback, the HTTP backend, retries, the
breaker, fallback, the ledger — against real servers, with faults injected between client
and server, and no sleeping (the backoff's sleeps are recorded, not slept).

Two servers: ``served`` is the real `canvascast serve` command in a child process (the
e2e tests); ``faulty`` is the same app in a thread behind an ASGI middleware that plays
scripted faults (429 with Retry-After, 500, 503, a slow answer, a reset mid-body,
malformed JSON, a wrong blob, 401, 413).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canvascast_cli.cli.context import Services
from tests.helpers import (
    REPO,
    Result,
    decode_frames,
    run_subprocess,
    small_output,
    write_timeline,
)

Cli = Callable[..., Result]  # the ``cli`` fixture: canvascast's arguments -> Result
TOKEN = "tok-" + "5ec2e7" * 6
DEMO = REPO / "examples" / "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited: {said}")
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the job API never became healthy")


@contextmanager
def running_serve(root: Path, *, workers: int = 2) -> Iterator[str]:
    """`canvascast serve` on loopback, as a user runs it (state and store under
    ``root``, this process's environment otherwise); its URL."""
    port = free_port()
    env = {**os.environ, "MODAL_TOKEN": TOKEN, "CANVASCAST_HOME": str(root / "home"),
           "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "canvascast_cli", "serve", "--port",
                             str(port), "--workers", str(workers), "--store",
                             str(root / "store")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_serve(tmp_path_factory.mktemp("served")) as url:
        yield url


@pytest.fixture
def remote_env(monkeypatch: pytest.MonkeyPatch, served: str) -> str:
    monkeypatch.setenv("MODAL_ENDPOINT", served)
    monkeypatch.setenv("MODAL_TOKEN", TOKEN)
    return served


# ---------------------------------------------------------------------------------------
# End to end through `canvascast serve`


def test_render_via_http_equals_local(cli: Cli, remote_env: str, isolated_env: Path) -> None:
    timeline = DEMO / "timeline.json"
    remote = cli("--json", "render", timeline, "-o", "remote.mp4", "--frames", "0:45",
                 "--remote")
    assert remote.exit_code == 0, remote.stdout + remote.stderr
    doc = remote.json()
    assert doc["backend"] == "http" and doc["fallback"] is None and doc["attempts"] == 1
    assert doc["bytes_up"] > 0 and doc["bytes_down"] == doc["size_bytes"]
    assert doc["cost"]["usd"] > 0 and doc["cost"]["estimate_usd"] > 0
    local = cli("--json", "render", timeline, "-o", "local.mp4", "--frames", "0:45", "--local",
                "--no-cache")  # really rendered here, not the remote result kept
    assert local.exit_code == 0 and local.json()["backend"] == "local"
    a, b = decode_frames(Path("remote.mp4")), decode_frames(Path("local.mp4"))
    assert len(a) == len(b) == 45
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # Inputs are uploaded once: the same timeline again (a new output) sends nothing.
    again = cli("--json", "render", timeline, "-o", "again.mp4", "--frames", "45:60",
                "--remote")
    assert again.exit_code == 0 and again.json()["bytes_up"] == 0
    assert TOKEN not in remote.stdout + remote.stderr + again.stdout + again.stderr


def test_status_counts_the_job_api_like_production(cli: Cli, remote_env: str,
                                                   media: Path) -> None:
    """A dev loop through `canvascast serve` shows up in `status` (and its Prometheus
    metrics) as backend http, beside a local run the same function fell back to."""
    from prometheus_client.parser import text_string_to_metric_families

    path = tiny_timeline(media)
    assert cli("--json", "render", path, "-o", "a.mp4", "--remote").exit_code == 0
    assert cli("--json", "render", path, "-o", "b.mp4", "--remote",
               "--no-cache").exit_code == 0
    status = cli("status", "--json")
    assert status.exit_code == 0, status.stdout
    doc = status.json()
    (row,) = [m for m in doc["metrics"] if m["backend"] == "http"]
    assert (row["function"], row["invocations"], row["successes"]) == ("render_video", 2, 2)
    assert row["p50_duration"] > 0 and row["total_cost"] > 0
    assert doc["health"] == "ok"
    metrics = cli("status", "--prometheus")
    assert metrics.exit_code == 0
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.stdout)
               for s in family.samples}
    key = ("modal_invocations_total", (("backend", "http"), ("function", "render_video"),
                                       ("status", "ok")))
    assert samples[key] == 2


def test_transcribe_via_http_equals_local(cli: Cli, remote_env: str) -> None:
    narration = DEMO / "narration.flac"
    remote = cli("--json", "transcribe", narration, "--beam-size", "1", "--remote",
                 "-o", "remote.json")
    assert remote.exit_code == 0, remote.stdout
    assert remote.json()["backend"] == "http"
    local = cli("--json", "transcribe", narration, "--beam-size", "1", "--local",
                "-o", "local.json")
    assert local.exit_code == 0
    a = json.loads(Path("remote.json").read_text())
    b = json.loads(Path("local.json").read_text())
    assert a["words"] == b["words"] and len(a["words"]) > 50
    srt = cli("transcribe", narration, "--beam-size", "1", "--remote", "-o", "remote.srt")
    assert srt.exit_code == 0 and Path("remote.srt").read_text().startswith("1\n00:00:")


def test_images_via_http_equal_local(cli: Cli, remote_env: str) -> None:
    args = ["images", "a red kite", "a quiet harbour", "a map", "--provider", "placeholder",
            "--seed", "7", "--batch-size", "2", "--size", "320x180"]
    remote = cli("--json", *args, "-o", "remote", "--remote")
    assert remote.exit_code == 0, remote.stdout
    doc = remote.json()
    assert doc["backend"] == "http" and len(doc["job_ids"]) == 2  # one job per batch
    local = cli("--json", *args, "-o", "local", "--local")
    assert [i["sha256"] for i in doc["images"]] == [i["sha256"] for i in local.json()["images"]]
    assert sorted(p.name for p in Path("remote").iterdir()) == sorted(
        p.name for p in Path("local").iterdir())


def test_jobs_wait_fetches_a_job_by_id(cli: Cli, remote_env: str, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 2}]})
    first = cli("--json", "render", path, "-o", "first.mp4", "--remote")
    assert first.exit_code == 0
    job_id = first.json()["job_id"]
    waited = cli("--json", "jobs", "wait", job_id, "-o", "again.mp4")
    assert waited.exit_code == 0, waited.stdout
    assert Path("again.mp4").read_bytes() == Path("first.mp4").read_bytes()
    unknown = cli("--json", "jobs", "wait", "job-nope", "-o", "x.mp4")
    assert unknown.exit_code == 2 and unknown.json()["error"]["code"] == "NOT_FOUND"


def test_serve_refuses_without_a_token_and_beyond_loopback() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MODAL_TOKEN"}
    no_token = run_subprocess("--json", "serve", "--port", "1", env=env)
    assert no_token.exit_code == 2 and "MODAL_TOKEN" in no_token.json()["error"]["message"]
    public = run_subprocess("--json", "serve", "--host", "0.0.0.0", "--port", "1",
                            env={**os.environ, "MODAL_TOKEN": TOKEN})
    assert public.exit_code == 2 and "--public" in public.json()["error"]["message"]


def test_bad_requests_are_400_never_500(served: str) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    bad_timeline = httpx.post(f"{served}/v1/jobs/render_video", headers=headers,
                              json={"timeline": {"scenes": []}})
    assert bad_timeline.status_code == 400
    body = bad_timeline.json()
    assert body["success"] is False and body["error"]["code"] == "INVALID_INPUT"
    assert body["error"]["details"] == [
        "timeline.scenes: the scene list is empty: give at least one scene"]
    server_path = httpx.post(f"{served}/v1/jobs/render_video", headers=headers,
                             json={"timeline": {"scenes": [{"image": "/etc/passwd",
                                                            "duration": 1}]}})
    assert server_path.status_code == 400 and "not a blob reference" in server_path.text
    deep = httpx.post(f"{served}/v1/jobs/render_video", headers=headers,
                      content=b"[" * 50_000 + b"]" * 50_000)
    assert deep.status_code == 400
    unknown = httpx.post(f"{served}/v1/jobs/launch_rockets", headers=headers, json={})
    assert unknown.status_code == 400
    no_auth = httpx.get(f"{served}/v1/jobs/x")
    assert no_auth.status_code == 401 and no_auth.json()["error"]["code"] == "AUTH"
    wrong = httpx.get(f"{served}/v1/jobs/x", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    bad_hash = httpx.put(f"{served}/v1/blobs/{'0' * 64}", headers=headers, content=b"abc")
    assert bad_hash.status_code == 422 and bad_hash.json()["error"]["code"] == "INTEGRITY"
    too_big = httpx.post(f"{served}/v1/blobs/missing", headers=headers,
                         content=b" " * (17 * 1024 * 1024))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


# ---------------------------------------------------------------------------------------
# Faults between client and server


@dataclass
class Fault:
    method: str
    path: str  # a prefix of the request path
    action: str  # status | bare | notenvelope | slow | reset | garbage | corrupt
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1  # how many matching requests it hits (-1: all)


class FaultyApp:
    """ASGI middleware: plays the scripted faults, then lets requests through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.faults: list[Fault] = []
        self.hits: list[tuple[str, str]] = []
        self.slow_event = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        self.hits.append((method, path))
        fault = next((f for f in self.faults if f.method == method
                      and path.startswith(f.path) and f.times != 0), None)
        if fault is None:
            return await self.app(scope, receive, send)
        fault.times -= 1
        if fault.action == "status":
            body = json.dumps({"success": False, "data": None, "error": {
                "code": "X", "message": f"injected {fault.status}"}}).encode()
            await send({"type": "http.response.start", "status": fault.status,
                        "headers": [(b"content-type", b"application/json"),
                                    *[(k.encode(), v.encode()) for k, v in
                                      fault.headers.items()]]})
            await send({"type": "http.response.body", "body": body})
        elif fault.action == "bare":  # a status from something that is not the job API
            await send({"type": "http.response.start", "status": fault.status,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"Not Found"})
        elif fault.action == "notenvelope":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"id": "x"}'})
        elif fault.action == "garbage":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html")]})
            await send({"type": "http.response.body", "body": b"<html>proxy error</html>"})
        elif fault.action == "slow":  # longer than the client's timeout
            await asyncio.get_running_loop().run_in_executor(None, self.slow_event.wait, 5)
            await self.app(scope, receive, send)
        elif fault.action in ("reset", "corrupt"):
            parts: list[dict[str, Any]] = []

            async def capture(message: dict[str, Any]) -> None:
                parts.append(message)

            await self.app(scope, receive, capture)
            start = parts[0]
            body = b"".join(m.get("body", b"") for m in parts[1:])
            if fault.action == "corrupt":
                body = bytes([body[0] ^ 0xFF]) + body[1:]
                await send(start)
                await send({"type": "http.response.body", "body": body})
            else:  # half the body, then the connection drops
                await send(start)
                await send({"type": "http.response.body", "body": body[: len(body) // 2],
                            "more_body": True})
                raise ConnectionResetError("injected reset mid-body")
        return None


@dataclass
class Faulty:
    url: str
    app: FaultyApp
    sleeps: list[float] = field(default_factory=list)

    def plan(self, *faults: Fault) -> None:
        self.app.faults = list(faults)
        self.app.hits.clear()

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.app.hits if m == method and p.startswith(prefix))


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    import uvicorn

    from canvascast_cli.server.app import create_app
    from canvascast_cli.server.blobs import BlobStore
    from canvascast_cli.server.runner import LocalRunner

    root = tmp_path_factory.mktemp("faulty")
    runner = LocalRunner(root, workers=1)
    app = FaultyApp(create_app(BlobStore(root), runner, TOKEN))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    try:
        yield Faulty(url, app)
    finally:
        app.slow_event.set()
        server.should_exit = True
        thread.join(10)
        runner.close()


@pytest.fixture
def faulty(faulty_server: Faulty, monkeypatch: pytest.MonkeyPatch, services: Services
           ) -> Faulty:
    monkeypatch.setenv("MODAL_ENDPOINT", faulty_server.url)
    monkeypatch.setenv("MODAL_TOKEN", TOKEN)
    faulty_server.plan()
    faulty_server.app.slow_event.clear()
    faulty_server.sleeps = []  # this test's: the backoff's waits, recorded
    services.sleep = faulty_server.sleeps.append
    return faulty_server


def tiny_timeline(media: Path) -> Path:
    return write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 1}]})


def ledger_rows(function: str = "render_video") -> list[Any]:
    from canvascast_cli.dispatch.ledger import Ledger
    from canvascast_cli.dispatch.state import StateDB

    return list(reversed(Ledger(StateDB()).history(function)))


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".part" in p.name]


def test_429_with_retry_after_is_honoured(cli: Cli, faulty: Faulty, media: Path) -> None:
    faulty.plan(Fault("POST", "/v1/jobs/", "status", 429, {"Retry-After": "7"}, times=2))
    result = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--remote")
    assert result.exit_code == 0, result.stdout
    assert faulty.count("POST", "/v1/jobs/") == 3
    assert len(faulty.sleeps) == 2 and all(7 <= d <= 8 for d in faulty.sleeps)
    assert result.json()["attempts"] == 1  # request retries, one job


def test_500_and_503_are_retried_with_backoff(cli: Cli, faulty: Faulty, media: Path) -> None:
    faulty.plan(Fault("GET", "/v1/jobs/", "status", 500),
                Fault("POST", "/v1/blobs/missing", "status", 503))
    result = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--remote")
    assert result.exit_code == 0, result.stdout
    assert [round(d) for d in faulty.sleeps] == [1, 1]  # 1 s (+ <=10% jitter) each
    assert all(1 <= d <= 1.1 for d in faulty.sleeps)


def test_unavailable_falls_back_with_a_notice_or_exits_3(cli: Cli, faulty: Faulty,
                                                         media: Path) -> None:
    faulty.plan(Fault("POST", "/v1/blobs/missing", "status", 503, times=-1))
    fell = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4")
    assert fell.exit_code == 0, fell.stdout
    doc = fell.json()
    assert doc["backend"] == "local"
    assert doc["fallback"]["from"] == "http"
    assert doc["fallback"]["reason"].startswith("MODAL_UNAVAILABLE")
    assert faulty.count("POST", "/v1/blobs/missing") == 3  # attempts from modal.toml
    assert [round(d) for d in faulty.sleeps] == [1, 2]
    plain = cli("render", tiny_timeline(media), "-o", "plain.mp4", "--no-cache")
    assert plain.exit_code == 0 and "falling back to local" in plain.stderr
    strict = cli("--json", "render", tiny_timeline(media), "-o", "strict.mp4", "--remote",
                 "--no-cache")
    assert strict.exit_code == 3
    assert strict.json()["error"]["code"] == "MODAL_UNAVAILABLE"
    assert not Path("strict.mp4").exists() and no_partials(Path.cwd())
    rows = ledger_rows()
    assert [r.backend for r in rows][-1] == "http"
    assert any(r.fallback_from == "http" for r in rows)
    assert all(TOKEN not in (r.fallback_reason or "") for r in rows)


def test_a_slow_answer_times_out_and_is_retried(cli: Cli, faulty: Faulty, services: Services,
                                                media: Path) -> None:
    services.http_timeout = 0.5
    faulty.plan(Fault("POST", "/v1/blobs/missing", "slow"))
    result = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--remote")
    faulty.app.slow_event.set()
    assert result.exit_code == 0, result.stdout
    assert len(faulty.sleeps) == 1 and faulty.count("POST", "/v1/blobs/missing") == 2


def test_connection_refused(cli: Cli, services: Services, media: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MODAL_TOKEN", TOKEN)
    sleeps: list[float] = []
    services.sleep = sleeps.append
    strict = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--remote")
    assert strict.exit_code == 3
    error = strict.json()["error"]
    assert error["code"] == "MODAL_UNAVAILABLE" and "CONNECTION_FAILED" not in error["code"]
    assert "cannot reach http://127.0.0.1" in error["message"]
    assert len(sleeps) == 2
    fell = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4")
    assert fell.exit_code == 0
    assert fell.json()["fallback"]["reason"].startswith("CONNECTION_FAILED")


def test_reset_mid_body_is_retried(cli: Cli, faulty: Faulty, media: Path) -> None:
    faulty.plan(Fault("GET", "/v1/blobs/", "reset"))
    result = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--remote")
    assert result.exit_code == 0, result.stdout
    assert faulty.count("GET", "/v1/blobs/") == 2 and len(faulty.sleeps) == 1
    assert result.json()["sha256"] == __import__("hashlib").sha256(
        Path("out.mp4").read_bytes()).hexdigest()


@pytest.mark.parametrize("fault", [Fault("POST", "/v1/jobs/", "garbage"),
                                   Fault("POST", "/v1/jobs/", "notenvelope"),
                                   Fault("POST", "/v1/jobs/", "bare", 404),
                                   Fault("POST", "/v1/jobs/", "bare", 400),
                                   Fault("POST", "/v1/jobs/", "bare", 405)],
                         ids=["html-200", "json-200", "404", "400", "405"])
def test_an_answer_that_is_not_the_job_api_is_one_request_and_exit_2(
        cli: Cli, faulty: Faulty, media: Path, fault: Fault) -> None:
    """A proxy's page, a wrong URL, a plain 4xx: the caller's to fix. Never retried, never
    counted against the breaker, no fallback that would hide it; the status and the
    endpoint are named."""
    faulty.plan(fault)
    result = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4")
    assert result.exit_code == 2, result.stdout
    error = result.json()["error"]
    assert error["code"] == "UNEXPECTED_RESPONSE" and error["retryable"] is False
    assert faulty.url in error["message"] and "/v1/jobs/render_video" in error["message"]
    if fault.action == "bare":
        assert f"HTTP {fault.status}" in error["message"]
    assert faulty.count("POST", "/v1/jobs/") == 1
    assert faulty.sleeps == []  # no backoff at all
    assert not Path("out.mp4").exists()
    from canvascast_cli.dispatch.breaker import SQLiteStorage
    from canvascast_cli.dispatch.state import StateDB

    assert SQLiteStorage(StateDB()).get("http:render_video").failures == 0


def test_wrong_sha256_is_fetched_again_then_fails_with_nothing_written(
        cli: Cli, faulty: Faulty, media: Path) -> None:
    faulty.plan(Fault("GET", "/v1/blobs/", "corrupt"))
    once = cli("--json", "render", tiny_timeline(media), "-o", "once.mp4", "--remote")
    assert once.exit_code == 0, once.stdout
    assert "fetching again" not in once.stdout  # notes go to stderr, never into the JSON
    faulty.plan(Fault("GET", "/v1/blobs/", "corrupt", times=-1))
    always = cli("--json", "render", tiny_timeline(media), "-o", "always.mp4", "--remote",
                 "--no-cache")
    assert always.exit_code == 1
    assert always.json()["error"]["code"] == "INTEGRITY"
    assert faulty.count("GET", "/v1/blobs/") == 2
    assert not Path("always.mp4").exists() and no_partials(Path.cwd())


def test_401_is_auth_exit_3_or_fallback(cli: Cli, faulty: Faulty, media: Path) -> None:
    faulty.plan(Fault("POST", "/v1/blobs/missing", "status", 401, times=-1))
    strict = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--remote")
    assert strict.exit_code == 3 and strict.json()["error"]["code"] == "AUTH"
    assert faulty.count("POST", "/v1/blobs/missing") == 1  # never retried
    fell = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4")
    assert fell.exit_code == 0 and fell.json()["fallback"]["reason"].startswith("AUTH")
    assert TOKEN not in strict.stdout + strict.stderr + fell.stdout + fell.stderr


def test_413_is_bad_input_exit_2_never_fallback(cli: Cli, faulty: Faulty, media: Path) -> None:
    from tests.helpers import textured_image

    textured_image(media / "fresh.jpg", seed=413)  # bytes the server has never seen
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "fresh.jpg", "duration": 1}]})
    faulty.plan(Fault("PUT", "/v1/blobs/", "status", 413, times=-1))
    result = cli("--json", "render", path, "-o", "out.mp4")
    assert result.exit_code == 2, result.stdout
    assert result.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert not Path("out.mp4").exists()


def test_a_job_that_crashes_is_resubmitted(cli: Cli, faulty: Faulty, media: Path) -> None:
    """A container crash fails the job (not a request): the whole job is submitted again,
    each attempt a ledger row."""
    crashing = {"done": False}
    original = faulty.app.app

    async def crash_first_status(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET"
                and scope["path"].startswith("/v1/jobs/") and not crashing["done"]):
            crashing["done"] = True
            body = json.dumps({"success": True, "error": None, "data": {
                "id": scope["path"].rsplit("/", 1)[1], "function": "render_video",
                "state": "failed", "progress": None, "error": {
                    "code": "CONTAINER_CRASH", "message": "worker died",
                    "retryable": True}}}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await original(scope, receive, send)

    faulty.app.app = crash_first_status
    try:
        result = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--remote")
    finally:
        faulty.app.app = original
    assert result.exit_code == 0, result.stdout
    assert result.json()["attempts"] == 2
    rows = ledger_rows()[-2:]
    assert [(r.attempt, r.status, r.error_code) for r in rows] == [
        (1, "failed", "CONTAINER_CRASH"), (2, "ok", None)]
    assert rows[1].cold_start is not None and rows[1].container_id
    assert rows[1].actual_cost and rows[1].billed_seconds and rows[1].units == 10


def test_breaker_opens_across_processes(media: Path, isolated_env: Path) -> None:
    """Five CLI processes fail against a dead endpoint (exit 3); the sixth finds the
    circuit open (exit 4) without trying the network."""
    env = {**os.environ, "MODAL_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "MODAL_TOKEN": TOKEN, "CANVASCAST_FUNCTIONS__RENDER_VIDEO__ATTEMPTS": "1"}
    timeline = str(tiny_timeline(media))
    codes = []
    for i in range(6):
        done = run_subprocess("--json", "render", timeline, "-o", f"o{i}.mp4", "--remote",
                              cwd=isolated_env, env=env)
        codes.append(done.exit_code)
        assert TOKEN not in done.stdout + done.stderr
    assert codes == [3, 3, 3, 3, 3, 4]
    last = json.loads(done.stdout)["error"]
    assert last["code"] == "CIRCUIT_OPEN" and last["last_error"] == "CONNECTION_FAILED"
    fell = run_subprocess("--json", "render", timeline, "-o", "f.mp4", cwd=isolated_env,
                          env=env)
    assert fell.exit_code == 0
    assert json.loads(fell.stdout)["fallback"]["reason"].startswith("CIRCUIT_OPEN")


def test_half_open_trial_closes_the_circuit(cli: Cli, faulty: Faulty, services: Services,
                                            media: Path) -> None:
    now = [1_000_000.0]
    services.clock = lambda: now[0]
    faulty.plan(Fault("POST", "/v1/blobs/missing", "status", 503, times=-1))
    for i in range(5):
        assert cli("render", tiny_timeline(media), "-o", f"o{i}.mp4", "--remote",
                   "--json").exit_code == 3
    blocked = cli("--json", "render", tiny_timeline(media), "-o", "b.mp4", "--remote")
    assert blocked.exit_code == 4
    faulty.plan()  # the service recovers
    now[0] += 61  # past [breaker] reset_timeout: one trial is let through
    trial = cli("--json", "render", tiny_timeline(media), "-o", "t.mp4", "--remote")
    assert trial.exit_code == 0, trial.stdout
    assert cli("--json", "render", tiny_timeline(media), "-o", "n.mp4",
               "--remote").exit_code == 0


def test_bad_input_never_retries_or_trips_the_breaker(cli: Cli, faulty: Faulty,
                                                      media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "missing.jpg", "duration": 1}]})
    for _ in range(7):
        result = cli("--json", "render", path, "-o", "x.mp4", "--remote")
        assert result.exit_code == 2
    assert faulty.sleeps == [] and faulty.count("POST", "/v1/jobs/") == 0
    ok = cli("--json", "render", tiny_timeline(media), "-o", "ok.mp4", "--remote")
    assert ok.exit_code == 0


def test_a_remote_image_batch_out_of_gpu_memory_is_split(cli: Cli, faulty: Faulty) -> None:
    """A batch the remote GPU cannot hold fails GPU_OOM; the client splits it and submits
    the halves (as it does locally), and every image arrives once."""
    original = faulty.app.app
    sizes: list[int] = []
    oom_jobs: set[str] = set()

    async def small_gpu(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "POST" and \
                path == "/v1/jobs/generate_images":
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            count = len(json.loads(body)["requests"])
            sizes.append(count)
            if count > 1:  # this "GPU" fits one image at a time
                job_id = f"job-{len(sizes):032x}"
                oom_jobs.add(job_id)
                await _reply(send, 202, {"id": job_id, "function": "generate_images",
                                         "state": "queued"})
                return
            replay = iter([{"type": "http.request", "body": body, "more_body": False}])

            async def again() -> dict[str, Any]:
                return next(replay)

            await original(scope, again, send)
            return
        if scope["type"] == "http" and path.rsplit("/", 1)[-1] in oom_jobs:
            await _reply(send, 200, {"id": path.rsplit("/", 1)[-1], "state": "failed",
                                     "function": "generate_images", "progress": None,
                                     "error": {"code": "GPU_OOM", "retryable": False,
                                               "message": "CUDA out of memory"}})
            return
        await original(scope, receive, send)

    faulty.app.app = small_gpu
    try:
        result = cli("--json", "images", "a", "b", "c", "--provider", "placeholder",
                     "--batch-size", "3", "--size", "320x180", "--seed", "1", "-o", "out",
                     "--remote")
    finally:
        faulty.app.app = original
    assert result.exit_code == 0, result.stdout
    assert sizes == [3, 2, 1, 1, 1]  # 3 -> (2 -> 1 + 1) + 1
    assert [i["index"] for i in result.json()["images"]] == [0, 1, 2]


async def _reply(send: Any, status: int, data: dict[str, Any]) -> None:
    body = json.dumps({"success": True, "data": data, "error": None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def test_local_never_touches_the_network(cli: Cli, media: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """--local with an endpoint and a token set: not one socket is opened."""
    monkeypatch.setenv("MODAL_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MODAL_TOKEN", TOKEN)
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network use in a --local run")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    result = cli("--json", "render", tiny_timeline(media), "-o", "out.mp4", "--local")
    assert result.exit_code == 0, result.stdout
    assert result.json()["backend"] == "local" and attempts == []


def test_retry_after_as_an_http_date() -> None:
    from canvascast_cli.errors import RateLimited, ServerError
    from canvascast_cli.retry import RetryPolicy, parse_retry_after

    now = 1_800_000_000.0
    when = __import__("email.utils").utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(when, now=now) == pytest.approx(42, abs=1)
    assert parse_retry_after("12", now=now) == 12
    assert parse_retry_after("soon", now=now) is None
    policy = RetryPolicy(attempts=5)
    assert policy.delay(1, RateLimited("x", retry_after=600)) == 120  # capped
    assert 30 <= policy.delay(10, ServerError("x")) <= 33  # backoff cap plus jitter
