"""`canvascast serve` as a process: what a kill, a stop and a cancel leave behind (nothing),
Idempotency-Key across real connections, errors that name blobs and never the server's
paths, and URL inputs that reach only the public internet unless the operator allows it.

Each test names, in its docstring, the defect of the fault run it guards against. The
servers are real child processes (``python -m canvascast_cli serve``) on loopback ports,
each with its own store, CANVASCAST_HOME and TMPDIR under the test's temporary folder —
which is how their processes are found in /proc. Waits poll with generous deadlines;
nothing sleeps for a fixed time to let something happen.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import REPO, Result, small_output, textured_image, write_timeline

TOKEN = "tok-" + "5e7e" * 8
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE = 60.0  # seconds any awaited change may take, on a slow machine

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="finds a server's processes in /proc (Linux)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``condition`` until it is truthy (its value), or fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:g} s: {what}")
        time.sleep(0.05)


@dataclass
class Served:
    """One `canvascast serve` child: its URL, folder (store, home, TMPDIR under it)."""

    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    store: Path
    tmp: Path
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def serve(root: Path, *flags: str, workers: int = 1) -> Served:
    """Start `canvascast serve` with its state under ``root``; return once it is healthy."""
    store, tmp = root / "store", root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MODAL_TOKEN": TOKEN, "CANVASCAST_HOME": str(root / "home"),
           "NO_COLOR": "1", "TMPDIR": str(tmp)}
    env.pop("MODAL_ENDPOINT", None)
    stderr_path = root / f"serve-{port}.err"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "canvascast_cli", "serve", "--port", str(port),
             "--workers", str(workers), "--store", str(store), *flags],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    served = Served(proc, f"http://127.0.0.1:{port}", root, store, tmp, stderr_path)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {served.stderr}")
        try:
            return httpx.get(served.url + "/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        until(healthy, "serve answers /v1/health")
    except BaseException:
        served.stop(signal.SIGKILL)
        raise
    return served


def session_processes(marker: Path) -> dict[int, str]:
    """Live processes whose command line or environment names ``marker`` (a server's
    folder: its workers inherit TMPDIR under it, ffmpeg its worker's), pid -> command."""
    needle = str(marker).encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie holds nothing; its parent (init) reaps it
            command = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if needle in command or needle in environ:
            found[int(entry.name)] = command.replace(b"\0", b" ").decode(errors="replace")
    return found


def upload(c: httpx.Client, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    reply = c.put(f"/v1/blobs/{sha}", content=data)
    assert reply.status_code == 200, reply.text
    return sha


def submit(c: httpx.Client, function: str, payload: dict[str, Any], **headers: str) -> str:
    reply = c.post(f"/v1/jobs/{function}", json=payload, headers=headers)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["data"]["id"])


def status(c: httpx.Client, job_id: str, wait: float = 0.0) -> dict[str, Any]:
    reply = c.get(f"/v1/jobs/{job_id}", params={"wait": wait})
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["data"])


