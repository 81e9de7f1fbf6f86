"""The HTTP backend at its seam: ``httpx.MockTransport`` plays the job API (or whatever
answers in its place) and the backend maps what comes back.

Every row of the mapping in ``dispatch/http.py``'s docstring is a case below, each with
and without our envelope: which error class, which exit code, whether it is retryable
(which is also whether it counts against the breaker), and how many requests and backoff
sleeps it costs. Sleeps are recorded, never slept; nothing touches the network.
"""

from __future__ import annotations

import email.utils
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from canvascast_cli import errors
from canvascast_cli.dispatch.http import HttpBackend
from canvascast_cli.protocol import (
    Health,
    ImageRequest,
    ImagesPayload,
    JobStatus,
    sha256_file,
)
from canvascast_cli.retry import RETRY_AFTER_MAX, RetryPolicy

ENDPOINT = "https://jobs.example"
TOKEN = "tok-" + "5ec2e7" * 6
JOB = "job-" + "a" * 32
NOW = 1_800_000_000.0  # the backend's clock: Retry-After dates are measured against it
ROUTE = f"GET /v1/jobs/{JOB}"

Answer = Callable[[httpx.Request], httpx.Response]


@dataclass
class Server:
    """A scripted peer: the n-th request gets the n-th answer (the last one repeats)."""

    answers: list[Answer]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers[min(len(self.requests), len(self.answers)) - 1](request)


@dataclass
class Rig:
    server: Server
    backend: HttpBackend
    sleeps: list[float]


def rig(*answers: Answer, attempts: int = 3) -> Rig:
    server = Server(list(answers))
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=attempts, sleep=sleeps.append, rng=random.Random(0))
    backend = HttpBackend(ENDPOINT, TOKEN, retry=policy, transport=httpx.MockTransport(server),
                          clock=lambda: NOW)
    return Rig(server, backend, sleeps)


# -- answers --------------------------------------------------------------------------


def ours(status: int, code: str, message: str = "what the server said",
         headers: dict[str, str] | None = None, **extra: Any) -> Answer:
    """Our envelope carrying an error."""
    body = {"success": False, "data": None,
            "error": {"code": code, "message": message, "retryable": False, **extra}}
    return lambda _r: httpx.Response(status, json=body, headers=headers)


def bare(status: int, body: bytes = b"Not Found", content_type: str = "text/plain",
         headers: dict[str, str] | None = None) -> Answer:
    """An answer from something that is not the job API (a proxy, another app)."""
    return lambda _r: httpx.Response(status, content=body,
                                     headers={"content-type": content_type, **(headers or {})})


def foreign_json(status: int, doc: Any) -> Answer:
    return lambda _r: httpx.Response(status, json=doc)


def ok(data: dict[str, Any] | None = None) -> Answer:
    data = data if data is not None else {"id": JOB, "function": "render_video",
                                          "state": "running"}
    return lambda _r: httpx.Response(200, json={"success": True, "data": data, "error": None})


