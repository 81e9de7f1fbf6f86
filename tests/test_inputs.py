"""Input resolution: interruptible, bounded downloads, one decode per distinct image."""

from __future__ import annotations

import dataclasses
import email.utils
import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from canvascast_cli.engines.render.inputs import (
    MAX_DOWNLOAD_BYTES,
    STALE_PART_SECONDS,
    InputLimits,
    image_problem,
    resolve_timeline,
)
from canvascast_cli.errors import (
    CanvasCastError,
    ConnectionFailed,
    InvalidInput,
    RateLimited,
    ServerError,
    Timeout,
)
from canvascast_cli.paths import cache_dir
from canvascast_cli.timeline import Timeline, parse_timeline
from tests.helpers import REPO, small_output

URL = "http://images.test/still.jpg"
HANG = 30.0  # a generous bound that only a hang reaches


def _timeline(*images: str) -> Timeline:
    return parse_timeline({"output": small_output(),
                           "scenes": [{"image": ref, "duration": 1} for ref in images]})


def _cached() -> list[Path]:
    folder = cache_dir() / "images"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _serving(body: bytes | Callable[[httpx.Request], httpx.Response]
             ) -> tuple[httpx.MockTransport, list[str]]:
    """A transport answering every GET with ``body`` (200), and the URLs it was asked."""
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return body(request) if callable(body) else httpx.Response(200, content=body)

    return httpx.MockTransport(handle), asked