def finished(c: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = status(c, job_id, wait=5)
        return job if job["state"] in ("done", "failed", "cancelled") else None

    return dict(until(done, f"job {job_id} finishes"))


def long_render(c: httpx.Client, folder: Path) -> str:
    """A 1080p render of ten minutes (it runs until stopped), once ffmpeg is encoding."""
    image = textured_image(folder / "big.jpg", 1920, 1080, seed=3)
    sha = upload(c, image.read_bytes())
    return submit(c, "render_video", {"timeline": {
        "output": {"width": 1920, "height": 1080, "fps": 30},
        "scenes": [{"image": f"blob:{sha}.jpg", "duration": 600,
                    "motion": {"type": "zoom_in", "amount": 0.2}}]}})


def rendering(c: httpx.Client, served: Served, job_id: str) -> dict[int, str]:
    """Wait until ``job_id`` is running with frames written and its ffmpeg is alive; the
    server's processes then."""
    until(lambda: (job := status(c, job_id, wait=2))["state"] == "running"
          and (job["progress"] or {}).get("done", 0) >= 1, f"{job_id} renders frames")
    return dict(until(lambda: (found := session_processes(served.root)) and any(
        "ffmpeg" in command for command in found.values()) and found, "ffmpeg runs"))


@contextmanager
def stalled_upload(served: Served) -> Iterator[None]:
    """An upload that sends 1 MB of its announced 100 MB, then nothing, while in the block."""
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(f"PUT /v1/blobs/{'a' * 64} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000000\r\n"
                     "\r\n".encode() + b"x" * 1_000_000)
        yield


def gone(served: Served) -> bool:
    return not session_processes(served.root)


# ---------------------------------------------------------------------------------------
# A killed, stopped or cancelled job leaves nothing behind


def test_sigkill_takes_the_workers_and_ffmpeg_and_a_restart_finds_no_strays(
        tmp_path: Path) -> None:
    """Guards: SIGKILL of `canvascast serve` mid-render left its worker and ffmpeg
    rendering on their own (re-parented to init), and their job folder for the next
    server. Workers die with their server (the lifeline); a restarted server sweeps
    ``<store>/work``, removes the half-received upload the kill cut off (found by this
    test: it stayed in the spool for good) and prunes the blob store at start."""
    served = serve(tmp_path)
    with served.client() as c:
        job_id = long_render(c, tmp_path)
        running = rendering(c, served, job_id)
    assert len(running) >= 3, running  # serve, its worker, ffmpeg (and a resource tracker)
    spool = served.store / "tmp"
    with stalled_upload(served):
        until(lambda: list(spool.glob("upload-*")), "the upload is being spooled")
        served.stop(signal.SIGKILL)
    until(lambda: gone(served), "no process of the killed server remains")
    work = served.store / "work"
    left = {p.relative_to(work) for p in work.rglob("*")}
    assert Path(job_id) in left  # what the killed run left: the next start's to sweep
    # A blob unused for longer than [retention] blobs_days (7): the start prunes it too.
    stale = served.store / "blobs" / "ab" / ("ab" * 32)
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    month_ago = time.time() - 30 * 86400
    os.utime(stale, (month_ago, month_ago))

    again = serve(tmp_path)
    try:
        now = {p.relative_to(work) for p in work.rglob("*")}
        assert not [p for p in now if p.parts[0].startswith("job-")], now
        assert left & now <= {Path("worker-0")}  # its scratch folder, made anew
        assert not stale.exists()
        assert list(spool.iterdir()) == []
        with again.client() as c:
            assert c.get(f"/v1/jobs/{job_id}").status_code == 404  # not a stray's either
    finally:
        assert again.stop() == 143
    until(lambda: gone(again), "the restarted server's processes end with it")


def test_sigterm_with_a_running_job_is_one_message_and_exit_143(tmp_path: Path) -> None:
    """Guards: SIGTERM on `serve` printed a cut-off ``job-monitor`` traceback and
    'nothing was written'. A stop is one line saying so, exit 143; the running job's
    worker and ffmpeg end with it and its folder is removed."""
    served = serve(tmp_path)
    with served.client() as c:
        rendering(c, served, long_render(c, tmp_path))
    assert served.stop(signal.SIGTERM) == 143
    stderr = served.stderr
    assert "Traceback" not in stderr and "job-monitor" not in stderr, stderr
    assert "nothing was written" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: serve stopped (SIGTERM); running jobs were stopped", stderr
    assert len(lines) <= 3, stderr  # the start-up note, the stop (and nothing else)
    until(lambda: gone(served), "no process of the stopped server remains")
    assert not [p for p in (served.store / "work").rglob("*")
                if p.name.startswith("job-")] if (served.store / "work").exists() else True
    assert not [p for p in served.tmp.iterdir() if p.name.startswith("canvascast-")]


def test_sigterm_when_idle_is_one_message_and_exit_143(tmp_path: Path) -> None:
    """Guards: as above, with no job: exit 143, one message, no traceback."""
    served = serve(tmp_path)
    assert served.stop(signal.SIGTERM) == 143
    stderr = served.stderr
    assert "Traceback" not in stderr and "nothing was written" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: serve stopped (SIGTERM); running jobs were stopped")
    until(lambda: gone(served), "no process of the stopped server remains")


def test_sigterm_with_a_stalled_upload_still_stops(tmp_path: Path) -> None:
    """Guards: a client holding an upload open (headers and a few bytes, then nothing)
    kept a SIGTERMed server running for good: uvicorn waited for the request forever. A
    stop gives requests in flight a few seconds, then ends."""
    served = serve(tmp_path)
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as stalled:
        stalled.sendall((f"PUT /v1/blobs/{'a' * 64} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000000\r\n"
                         "\r\n").encode() + b"x" * 1000)
        until(lambda: any(p.name.startswith("upload-") for p in (served.store / "tmp")
                          .glob("*")), "the upload has begun")
        began = time.monotonic()
        assert served.stop(signal.SIGTERM) == 143
        assert time.monotonic() - began < 30, "the stop waited on the stalled upload"
    until(lambda: gone(served), "no process of the stopped server remains")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `canvascast serve` (2 workers, no --allow-private-urls) for the tests that
    leave it running as they found it."""
    served = serve(tmp_path_factory.mktemp("shared"), workers=2)
    try:
        yield served
    finally:
        served.stop()


def test_a_cancelled_job_leaves_no_folder_and_nothing_in_tmp(shared: Served,
                                                             tmp_path: Path) -> None:
    """Guards: cancelled or killed server jobs left ``/tmp/canvascast-job-*`` folders
    with partial MP4s and empty ``/tmp/canvascast-render-*`` folders. A cancel stops
    ffmpeg and removes the job's folder (under the server's own); nothing is ever written
    to TMPDIR; the server goes on running jobs."""
    work = shared.store / "work"
    with shared.client() as c:
        job_id = long_render(c, tmp_path)
        rendering(c, shared, job_id)
        assert (work / job_id).is_dir()  # where the job works: the server's folder
        cancelled = c.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200
        assert cancelled.json()["data"]["state"] == "cancelled"
        assert not (work / job_id).exists()
        until(lambda: not any("ffmpeg" in cmd for cmd in session_processes(shared.root)
                              .values()), "the cancelled job's ffmpeg ends")
        small = upload(c, textured_image(tmp_path / "small.jpg", seed=5).read_bytes())
        after = finished(c, submit(c, "render_video", {"timeline": {
            "output": small_output(), "scenes": [{"image": f"blob:{small}.jpg",
                                                  "duration": 1}]}}))
        assert after["state"] == "done", after
    assert not [p for p in work.iterdir() if p.name.startswith("job-")]
    assert not [p.name for p in shared.tmp.iterdir() if p.name.startswith("canvascast-")]


def test_concurrent_submits_with_one_key_over_http_make_one_job(shared: Served) -> None:
    """Guards: six concurrent POSTs with one Idempotency-Key created up to six jobs (real
    connections, a real runner); the key reused for another body is 422."""
    payload: dict[str, Any] = {"provider": "placeholder", "model": "placeholder", "requests": [
        {"index": 0, "prompt": "a kite", "width": 64, "height": 64, "aspect_ratio": "1:1",
         "seed": 9}]}
    start = threading.Barrier(6)
    ids: list[str] = []

    def post() -> None:
        with shared.client() as c:
            start.wait(DEADLINE)
            ids.append(submit(c, "generate_images", payload, **{"Idempotency-Key": "six"}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert len(ids) == 6 and len(set(ids)) == 1
    with shared.client() as c:
        assert finished(c, ids[0])["state"] == "done"
        other = c.post("/v1/jobs/generate_images", headers={"Idempotency-Key": "six"},
                       json={**payload, "requests": [{**payload["requests"][0],
                                                      "prompt": "a map"}]})
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"


# ---------------------------------------------------------------------------------------
# Errors name inputs, never the server's paths


def test_a_failed_job_names_its_input_by_blob_and_the_cli_by_the_users_file(
        shared: Served, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch,
        media: Path) -> None:
    """Guards: failed-job errors showed server temp paths (``/tmp/canvascast-job-…/
    <sha>.jpg``). The server names the input as ``blob:<sha>.jpg``; the CLI puts the
    user's own file back in its place."""
    corrupt = b"\xff\xd8\xff\xe0 these bytes are not an image"
    with shared.client() as c:
        sha = upload(c, corrupt)
        job = finished(c, submit(c, "render_video", {"timeline": {
            "output": small_output(), "scenes": [{"image": f"blob:{sha}.jpg",
                                                  "duration": 1}]}}))
    assert job["state"] == "failed"
    error = job["error"]
    text = " ".join([error["message"], *error.get("details", [])])
    assert f"scenes[0].image: blob:{sha}.jpg is corrupt" in text, text
    for server_path in (str(shared.root), "/tmp", "work/", "canvascast-"):
        assert server_path not in text, text
    assert error["code"] == "INVALID_INPUT"

    (media / "broken.jpg").write_bytes(corrupt)
    timeline = write_timeline(media, {"output": small_output(),
                                      "scenes": [{"image": "broken.jpg", "duration": 1}]})
    monkeypatch.setenv("MODAL_ENDPOINT", shared.url)
    monkeypatch.setenv("MODAL_TOKEN", TOKEN)
    result = cli("--json", "render", timeline, "-o", "out.mp4", "--remote")
    assert result.exit_code == 2, result.stdout
    said = result.json()["error"]
    said_text = " ".join([said["message"], *said.get("details", [])])
    assert str(media / "broken.jpg") in said_text and "blob:" not in said_text
    assert str(shared.root) not in said_text