def raises(kind: type[httpx.HTTPError]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        if issubclass(kind, httpx.RequestError):
            raise kind("injected", request=request)
        raise kind("injected")

    return answer


HTML = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"

# (answer, error class, requests made, exit code): three requests = retried (and counted
# by the breaker), one = the caller's problem or a final answer.
MAPPING = [
    # transport failures, before any answer
    pytest.param(raises(httpx.ConnectError), errors.ConnectionFailed, 3, 1, id="connect"),
    pytest.param(raises(httpx.ReadError), errors.ConnectionFailed, 3, 1, id="reset"),
    pytest.param(raises(httpx.RemoteProtocolError), errors.ConnectionFailed, 3, 1,
                 id="protocol"),
    pytest.param(raises(httpx.ConnectTimeout), errors.Timeout, 3, 1, id="connect-timeout"),
    pytest.param(raises(httpx.ReadTimeout), errors.Timeout, 3, 1, id="read-timeout"),
    pytest.param(raises(httpx.PoolTimeout), errors.Timeout, 3, 1, id="pool-timeout"),
    pytest.param(raises(httpx.UnsupportedProtocol), errors.InvalidInput, 1, 2,
                 id="unsupported-scheme"),
    # our envelope: its own class, whatever the 4xx
    pytest.param(ours(400, "INVALID_INPUT"), errors.InvalidInput, 1, 2, id="400-ours"),
    pytest.param(ours(401, "AUTH"), errors.AuthFailed, 1, 3, id="401-ours"),
    pytest.param(ours(403, "AUTH"), errors.AuthFailed, 1, 3, id="403-ours"),
    pytest.param(ours(404, "NOT_FOUND"), errors.NotFound, 1, 2, id="404-ours"),
    pytest.param(ours(408, "TIMEOUT"), errors.Timeout, 3, 1, id="408-ours"),
    pytest.param(ours(413, "PAYLOAD_TOO_LARGE"), errors.PayloadTooLarge, 1, 2, id="413-ours"),
    pytest.param(ours(422, "INTEGRITY"), errors.IntegrityError, 1, 1, id="422-integrity"),
    pytest.param(ours(422, "IDEMPOTENCY_CONFLICT"), errors.IdempotencyConflict, 1, 2,
                 id="422-idempotency"),
    pytest.param(ours(429, "RATE_LIMITED"), errors.RateLimited, 3, 1, id="429-ours"),
    pytest.param(ours(500, "JOB_FAILED"), errors.ServerError, 3, 1, id="500-ours"),
    pytest.param(ours(503, "MODAL_UNAVAILABLE"), errors.ModalUnavailable, 3, 3, id="503-ours"),
    pytest.param(ours(504, "TIMEOUT"), errors.ModalUnavailable, 3, 3, id="504-ours"),
    pytest.param(ours(200, "INVALID_INPUT"), errors.InvalidInput, 1, 2, id="200-ours-failed"),
    pytest.param(ours(200, "CONTAINER_CRASH", retryable=True), errors.ContainerCrash, 3, 1,
                 id="200-ours-crash"),
    # statuses without our envelope
    pytest.param(bare(301, b"", headers={"location": "https://elsewhere.example/"}),
                 errors.UnexpectedResponse, 1, 2, id="301"),
    pytest.param(bare(307, b"", headers={"location": "/login"}), errors.UnexpectedResponse,
                 1, 2, id="307"),
    pytest.param(bare(400), errors.UnexpectedResponse, 1, 2, id="400-bare"),
    pytest.param(bare(401), errors.AuthFailed, 1, 3, id="401-bare"),
    pytest.param(bare(403, HTML, "text/html"), errors.AuthFailed, 1, 3, id="403-bare"),
    pytest.param(bare(404), errors.UnexpectedResponse, 1, 2, id="404-bare"),
    pytest.param(bare(404, HTML, "text/html"), errors.UnexpectedResponse, 1, 2,
                 id="404-html"),
    pytest.param(foreign_json(404, {"detail": "Not Found"}), errors.UnexpectedResponse, 1, 2,
                 id="404-another-apps-json"),
    pytest.param(foreign_json(404, {"error": {"message": "no such route"}}),
                 errors.UnexpectedResponse, 1, 2, id="404-another-apps-error-document"),
    pytest.param(foreign_json(404, {"error": "not found"}), errors.UnexpectedResponse, 1, 2,
                 id="404-error-string"),
    pytest.param(bare(405), errors.UnexpectedResponse, 1, 2, id="405-bare"),
    pytest.param(bare(408), errors.Timeout, 3, 1, id="408-bare"),
    pytest.param(bare(409), errors.UnexpectedResponse, 1, 2, id="409-bare"),
    pytest.param(bare(410), errors.UnexpectedResponse, 1, 2, id="410-bare"),
    pytest.param(bare(413), errors.PayloadTooLarge, 1, 2, id="413-bare"),
    pytest.param(bare(415), errors.UnexpectedResponse, 1, 2, id="415-bare"),
    pytest.param(bare(422), errors.UnexpectedResponse, 1, 2, id="422-bare"),
    pytest.param(bare(429), errors.RateLimited, 3, 1, id="429-bare"),
    pytest.param(bare(451), errors.UnexpectedResponse, 1, 2, id="451-bare"),
    pytest.param(bare(500, HTML, "text/html"), errors.ServerError, 3, 1, id="500-bare"),
    pytest.param(bare(501), errors.ServerError, 3, 1, id="501-bare"),
    pytest.param(bare(502, HTML, "text/html"), errors.ModalUnavailable, 3, 3, id="502-bare"),
    pytest.param(bare(503), errors.ModalUnavailable, 3, 3, id="503-bare"),
    pytest.param(bare(504), errors.ModalUnavailable, 3, 3, id="504-bare"),
    # a 2xx that is not our envelope (a proxy's page, a wrong URL)
    pytest.param(bare(200, HTML, "text/html"), errors.UnexpectedResponse, 1, 2,
                 id="200-html"),
    pytest.param(foreign_json(200, {"id": "x"}), errors.UnexpectedResponse, 1, 2,
                 id="200-json-not-envelope"),
    pytest.param(foreign_json(200, [1, 2, 3]), errors.UnexpectedResponse, 1, 2,
                 id="200-json-list"),
    pytest.param(bare(200, b"\xff\xfe\x00garbage", "application/octet-stream"),
                 errors.UnexpectedResponse, 1, 2, id="200-binary"),
    pytest.param(bare(204, b""), errors.UnexpectedResponse, 1, 2, id="204-empty"),
    pytest.param(foreign_json(200, {"success": False, "error": "quota"}),
                 errors.UnexpectedResponse, 1, 2, id="200-failure-not-ours"),
    pytest.param(ok({"state": "exploded"}), errors.UnexpectedResponse, 1, 2,
                 id="200-envelope-wrong-model"),
]


@pytest.mark.parametrize(("answer", "cls", "requests", "exit_code"), MAPPING)
def test_the_whole_mapping(answer: Answer, cls: type[errors.CanvasCastError], requests: int,
                           exit_code: int) -> None:
    """Guards: a plain 4xx, a bare 404, an HTML 200 or JSON that is not our envelope
    used to be a server error, retried three times, counted by the breaker and reported
    as exit 3. Each answer maps to one class; only transient ones are retried."""
    r = rig(answer)
    with pytest.raises(errors.CanvasCastError) as caught:
        r.backend.status(JOB)
    error = caught.value
    assert type(error) is cls, f"{type(error).__name__}: {error}"
    assert len(r.server.requests) == requests
    assert len(r.sleeps) == requests - 1
    assert error.exit_code == exit_code
    # The breaker counts exactly what is retried (errors.is_retryable feeds both).
    assert errors.is_retryable(error) is (requests > 1)
    assert TOKEN not in str(error)
    if cls is errors.UnexpectedResponse:
        assert ENDPOINT in error.message and ROUTE in error.message, error.message
        status = r.server.answers[0](r.server.requests[0]).status_code
        if status >= 300:
            assert f"HTTP {status}" in error.message, error.message
        # The likely fix, named: the base URL, or a compatible server.
        assert "without /v1" in error.message or "compatible version" in error.message


@pytest.mark.parametrize(("answer", "said"), [
    (ours(404, "NOT_FOUND", "job job-x: no such job"), "no such job"),
    (ours(500, "SERVER_ERROR", "the disk is on fire"), "the disk is on fire"),
    (ours(413, "PAYLOAD_TOO_LARGE", "over the 2 GiB cap"), "over the 2 GiB cap"),
], ids=["404", "500", "413"])
def test_the_servers_own_message_reaches_the_user(answer: Answer, said: str) -> None:
    r = rig(answer)
    with pytest.raises(errors.CanvasCastError) as caught:
        r.backend.status(JOB)
    assert said in caught.value.message and ROUTE in caught.value.message


def test_401_without_our_envelope_names_the_token_setting() -> None:
    r = rig(bare(401))
    with pytest.raises(errors.AuthFailed) as caught:
        r.backend.status(JOB)
    assert "MODAL_TOKEN" in caught.value.message and "HTTP 401" in caught.value.message


def test_transient_failures_then_success() -> None:
    """5xx, 408, resets: retried with the policy's backoff (1 s, 2 s, +<=10 % jitter)."""
    r = rig(bare(502, HTML, "text/html"), raises(httpx.ReadError), ok())
    status = r.backend.status(JOB)
    assert isinstance(status, JobStatus) and status.state == "running"
    assert len(r.server.requests) == 3
    assert 1.0 <= r.sleeps[0] <= 1.1 and 2.0 <= r.sleeps[1] <= 2.2
    again = rig(bare(408), ok())
    assert again.backend.status(JOB).id == JOB and len(again.server.requests) == 2


# -- 429 and Retry-After --------------------------------------------------------------


def http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


@pytest.mark.parametrize(("answer", "waits"), [
    (bare(429, headers={"Retry-After": "7"}), [7.0, 7.0]),
    (ours(429, "RATE_LIMITED", headers={"Retry-After": "7"}), [7.0, 7.0]),
    (bare(429, headers={"Retry-After": http_date(NOW + 42)}), [42.0, 42.0]),
    (bare(429, headers={"Retry-After": "600"}), [RETRY_AFTER_MAX] * 2),
    (bare(429, headers={"Retry-After": http_date(NOW + 86400)}), [RETRY_AFTER_MAX] * 2),
    (ours(429, "RATE_LIMITED", retry_after=5), [5.0, 5.0]),  # the body's hint
], ids=["seconds", "seconds-ours", "http-date", "capped", "date-capped", "body-hint"])
def test_429_waits_as_the_server_asks(answer: Answer, waits: list[float]) -> None:
    r = rig(answer, answer, ok())
    assert r.backend.status(JOB).id == JOB
    assert len(r.server.requests) == 3
    assert r.sleeps == pytest.approx(waits)


def test_429_without_a_usable_hint_backs_off_as_usual() -> None:
    for value in ("soon", http_date(NOW - 30)):
        r = rig(bare(429, headers={"Retry-After": value}), ok())
        r.backend.status(JOB)
        assert len(r.sleeps) == 1 and 1.0 <= r.sleeps[0] <= 1.1, (value, r.sleeps)


def test_429_keeps_its_hint_when_retries_run_out() -> None:
    r = rig(bare(429, headers={"Retry-After": "9"}))
    with pytest.raises(errors.RateLimited) as caught:
        r.backend.status(JOB)
    assert caught.value.retry_after == 9 and caught.value.to_dict()["retry_after"] == 9


# -- requests: headers, ids, idempotency ----------------------------------------------


def test_token_in_a_header_only_and_never_in_a_message() -> None:
    r = rig(bare(404))
    with pytest.raises(errors.UnexpectedResponse) as caught:
        r.backend.status(JOB, wait=20)
    request = r.server.requests[0]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"].startswith("canvascast/")
    assert float(request.url.params["wait"]) == 20
    assert TOKEN not in str(request.url) and TOKEN not in str(caught.value)
    assert TOKEN not in repr(r.backend) and ENDPOINT in repr(r.backend)


@pytest.mark.parametrize("bad", ["../blobs/" + "a" * 64, "../../v1/health", "",
                                 JOB + "/../x", "job-1", "fc-a/b", "fc-a%2Fb", JOB + "\n"])
def test_a_job_id_is_checked_before_any_request(bad: str) -> None:
    """Guards: the id went into the URL unescaped (``../blobs/<sha>`` reached the blob
    route). A string no server issues is NOT_FOUND without a request."""
    r = rig(ok())
    for call in (r.backend.status, r.backend.cancel):
        with pytest.raises(errors.NotFound):
            call(bad)
    assert r.server.requests == []


def test_good_ids_are_one_path_segment() -> None:
    r = rig(ok(), ok({"id": "fc-AbC123", "state": "cancelled"}))
    r.backend.status(JOB)
    assert r.backend.cancel("fc-AbC123").state == "cancelled"
    assert [(q.method, q.url.path) for q in r.server.requests] == [
        ("GET", f"/v1/jobs/{JOB}"), ("DELETE", "/v1/jobs/fc-AbC123")]


def images_payload() -> ImagesPayload:
    return ImagesPayload(provider="placeholder", model="placeholder-card-v1", requests=[
        ImageRequest(index=0, prompt="a kite", width=64, height=64, aspect_ratio="1:1",
                     seed=1)])


def test_a_retried_submit_keeps_its_idempotency_key() -> None:
    """A lost reply must never start a second job: every retry of one submission sends
    the same key; the next submission another."""
    submitted = ok({"id": JOB, "function": "generate_images", "state": "queued"})
    r = rig(bare(503), raises(httpx.ReadTimeout), submitted)
    assert r.backend.submit("generate_images", images_payload()) == JOB
    keys = [q.headers["idempotency-key"] for q in r.server.requests]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert json.loads(r.server.requests[-1].content)["provider"] == "placeholder"
    r.backend.submit("generate_images", images_payload())
    assert r.server.requests[-1].headers["idempotency-key"] != keys[0]


def test_an_unknown_function_is_refused_before_any_request() -> None:
    r = rig(ok())
    with pytest.raises(errors.InvalidInput):
        r.backend.submit("launch_rockets", images_payload())
    assert r.server.requests == []


def test_missing_asks_only_when_there_is_something_to_ask() -> None:
    sha = "b" * 64
    r = rig(ok({"missing": [sha]}))
    assert r.backend.missing([]) == [] and r.server.requests == []
    assert r.backend.missing([sha, "c" * 64]) == [sha]
    assert json.loads(r.server.requests[0].content) == {"sha256": [sha, "c" * 64]}


def test_health_goes_through_the_mapping() -> None:
    """Guards: health() read the reply raw (an httpx exception or a JSONDecodeError for
    any failure, never one of ours)."""
    assert rig(ok({"status": "ok", "functions": ["render_video"]})).backend.health() == \
        Health(functions=["render_video"])
    for answer, cls in ((raises(httpx.ConnectError), errors.ConnectionFailed),
                        (bare(200, HTML, "text/html"), errors.UnexpectedResponse),
                        (bare(404), errors.UnexpectedResponse)):
        with pytest.raises(cls):
            rig(answer).backend.health()


# -- blobs: uploads and downloads -------------------------------------------------------


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, str, bytes]:
    data = bytes(range(256)) * 4096  # 1 MiB: more than one chunk each way
    path = tmp_path / "in.bin"
    path.write_bytes(data + b"tail")
    sha, _size = sha256_file(path)
    return path, sha, path.read_bytes()