class Counting:
    """An image check that counts its calls (one per distinct image is the contract)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> str | None:
        with self._lock:
            self.paths.append(path)
        return image_problem(path)


# ---------------------------------------------------------------------------------------
# Limits


def test_limits_defaults_and_validation() -> None:
    limits = InputLimits()
    assert limits.download_max_bytes == MAX_DOWNLOAD_BYTES == 64 * 1024 * 1024
    assert limits.download_timeout == 60.0 and limits.read_timeout == 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.download_timeout = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        InputLimits(download_timeout=0)
    with pytest.raises(ValueError):
        InputLimits(download_max_bytes=0)


# ---------------------------------------------------------------------------------------
# One decode per distinct image


def test_each_distinct_image_is_decoded_once(media: Path) -> None:
    jpeg = (media / "img0.jpg").read_bytes()
    transport, asked = _serving(jpeg)
    check = Counting()
    refs = [f"img{i % 3}.jpg" for i in range(2000)]
    refs[7] = str(media / "img1.jpg")  # absolute, same file as the relative "img1.jpg"
    refs += [URL] * 50
    resolved = resolve_timeline(_timeline(*refs), media, transport=transport, check_image=check)
    assert len(check.paths) == 4  # three local stills and one URL
    assert asked == [URL]  # downloaded once, not once per scene
    assert len(resolved.images) == len(refs)
    assert resolved.images[0] == media / "img0.jpg"
    assert resolved.images[7] == resolved.images[1] == media / "img1.jpg"
    assert resolved.images[-1] == resolved.images[2000] and resolved.images[-1].is_file()


def test_a_shared_problem_is_reported_for_every_scene(media: Path) -> None:
    (media / "text.jpg").write_text("not an image")
    check = Counting()
    with pytest.raises(InvalidInput) as info:
        resolve_timeline(_timeline("gone.png", "img0.jpg", "gone.png", "text.jpg", "text.jpg"),
                         media, check_image=check)
    assert info.value.details == [
        f"scenes[0].image: file not found: {media / 'gone.png'}",
        f"scenes[2].image: file not found: {media / 'gone.png'}",
        f"scenes[3].image: {media / 'text.jpg'} is not an image Pillow can read",
        f"scenes[4].image: {media / 'text.jpg'} is not an image Pillow can read",
    ]
    assert sorted(p.name for p in check.paths) == ["img0.jpg", "text.jpg"]


def test_a_folder_is_called_a_folder(media: Path) -> None:
    (media / "stills").mkdir()
    (media / "voice").mkdir()
    with pytest.raises(InvalidInput) as info:
        resolve_timeline(parse_timeline({
            "output": small_output(), "scenes": [{"image": "stills", "duration": 1}],
            "narration": "voice"}), media)
    assert info.value.details == [
        f"scenes[0].image: {media / 'stills'} is a folder, not an image file",
        f"narration.path: {media / 'voice'} is a folder, not an audio file",
    ]


# ---------------------------------------------------------------------------------------
# Downloads with an injected transport


def test_download_is_cached_and_reused(media: Path) -> None:
    transport, asked = _serving((media / "img0.jpg").read_bytes())
    first = resolve_timeline(_timeline(URL), media, transport=transport)
    again = resolve_timeline(_timeline(URL), media, transport=transport)
    assert first.images == again.images and asked == [URL]
    assert _cached() == first.images  # no temporary left beside it


def test_a_download_that_is_not_an_image_is_not_cached(media: Path) -> None:
    broken, _ = _serving(b"<html>502 Bad Gateway</html>")
    with pytest.raises(InvalidInput) as info:
        resolve_timeline(_timeline(URL), media, transport=broken)
    assert info.value.details == [f"scenes[0].image: {URL} is not an image Pillow can read"]
    assert _cached() == []
    # The server is fixed: the next run downloads again and succeeds.
    fixed, asked = _serving((media / "img0.jpg").read_bytes())
    resolved = resolve_timeline(_timeline(URL), media, transport=fixed)
    assert asked == [URL] and image_problem(resolved.images[0]) is None


def test_a_truncated_download_names_the_url(media: Path) -> None:
    data = (media / "img0.jpg").read_bytes()
    transport, _ = _serving(data[: len(data) // 2])
    with pytest.raises(InvalidInput) as info:
        resolve_timeline(_timeline(URL), media, transport=transport)
    assert info.value.details[0].startswith(f"scenes[0].image: {URL} is corrupt or truncated")
    assert _cached() == []


def test_a_bad_file_in_the_cache_is_fetched_again(media: Path) -> None:
    transport, asked = _serving((media / "img0.jpg").read_bytes())
    cached = resolve_timeline(_timeline(URL), media, transport=transport).images[0]
    cached.write_bytes(b"left by an older version")
    resolved = resolve_timeline(_timeline(URL), media, transport=transport)
    assert asked == [URL, URL] and image_problem(resolved.images[0]) is None


@pytest.mark.parametrize(("answer", "error", "retryable"), [
    (httpx.Response(404), InvalidInput, False),
    (httpx.Response(503), ServerError, True),
    (httpx.Response(429, headers={"Retry-After": "7"}), RateLimited, True),
])
def test_http_status_errors(media: Path, answer: httpx.Response,
                            error: type[CanvasCastError], retryable: bool) -> None:
    """Read by the one httpx mapping (net.DOWNLOAD); retried by the one policy: a 404
    once, a 503 or 429 up to three times (a 429's Retry-After honoured)."""
    transport, asked = _serving(lambda request: answer)
    delays: list[float] = []
    with pytest.raises(error) as info:
        resolve_timeline(_timeline("img0.jpg", URL), media, transport=transport,
                         sleep=delays.append)
    exc = info.value
    assert type(exc) is error and exc.retryable is retryable
    text = f"scenes[1].image: {URL} answered HTTP {answer.status_code}"
    if error is InvalidInput:
        assert len(exc.details) == 1 and exc.details[0].startswith(text)
    else:
        assert exc.message.startswith(text)
    assert len(asked) == (3 if retryable else 1)
    if isinstance(exc, RateLimited):
        assert exc.retry_after == 7.0 and delays == [7.0, 7.0]
    assert _cached() == []


def test_a_download_that_fails_once_is_retried(media: Path) -> None:
    """A 503 then the image: fetched on the second try, after the policy's first pause
    (1 s plus jitter); a Retry-After as an HTTP date is read as well as seconds."""
    image = (media / "img0.jpg").read_bytes()
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30),
                                       usegmt=True)
    answers = iter([httpx.Response(503), httpx.Response(429, headers={"Retry-After": when})])
    transport, asked = _serving(lambda request: next(answers, None) or
                                httpx.Response(200, content=image))
    delays: list[float] = []
    resolved = resolve_timeline(_timeline(URL), media, transport=transport,
                                sleep=delays.append)
    assert len(asked) == 3 and image_problem(resolved.images[0]) is None
    assert 1.0 <= delays[0] <= 1.1 and 25 <= delays[1] <= 30