# ---------------------------------------------------------------------------------------
# URL inputs: public addresses only, unless the operator allows others


@pytest.fixture
def loopback_images(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """An http server on 127.0.0.1 serving one JPEG: (its URL, the paths requested)."""
    image = textured_image(tmp_path / "served.jpg", seed=11).read_bytes()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/frame.jpg", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_fetches_only_public_urls_unless_allowed(
        shared: Served, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch,
        media: Path, tmp_path: Path, loopback_images: tuple[str, list[str]]) -> None:
    """Guards: the worker downloaded loopback URLs given as image inputs — server-side
    request forgery on a hosted job API. Without --allow-private-urls the job fails as
    the input's fault (exit 2) and nothing is fetched; with it the render succeeds; a
    --local run is unaffected."""
    url, seen = loopback_images
    timeline = write_timeline(media, {"output": small_output(),
                                      "scenes": [{"image": url, "duration": 1}]})
    monkeypatch.setenv("MODAL_TOKEN", TOKEN)
    monkeypatch.setenv("MODAL_ENDPOINT", shared.url)
    refused = cli("--json", "render", timeline, "-o", "refused.mp4", "--remote")
    assert refused.exit_code == 2, refused.stdout
    error = refused.json()["error"]
    assert error["code"] == "INVALID_INPUT"
    assert error["details"] == ["scenes[0].image: 127.0.0.1 resolves to 127.0.0.1: not a "
                                "public address (this server fetches only from the public "
                                "internet)"]
    assert seen == [] and not Path("refused.mp4").exists()

    allowing = serve(tmp_path / "allowing", "--allow-private-urls")
    try:
        monkeypatch.setenv("MODAL_ENDPOINT", allowing.url)
        allowed = cli("--json", "render", timeline, "-o", "allowed.mp4", "--remote")
        assert allowed.exit_code == 0, allowed.stdout
        assert allowed.json()["backend"] == "http" and seen == ["/frame.jpg"]
    finally:
        allowing.stop()
    local = cli("--json", "render", timeline, "-o", "local.mp4", "--local")
    assert local.exit_code == 0, local.stdout
    assert len(seen) == 2
    assert Path("local.mp4").read_bytes() == Path("allowed.mp4").read_bytes()
