"""The gemini image provider: the real google-genai SDK against a real local HTTP server
that answers like the Gemini API (camelCase JSON, base64 image bytes). No SDK mocks; the
only thing replaced is the retry backoff's sleep, which is recorded instead."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from canvascast_cli.cli.context import Services
from canvascast_cli.engines.images.base import ImageRequest
from canvascast_cli.engines.images.gemini import GeminiProvider
from canvascast_cli.errors import ConnectionFailed, InvalidInput, ServerError, Timeout
from tests.helpers import Cli

KEY = "AIzaTEST-not-a-real-key-0123456789abcdef"
RATIO_SIZES = {"16:9": (64, 36), "1:1": (48, 48), "9:16": (36, 64)}

Reply = tuple[int, dict[str, str], dict[str, Any]]


def png(prompt: str, size: tuple[int, int]) -> bytes:
    """A small PNG that carries the prompt it was made for (to check the order)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", prompt)
    out = io.BytesIO()
    Image.new("RGB", size, (len(prompt) % 256, 90, 160)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def image_reply(body: dict[str, Any], text: str | None = None) -> Reply:
    """What the service answers for an image (wire format: camelCase, base64 data)."""
    prompt = body["contents"][0]["parts"][0]["text"]
    ratio = body["generationConfig"]["imageConfig"]["aspectRatio"]
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(
        png(prompt, RATIO_SIZES[ratio])).decode()}})
    return 200, {}, {"candidates": [{"content": {"role": "model", "parts": parts},
                                     "finishReason": "STOP", "index": 0}],
                     "modelVersion": "gemini-3.1-flash-image"}


def error_reply(code: int, status: str, message: str, **extra: Any) -> Reply:
    """Google's error body: ``{"error": {"code", "message", "status", ...}}``."""
    return code, {}, {"error": {"code": code, "message": message, "status": status, **extra}}


@dataclass
class FakeGemini:
    """A local Gemini API: records every request; ``reply`` decides each answer."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply: Callable[[dict[str, Any]], Reply] = image_reply
    concurrency_gate: int = 0  # hold requests until this many were in flight at once
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)

    def handle(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.lock.notify_all()
            if self.concurrency_gate:
                # Serial requests would wait here 3 s each, and the test would see it.
                self.lock.wait_for(lambda: self.max_in_flight >= self.concurrency_gate, 3)
        try:
            return self.reply(body)
        finally:
            with self.lock:
                self.in_flight -= 1

    def prompts(self) -> list[str]:
        return [r["body"]["contents"][0]["parts"][0]["text"] for r in self.requests]


@pytest.fixture
def server() -> Iterator[FakeGemini]:
    fake = FakeGemini()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers, payload = fake.handle(
                self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that timed out has hung up: writing the late answer fails, as
            # intended; anything else is still printed.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_port}"
    yield fake
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def gemini_env(server: FakeGemini, monkeypatch: pytest.MonkeyPatch, services: Services
               ) -> list[float]:
    """The CLI aimed at the local server, with the backoff's sleeps recorded (returned)."""
    delays: list[float] = []
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("CANVASCAST_GEMINI_BASE_URL", server.url)
    services.sleep = delays.append  # the provider's backoff records instead of sleeping
    return delays


def request(prompt: str = "a red kite", index: int = 0, ratio: str = "16:9") -> ImageRequest:
    return ImageRequest(index=index, prompt=prompt, negative_prompt=None, width=1344,
                        height=768, aspect_ratio=ratio, seed=index)


def no_key_anywhere(*texts: str) -> bool:
    return all(KEY not in text for text in texts)


# ---------------------------------------------------------------------------------------
# Through the CLI