@pytest.mark.parametrize(("raised", "error", "code"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), ConnectionFailed, "CONNECTION_FAILED"),
    (httpx.ReadError("[Errno 104] Connection reset by peer"), ConnectionFailed,
     "CONNECTION_FAILED"),
    (httpx.ReadTimeout("timed out"), Timeout, "TIMEOUT"),
])
def test_network_failures_are_retryable(media: Path, raised: Exception,
                                        error: type[CanvasCastError], code: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise raised

    transport, _ = _serving(fail)
    with pytest.raises(error) as info:
        resolve_timeline(_timeline(URL, URL), media, transport=transport,
                         sleep=lambda _s: None)
    exc = info.value
    assert exc.code == code and exc.retryable
    assert exc.message.startswith("scenes[0].image: ") and URL in exc.message
    assert exc.details == [exc.message.replace("scenes[0]", "scenes[1]")]


def test_input_problems_come_first_and_list_failed_downloads(media: Path) -> None:
    transport, _ = _serving(lambda request: httpx.Response(503))
    with pytest.raises(InvalidInput) as info:
        resolve_timeline(_timeline("gone.png", URL), media, transport=transport,
                         sleep=lambda _s: None)
    assert info.value.details == [f"scenes[0].image: file not found: {media / 'gone.png'}",
                                  f"scenes[1].image: {URL} answered HTTP 503 Service "
                                  "Unavailable"]


class _Body(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


def test_size_cap_from_content_length_before_reading(media: Path) -> None:
    body = _Body(iter([b"x" * 1024] * 4))
    transport, _ = _serving(lambda request: httpx.Response(
        200, headers={"Content-Length": "4096"}, stream=body))
    with pytest.raises(InvalidInput) as info:
        resolve_timeline(_timeline(URL), media, transport=transport,
                         limits=InputLimits(download_max_bytes=1000))
    assert info.value.details == [
        f"scenes[0].image: {URL} is 4096 bytes, more than the 1000 bytes limit"]
    assert body.read == 0 and _cached() == []


def test_size_cap_while_streaming(media: Path) -> None:
    body = _Body(b"x" * 1024 for _ in range(10**6))  # no Content-Length, endless
    transport, _ = _serving(lambda request: httpx.Response(200, stream=body))
    with pytest.raises(InvalidInput) as info:
        resolve_timeline(_timeline(URL), media, transport=transport,
                         limits=InputLimits(download_max_bytes=1024 * 1024))
    assert info.value.details == [f"scenes[0].image: {URL} is larger than the 1 MiB limit"]
    assert body.read <= 1100 and _cached() == []  # stopped right after the cap


def test_stale_download_temporaries_are_swept(media: Path) -> None:
    folder = cache_dir() / "images"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".abc.jpg.x1.part", folder / ".abc.jpg.x2.part"
    stale.write_bytes(b"abandoned")
    fresh.write_bytes(b"another process, downloading now")
    old = time.time() - STALE_PART_SECONDS - 60
    os.utime(stale, (old, old))
    transport, _ = _serving((media / "img0.jpg").read_bytes())
    resolve_timeline(_timeline(URL), media, transport=transport)
    assert not stale.exists() and fresh.exists()


# ---------------------------------------------------------------------------------------
# Real local servers: a slow drip, a server that never answers


@pytest.fixture
def drip_server() -> Iterator[str]:
    """Serves 1,000 announced bytes, one every 50 ms, until the client gives up."""
    stop = threading.Event()

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    if stop.wait(0.05):
                        return
            except OSError:
                return  # the client hung up

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/drip.jpg"
    stop.set()
    server.shutdown()
    server.server_close()


def test_a_slow_drip_hits_the_total_deadline(media: Path, drip_server: str) -> None:
    began = time.monotonic()
    with pytest.raises(Timeout) as info:
        resolve_timeline(_timeline(drip_server), media,
                         limits=InputLimits(download_timeout=0.5, read_timeout=5.0))
    assert time.monotonic() - began < HANG  # the drip alone would take 50 s
    assert info.value.code == "TIMEOUT" and info.value.retryable
    assert info.value.message == (
        f"scenes[0].image: {drip_server} did not download within 0.5 s")
    assert _cached() == []


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A TCP server that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(HANG)
        yield server


def test_a_server_that_never_answers_times_out(media: Path,
                                               silent_server: socket.socket) -> None:
    port = silent_server.getsockname()[1]
    with pytest.raises(Timeout) as info:
        resolve_timeline(_timeline(f"http://127.0.0.1:{port}/a.jpg"), media,
                         limits=InputLimits(read_timeout=0.2), sleep=lambda _s: None)
    assert info.value.message.startswith(f"scenes[0].image: http://127.0.0.1:{port}/a.jpg "
                                         "did not answer within 0.2 s")


# ---------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM, in a real child process

_CHILD = textwrap.dedent("""
    import signal, sys, threading
    from pathlib import Path
    from canvascast_cli.engines.render.inputs import InputLimits, resolve_timeline
    from canvascast_cli.timeline import parse_timeline

    class Terminated(KeyboardInterrupt):  # what the CLI turns SIGTERM into
        pass

    def on_term(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, on_term)

    def blocked(path):  # a decode that never ends
        print("decoding", flush=True)
        threading.Event().wait()

    image, mode = sys.argv[1], sys.argv[2]
    timeline = parse_timeline({"output": {"width": 320, "height": 180, "fps": 10},
                               "scenes": [{"image": image, "duration": 1}] * 3})
    try:
        resolve_timeline(timeline, Path.cwd(),
                         limits=InputLimits(read_timeout=30, download_timeout=60),
                         check_image=blocked if mode == "decode" else None)
    except KeyboardInterrupt as exc:
        print("stopped by", type(exc).__name__, flush=True)
        sys.exit(130)
    print("finished", flush=True)
""")


def _child(image: str, mode: str, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", _CHILD, image, mode], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], child: subprocess.Popen[str]) -> None:
    """Poll ``condition`` (a file appearing) while the child runs; fail on a hang."""
    pause, give_up = threading.Event(), time.monotonic() + HANG
    while not condition():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < give_up, "the child never got there"
        pause.wait(0.01)


def _stop(child: subprocess.Popen[str], signum: int) -> tuple[float, str, str]:
    """Send ``signum``; seconds until the child exited, and its output."""
    sent = time.monotonic()
    child.send_signal(signum)
    try:
        out, err = child.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail(f"still running {HANG:g} s after signal {signum}")
    return time.monotonic() - sent, out, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\nabc"],
                         ids=["silent", "stalled-body"])
def test_signal_stops_a_stuck_download(media: Path, silent_server: socket.socket,
                                       answer: bytes, signum: int) -> None:
    port = silent_server.getsockname()[1]
    child = _child(f"http://127.0.0.1:{port}/a.jpg", "download", media)
    try:
        conn, _ = silent_server.accept()  # the child is waiting on the server now
    except TimeoutError:
        child.kill()
        pytest.fail(f"no request: {child.communicate()}")
    with conn:
        conn.settimeout(HANG)
        assert conn.recv(4096).startswith(b"GET /a.jpg")
        if answer:
            conn.sendall(answer)
            # Wait until the child streams the body into a temporary in the cache.
            _wait_for(lambda: any(p.name.endswith(".part") for p in _cached()), child)
        seconds, out, err = _stop(child, signum)
    expected = "KeyboardInterrupt" if signum == signal.SIGINT else "Terminated"
    assert child.returncode == 130, err
    assert out.strip() == f"stopped by {expected}", err
    assert seconds < 10  # vs a 30 s read timeout
    # Nothing at the final cache path; a temporary may stay for a later run to sweep.
    assert [p.name for p in _cached() if not p.name.endswith(".part")] == []


def test_signal_stops_a_decode_that_never_ends(media: Path) -> None:
    child = _child("img0.jpg", "decode", media)
    assert child.stdout is not None
    assert child.stdout.readline() == "decoding\n", child.communicate()
    seconds, out, err = _stop(child, signal.SIGINT)
    assert child.returncode == 130, err
    assert out.strip() == "stopped by KeyboardInterrupt"
    assert seconds < 10