def stored(sha: str, size: int) -> Answer:
    return ok({"sha256": sha, "size": size, "stored": True})


def test_an_upload_is_streamed_again_in_full_when_retried(
        blob: tuple[Path, str, bytes]) -> None:
    path, sha, data = blob
    r = rig(bare(503), stored(sha, len(data)))
    seen: list[int] = []
    assert r.backend.upload(sha, path, seen.append) == len(data)
    assert [q.method for q in r.server.requests] == ["PUT", "PUT"]
    assert r.server.requests[1].url.path == f"/v1/blobs/{sha}"
    assert r.server.requests[1].content == data
    assert r.server.requests[1].headers["content-length"] == str(len(data))
    assert seen[-1] == len(data)


def test_an_upload_too_large_is_one_request(blob: tuple[Path, str, bytes]) -> None:
    path, sha, _data = blob
    for answer in (bare(413), ours(413, "PAYLOAD_TOO_LARGE", "over 2 GiB")):
        r = rig(answer)
        with pytest.raises(errors.PayloadTooLarge):
            r.backend.upload(sha, path)
        assert len(r.server.requests) == 1 and r.sleeps == []


class Broken(httpx.SyncByteStream):
    """A body that breaks off after its first chunk (a reset mid-body)."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise httpx.ReadError("connection reset by peer")


def test_downloads(tmp_path: Path, blob: tuple[Path, str, bytes]) -> None:
    _path, sha, data = blob
    into = tmp_path / "out.bin"

    def whole(_r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=data)

    def half(_r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Broken(data[: len(data) // 2]))

    # A reset mid-body is fetched again from the start; the file is whole.
    r = rig(half, whole)
    assert r.backend.download(sha, into) == len(data) and into.read_bytes() == data
    assert len(r.server.requests) == 2 and len(r.sleeps) == 1
    assert r.server.requests[0].url.path == f"/v1/blobs/{sha}"
    # Bytes that do not hash to the sha: INTEGRITY, not retried here (the dispatcher
    # fetches once more).
    r = rig(lambda _r: httpx.Response(200, content=data[:-1] + b"X"))
    with pytest.raises(errors.IntegrityError):
        r.backend.download(sha, into)
    assert len(r.server.requests) == 1
    # A status on the blob route maps as every other route does.
    for answer, cls, count in ((bare(404), errors.UnexpectedResponse, 1),
                               (ours(404, "NOT_FOUND"), errors.NotFound, 1),
                               (bare(503), errors.ModalUnavailable, 3),
                               (raises(httpx.ConnectError), errors.ConnectionFailed, 3)):
        r = rig(answer)
        with pytest.raises(cls) as caught:
            r.backend.download(sha, into)
        assert len(r.server.requests) == count, answer
        assert TOKEN not in str(caught.value)
    with pytest.raises(errors.InvalidInput):
        rig(whole).backend.download("../" + sha, into)


# -- net.redact: no URL's user-info in any message -----------------------------------


@pytest.mark.parametrize(("text", "shown"), [
    ("http://host.example/x", "http://host.example/x"),
    ("http://user:PW-s3cr3t@host.example", "http://host.example"),
    ("https://PW-s3cr3t@host.example:8443/a?b=1#c", "https://host.example:8443/a?b=1#c"),
    ("http://user:PW-s3cr3t@[::1]:9/x", "http://[::1]:9/x"),
    ("http://user:TO@KEN@host.example/x", "http://host.example/x"),  # '@' in the password
    ("http://user:PW-s3cr3t@host.example:abc/", "http://host.example:abc/"),  # a bad port
    ("ftp://user:PW-s3cr3t@host.example", "ftp://host.example"),
    ("user:PW-s3cr3t@host.example", "host.example"),  # no scheme
    # messages, not URLs: every URL in them, and the route after one
    ("http://user:PW-s3cr3t@host.example: POST /v1/jobs/render_video",
     "http://host.example: POST /v1/jobs/render_video"),
    ("cannot reach http://a:PW-s3cr3t@one.example or https://PW-s3cr3t@two.example/x",
     "cannot reach http://one.example or https://two.example/x"),
    # an '@' that is not user-info stays
    ("https://cdn.example/img@2x.png", "https://cdn.example/img@2x.png"),
    ("http://host.example/?mail=a@b.example", "http://host.example/?mail=a@b.example"),
    ("http://[::1", "http://[::1"),
    ("", ""),
])
def test_redact(text: str, shown: str) -> None:
    """Guards: ``redact`` raised ValueError on a URL with user-info and a port that is
    not a number, and on the ``<url>: <route>`` texts the mapping passes it (so the
    mapping itself crashed); a URL without a scheme kept its secret."""
    from canvascast_cli.net import redact

    assert redact(text) == shown
    assert "PW-s3cr3t" not in redact(text)


def test_errors_never_show_an_endpoints_user_info() -> None:
    """A backend built with user-info in its endpoint (the CLI refuses one) still never
    prints it: the mapping redacts every message it makes."""
    secret_endpoint = "http://user:PW-s3cr3t@jobs.example"
    for answer in (raises(httpx.ConnectError), raises(httpx.ReadTimeout), bare(404),
                   bare(503), bare(401), bare(200, HTML, "text/html")):
        backend = HttpBackend(secret_endpoint, TOKEN, transport=httpx.MockTransport(
            Server([answer])), retry=RetryPolicy(attempts=1, sleep=lambda _s: None))
        with pytest.raises(errors.CanvasCastError) as caught:
            backend.status(JOB)
        assert "PW-s3cr3t" not in str(caught.value) and "jobs.example" in str(caught.value)