def test_images_in_prompt_order_with_sidecars(cli, server: FakeGemini, gemini_env,  # type: ignore[no-untyped-def]
                                              isolated_env: Path) -> None:
    server.concurrency_gate = 2  # a batch runs its requests concurrently
    server.reply = lambda body: image_reply(body, text="Here is your picture.")
    prompts = [f"scene number {i}" for i in range(1, 6)]
    result = cli("images", *prompts, "--provider", "gemini", "--preset", "flat",
                 "--aspect", "16:9", "--seed", "7", "-o", "out", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = result.json()
    assert (doc["provider"], doc["model"], doc["failed"]) == ("gemini",
                                                               "gemini-3.1-flash-image", 0)
    assert doc["cost_usd"] == pytest.approx(5 * 0.067)
    assert server.max_in_flight >= 2
    # The requests: styled prompts, the ratio, image output only, the key in its header.
    assert len(server.requests) == 5
    for recorded in server.requests:
        assert recorded["path"] == "/v1/models/gemini-3.1-flash-image:generateContent"
        assert recorded["headers"]["x-goog-api-key"] == KEY
        config = recorded["body"]["generationConfig"]
        assert config == {"responseModalities": ["IMAGE"],
                          "imageConfig": {"aspectRatio": "16:9"}}
    # The files: in prompt order, each image the one made for its prompt.
    for i, (prompt, entry) in enumerate(zip(prompts, doc["images"], strict=True)):
        assert Path(entry["file"]).name == f"{i + 1:03d}-scene-number-{i + 1}.png"
        sidecar = json.loads(Path(entry["sidecar"]).read_text())
        assert sidecar["provider"] == "gemini"
        assert sidecar["model"] == "gemini-3.1-flash-image"
        assert sidecar["prompt"] == prompt
        assert sidecar["prompt_sent"].startswith(f"flat vector illustration of {prompt}")
        assert sidecar["prompt_sent"] in server.prompts()
        assert sidecar["aspect_ratio"] == "16:9" and sidecar["seed"] == 7 + i
        assert sidecar["actual_size"] == {"width": 64, "height": 36}  # decoded, not nominal
        assert sidecar["model_text"] == "Here is your picture."
        assert sidecar["negative_prompt"] is None  # Gemini takes none
        with Image.open(entry["file"]) as img:
            assert img.text["prompt"] == sidecar["prompt_sent"]
    assert sorted(server.prompts()) == sorted(e["prompt_sent"] for e in doc["images"])
    assert no_key_anywhere(result.stdout, result.stderr,
                           *(p.read_text() for p in (isolated_env / "out").glob("*.json")))


def test_a_safety_block_keeps_the_other_images(cli, server: FakeGemini, gemini_env,  # type: ignore[no-untyped-def]
                                               isolated_env: Path) -> None:
    def reply(body: dict[str, Any]) -> Reply:
        prompt = body["contents"][0]["parts"][0]["text"]
        if prompt == "forbidden":  # refused while generating: a candidate, no image
            return 200, {}, {"candidates": [{
                "content": {"role": "model", "parts": [{"text": "I can't draw that."}]},
                "finishReason": "IMAGE_SAFETY", "index": 0}]}
        if prompt == "worse":  # refused up front: no candidate at all
            return 200, {}, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
        return image_reply(body)

    server.reply = reply
    result = cli("images", "a calm lake", "forbidden", "worse", "--provider", "gemini",
                 "-o", "out", "--json")
    assert result.exit_code == 1
    doc = result.json()
    assert [e["status"] for e in doc["images"]] == ["ok", "blocked", "blocked"]
    assert doc["images"][1]["safety"] == {"blocked": True, "reason": "IMAGE_SAFETY"}
    assert doc["images"][1]["model_text"] == "I can't draw that."
    assert doc["images"][2]["safety"] == {"blocked": True, "reason": "PROHIBITED_CONTENT"}
    assert sorted(p.name for p in (isolated_env / "out").iterdir()) == [
        "001-a-calm-lake.json", "001-a-calm-lake.png"]
    assert doc["cost_usd"] == pytest.approx(0.067)  # refused images are not billed
    assert gemini_env == []  # a refusal is an answer, not something to retry
    text = cli("images", "forbidden", "--provider", "gemini", "-o", "out2")
    assert text.exit_code == 1 and "image 1 blocked: IMAGE_SAFETY" in text.stderr


def test_rate_limited_forever_exits_1_with_rate_limited(cli, server: FakeGemini,  # type: ignore[no-untyped-def]
                                                         gemini_env, isolated_env: Path) -> None:
    server.reply = lambda body: error_reply(
        429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}])
    result = cli("images", "one", "--provider", "gemini", "-o", "out", "--json")
    assert result.exit_code == 1
    error = result.json()["error"]
    assert error["code"] == "RATE_LIMITED" and error["retryable"] is True
    assert "retry after 3 s" in error["message"]
    assert len(server.requests) == 3  # 3 attempts
    assert gemini_env == [3.0, 3.0]  # the service's RetryInfo beats the 1 s, 2 s backoff
    assert not (isolated_env / "out").exists()
    assert no_key_anywhere(result.stdout, result.stderr)


@pytest.mark.parametrize(("reply", "code", "exit_code"), [
    (error_reply(401, "UNAUTHENTICATED", f"Request had invalid credentials: key {KEY}"),
     "AUTH", 3),
    (error_reply(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
     "AUTH", 3),
    # What Google actually answers for a wrong key: a 400, not a 401.
    (error_reply(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                 details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                           "reason": "API_KEY_INVALID"}]), "AUTH", 3),
    (error_reply(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
     "INVALID_INPUT", 2),
])
def test_rejections_are_not_retried_and_never_show_the_key(  # type: ignore[no-untyped-def]
        cli, server: FakeGemini, gemini_env, isolated_env: Path, reply, code, exit_code) -> None:
    server.reply = lambda body: reply
    result = cli("images", "one", "two", "--provider", "gemini", "-o", "out", "--json")
    assert result.exit_code == exit_code
    assert result.json()["error"]["code"] == code
    # One try per prompt (the second may be cancelled before it starts), no backoff.
    assert len(server.requests) == len(set(server.prompts())) and gemini_env == []
    assert no_key_anywhere(result.stdout, result.stderr)
    plain = cli("images", "one", "--provider", "gemini", "-o", "out")
    assert plain.exit_code == exit_code and no_key_anywhere(plain.stdout, plain.stderr)
    assert not (isolated_env / "out").exists()


def test_unknown_model_exits_2_naming_it(cli: Cli, server: FakeGemini, gemini_env: Any) -> None:
    server.reply = lambda body: error_reply(
        404, "NOT_FOUND", "models/gemini-9-paint is not found for API version v1, or is not "
        "supported for generateContent.")
    result = cli("images", "one", "--provider", "gemini", "--model", "gemini-9-paint",
                 "-o", "out")
    assert result.exit_code == 2
    assert "no image model 'gemini-9-paint'" in result.stderr
    assert "gemini-3.1-flash-image, gemini-2.5-flash-image" in result.stderr
    assert server.requests[0]["path"] == "/v1/models/gemini-9-paint:generateContent"
    assert no_key_anywhere(result.stdout, result.stderr)


def test_missing_key_exits_2_and_writes_nothing(cli, server: FakeGemini,  # type: ignore[no-untyped-def]
                                                isolated_env: Path, monkeypatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("CANVASCAST_GEMINI_BASE_URL", server.url)
    result = cli("images", "one", "--provider", "gemini", "-o", "out")
    assert result.exit_code == 2
    assert "export GEMINI_API_KEY=" in result.stderr
    assert server.requests == [] and not (isolated_env / "out").exists()


# ---------------------------------------------------------------------------------------
# The provider itself


def test_rate_limit_twice_then_success_backs_off(server: FakeGemini) -> None:
    answers = iter([error_reply(429, "RESOURCE_EXHAUSTED", "slow down")] * 2)
    server.reply = lambda body: next(answers, None) or image_reply(body)
    delays: list[float] = []
    provider = GeminiProvider(KEY, base_url=server.url, sleep=delays.append)
    [result] = provider.generate([request()])
    assert result.ok and result.mime_type == "image/png" and result.data is not None
    assert result.data.startswith(b"\x89PNG")
    # The one retry policy: 1 s, 2 s, each plus up to 10 % jitter.
    assert [round(d) for d in delays] == [1, 2] and len(server.requests) == 3
    assert 1.0 <= delays[0] <= 1.1 and 2.0 <= delays[1] <= 2.2


def test_retry_after_header_is_honoured(server: FakeGemini) -> None:
    """Seconds here; an HTTP date works too, read by the same function as everywhere."""
    answers = iter([(429, {"Retry-After": "7"}, {"error": {"code": 429}})])
    server.reply = lambda body: next(answers, None) or image_reply(body)
    delays: list[float] = []
    [result] = GeminiProvider(KEY, base_url=server.url, sleep=delays.append).generate(
        [request()])
    assert result.ok and delays == [7.0]


def test_server_errors_are_retried_then_fail_retryable(server: FakeGemini) -> None:
    server.reply = lambda body: error_reply(503, "UNAVAILABLE", "The model is overloaded.")
    delays: list[float] = []
    provider = GeminiProvider(KEY, base_url=server.url, sleep=delays.append)
    with pytest.raises(ServerError) as info:
        provider.generate([request("a", 0), request("b", 1)])
    assert info.value.retryable and "HTTP 503 UNAVAILABLE" in info.value.message
    assert len(server.requests) == 6 and [round(d) for d in sorted(delays)] == [1, 1, 2, 2]


def test_connection_errors_are_sanitised(server: FakeGemini) -> None:
    """httpx's exceptions carry the request, key header included: none may survive."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    delays: list[float] = []
    provider = GeminiProvider(KEY, base_url=url, sleep=delays.append)
    with pytest.raises(ConnectionFailed) as info:
        provider.generate([request()])
    assert info.value.retryable and f"cannot reach Gemini at {url}" in str(info.value)
    assert [round(d) for d in delays] == [1, 2]
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert chain == [info.value]  # no SDK or httpx exception (with its request) attached
    assert no_key_anywhere(str(info.value), repr(info.value), repr(provider))


def test_timeouts_are_not_retried(server: FakeGemini) -> None:
    release = threading.Event()

    def slow(body: dict[str, Any]) -> Reply:
        release.wait(5)
        return image_reply(body)

    server.reply = slow
    delays: list[float] = []
    provider = GeminiProvider(KEY, base_url=server.url, timeout_s=0.2, sleep=delays.append)
    try:
        with pytest.raises(Timeout):
            provider.generate([request()])
    finally:
        release.set()
    assert delays == [] and len(server.requests) == 1  # a timed-out image may be billed


def test_environment_key_fallback_and_repr(server: FakeGemini, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    monkeypatch.setenv("CANVASCAST_GEMINI_BASE_URL", server.url)
    provider = GeminiProvider.from_environment("gemini-2.5-flash-image")
    assert provider.base_url == server.url and KEY not in repr(provider)
    assert provider.cost_per_image(request()) == pytest.approx(0.039)
    assert GeminiProvider(KEY, "imagen-9").cost_per_image(request()) is None
    [result] = provider.generate([request(ratio="9:16")])
    assert result.details["actual_size"] == {"width": 36, "height": 64}
    assert server.requests[0]["headers"]["x-goog-api-key"] == KEY
    assert server.requests[0]["body"]["generationConfig"]["imageConfig"] == {
        "aspectRatio": "9:16"}
    assert provider.supports_negative_prompt is False


def test_missing_sdk_is_reported_after_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is checked first; then a missing google-genai names the extra to install."""
    monkeypatch.setitem(sys.modules, "google.genai", None)  # makes the import fail
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(InvalidInput, match="GEMINI_API_KEY"):
        GeminiProvider.from_environment("gemini-3.1-flash-image")
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with pytest.raises(InvalidInput, match=r"pip install 'canvascast\[images\]'") as info:
        GeminiProvider.from_environment("gemini-3.1-flash-image")
    assert KEY not in str(info.value)
