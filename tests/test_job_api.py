"""The job API in-process: the FastAPI app over a real blob store and a scripted runner,
its parts (Idempotency-Key, upload caps, the spool budget, retention, the public-only
transport) and its OpenAPI document.

Each test names, in its docstring, the defect of the fault run it guards against. The
same app behind a real `canvascast serve` is in ``test_serve.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canvascast_cli.errors import NotFound
from canvascast_cli.protocol import (
    API_VERSION,
    FUNCTIONS,
    JobStatus,
    Payload,
    check_job_id,
)
from canvascast_cli.server.app import create_app
from canvascast_cli.server.blobs import BlobStore
from canvascast_cli.server.idempotency import MemoryKeys
from canvascast_cli.server.limits import Janitor, Limits
from tests.helpers import ASGIBridge

TOKEN = "tok-" + "a5" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "http://api.test"


class ScriptedRunner:
    """A ``Runner`` that records submits (jobs stay queued); ``on_submit`` runs inside
    each submit (to hold it there, forcing a race)."""

    def __init__(self, on_submit: Callable[[], None] | None = None) -> None:
        self.on_submit = on_submit
        self.calls: list[tuple[str, Payload]] = []
        self.jobs: dict[str, JobStatus] = {}
        self.live: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, function: str, payload: Payload) -> str:
        with self._lock:
            self.calls.append((function, payload))
            job_id = f"job-{len(self.calls):032x}"
            self.jobs[job_id] = JobStatus(id=job_id, function=function, state="queued")
        if self.on_submit is not None:
            self.on_submit()
        return job_id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        job = self.jobs.get(check_job_id(job_id))
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> JobStatus:
        return self.status(job_id)

    def live_blobs(self) -> set[str]:
        return set(self.live)

    def close(self) -> None:
        pass


def make_app(root: Path, runner: ScriptedRunner | None = None, **options: Any) -> Any:
    return create_app(BlobStore(root), runner or ScriptedRunner(), TOKEN, **options)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    """A synchronous client of a fresh app (``client.app``, ``client.runner``)."""
    runner = ScriptedRunner()
    app = make_app(tmp_path / "store", runner)
    with httpx.Client(transport=ASGIBridge(app), base_url=BASE,  # type: ignore[arg-type]
                      headers=AUTH) as c:
        c.app, c.runner = app, runner  # type: ignore[attr-defined]
        yield c


def run_async(app: Any, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    """``scenario(client)`` on an event loop, requests served by ``app`` in-process —
    concurrently when the scenario gathers them (``httpx.ASGITransport`` streams a
    request body to the app chunk by chunk, as a socket would)."""

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE,
                                     headers=AUTH) as c:
            return await scenario(c)

    return asyncio.run(main())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def images_payload(prompt: str = "a red kite") -> dict[str, Any]:
    return {"provider": "placeholder", "model": "placeholder", "requests": [
        {"index": 0, "prompt": prompt, "width": 64, "height": 64, "aspect_ratio": "1:1",
         "seed": 1}]}


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# ---------------------------------------------------------------------------------------
# Idempotency-Key: one key, one job


class CountingKeys(MemoryKeys):
    """MemoryKeys that count the requests that have reached them."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = 0
        self.changed = threading.Condition()

    def submit(self, key: str, fingerprint: str, create: Callable[[], str]) -> str:
        with self.changed:
            self.arrived += 1
            self.changed.notify_all()
        return super().submit(key, fingerprint, create)


def test_concurrent_submits_with_one_key_make_one_job(tmp_path: Path) -> None:
    """Guards: six concurrent POSTs with one Idempotency-Key created up to six jobs.

    The first submit is held inside ``runner.submit`` until all six requests have reached
    the key store, so a check-then-create without a lock would let every one of them in."""
    keys = CountingKeys()

    def hold() -> None:
        with keys.changed:
            keys.changed.wait_for(lambda: keys.arrived >= 6, timeout=20)

    runner = ScriptedRunner(on_submit=hold)
    app = make_app(tmp_path / "store", runner, keys=keys)

    async def six(c: httpx.AsyncClient) -> list[httpx.Response]:
        return await asyncio.gather(*[
            c.post("/v1/jobs/generate_images", json=images_payload(),
                   headers={"Idempotency-Key": "k-123"}) for _ in range(6)])

    replies = run_async(app, six)
    assert keys.arrived == 6
    assert [r.status_code for r in replies] == [202] * 6
    assert len({r.json()["data"]["id"] for r in replies}) == 1
    assert len(runner.calls) == 1


def test_a_reused_key_with_another_body_or_function_is_422(client: httpx.Client) -> None:
    """Guards: a reused key with a different body or function returned the first job
    (202, echoing the new function name) instead of refusing the request."""
    key = {"Idempotency-Key": "same-key"}
    first = client.post("/v1/jobs/generate_images", json=images_payload(), headers=key)
    assert first.status_code == 202
    again = client.post("/v1/jobs/generate_images", json=images_payload(), headers=key)
    assert again.status_code == 202
    assert again.json()["data"]["id"] == first.json()["data"]["id"]
    other_body = client.post("/v1/jobs/generate_images", json=images_payload("a map"),
                             headers=key)
    assert other_body.status_code == 422 and code(other_body) == "IDEMPOTENCY_CONFLICT"
    audio = b"RIFF" + b"\0" * 60
    assert client.put(f"/v1/blobs/{sha(audio)}", content=audio).status_code == 200
    other_function = client.post("/v1/jobs/transcribe_audio", headers=key,
                                 json={"audio": f"blob:{sha(audio)}.wav"})
    assert other_function.status_code == 422
    assert code(other_function) == "IDEMPOTENCY_CONFLICT"
    assert "render_video" not in other_function.text
    assert len(client.runner.calls) == 1  # type: ignore[attr-defined]
    # Without a key, or with a new one, a submit is a new job.
    fresh = client.post("/v1/jobs/generate_images", json=images_payload("a map"),
                        headers={"Idempotency-Key": "new-key"})
    assert fresh.status_code == 202 and fresh.json()["data"]["id"] != first.json()["data"]["id"]


def test_a_bad_idempotency_key_is_400(client: httpx.Client) -> None:
    """A key the server would not keep (too long) is the caller's mistake, never a 500."""
    long_key = client.post("/v1/jobs/generate_images", json=images_payload(),
                           headers={"Idempotency-Key": "k" * 201})
    assert long_key.status_code == 400 and code(long_key) == "INVALID_INPUT"


class TableRunner(ScriptedRunner):
    """A ScriptedRunner whose jobs live in the real ``JobTable`` (so status waits), and
    which counts the requests waiting in it."""

    def __init__(self) -> None:
        from canvascast_cli.server.runner import JobTable

        super().__init__()
        self.table = JobTable()
        self.waiting = 0

    def submit(self, function: str, payload: Payload) -> str:
        from canvascast_cli.server.runner import Job

        job_id = super().submit(function, payload)
        self.table.add(Job(id=job_id, function=function, payload=payload))
        return job_id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        job = self.table.get(job_id)
        with self._lock:
            self.waiting += 1
        return self.table.wait(job, wait)


def test_long_polls_never_starve_the_other_routes(tmp_path: Path) -> None:
    """Found by review: each ``GET /v1/jobs/{id}?wait=`` held one of the 40 threads every
    route shares for up to 25 s, so 40 clients waiting on their jobs (or one hostile
    client) stalled uploads and submits for everyone. Waits have threads of their own."""
    runner = TableRunner()
    app = make_app(tmp_path / "store", runner)

    async def scenario(c: httpx.AsyncClient) -> None:
        job_id = (await c.post("/v1/jobs/generate_images", json=images_payload())
                  ).json()["data"]["id"]
        waits = [asyncio.create_task(c.get(f"/v1/jobs/{job_id}", params={"wait": 25}))
                 for _ in range(45)]
        end = time.monotonic() + 20
        while runner.waiting < 40 and time.monotonic() < end:  # all of the shared pool
            await asyncio.sleep(0.01)
        answer = await asyncio.wait_for(c.post("/v1/blobs/missing",
                                               json={"sha256": ["a" * 64]}), 15)
        assert answer.status_code == 200
        submitted = await asyncio.wait_for(c.post("/v1/jobs/generate_images",
                                                  json=images_payload("b")), 15)
        assert submitted.status_code == 202
        assert not any(w.done() for w in waits)  # they were still waiting meanwhile
        runner.table.update(runner.table.get(job_id), state="running")  # a change
        replies = await asyncio.wait_for(asyncio.gather(*waits), 20)
        assert {r.json()["data"]["state"] for r in replies} == {"running"}

    run_async(app, scenario)


# ---------------------------------------------------------------------------------------
# Uploads: the one-blob cap, the spool budget, the name


def test_the_cap_holds_for_a_blob_already_stored(tmp_path: Path) -> None:
    """Guards: an upload to an already stored blob was drained without limit (6.8 GB
    accepted with 200). Over the cap is 413 with and without Content-Length, and the stored
    bytes are untouched."""
    app = make_app(tmp_path / "store", limits=Limits(max_blob_bytes=1000))
    data = b"x" * 100
    name = f"/v1/blobs/{sha(data)}"

    async def chunked(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"y" * 256

    async def scenario(c: httpx.AsyncClient) -> None:
        stored = await c.put(name, content=data)
        assert stored.status_code == 200 and stored.json()["data"]["stored"] is True
        again = await c.put(name, content=data)
        assert again.status_code == 200 and again.json()["data"]["stored"] is False
        declared = await c.put(name, content=b"y" * 1001)
        assert declared.status_code == 413 and code(declared) == "PAYLOAD_TOO_LARGE"
        streamed = await c.put(name, content=chunked(8))  # 2,048 bytes, no Content-Length
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413 and code(streamed) == "PAYLOAD_TOO_LARGE"
        # A new blob over the cap, streamed, is refused the same way.
        fresh = await c.put(f"/v1/blobs/{'1' * 64}", content=chunked(8))
        assert fresh.status_code == 413
        back = await c.get(name)
        assert back.status_code == 200 and back.content == data

    run_async(app, scenario)
    assert app.state.spool.used == 0
    assert list((tmp_path / "store" / "tmp").iterdir()) == []  # nothing left spooled


def test_uploads_together_are_held_to_the_spool_budget(tmp_path: Path) -> None:
    """Guards: uploads were capped one by one but not in total (three endless uploads held
    2.9 GB of spool). While one upload holds most of the budget, another is 429
    RATE_LIMITED with a Retry-After; once it ends the budget is free again."""
    app = make_app(tmp_path / "store",
                   limits=Limits(max_blob_bytes=1000, max_spool_bytes=1500))
    first, second = b"a" * 1000, b"b" * 1000

    async def scenario(c: httpx.AsyncClient) -> None:
        halfway, release = asyncio.Event(), asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            yield first[:500]
            halfway.set()
            await release.wait()
            yield first[500:]

        held = asyncio.create_task(c.put(f"/v1/blobs/{sha(first)}", content=slow(),
                                         headers={"Content-Length": "1000"}))
        await asyncio.wait_for(halfway.wait(), 20)
        refused = await c.put(f"/v1/blobs/{sha(second)}", content=second)
        assert refused.status_code == 429 and code(refused) == "RATE_LIMITED"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["retryable"] is True

        async def endless() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            for _ in range(4):
                yield b"c" * 250

        counted = await c.put(f"/v1/blobs/{sha(b'c' * 1000)}", content=endless())
        assert counted.status_code == 429
        release.set()
        done = await held
        assert done.status_code == 200 and done.json()["data"]["size"] == 1000
        assert app.state.spool.used == 0
        after = await c.put(f"/v1/blobs/{sha(second)}", content=second)
        assert after.status_code == 200
        assert (await c.put(f"/v1/blobs/{sha(b'c' * 1000)}", content=endless())
                ).status_code == 200

    run_async(app, scenario)
    assert app.state.spool.used == 0


@pytest.mark.parametrize("suffix", ["%0A", "%0a", "%0D%0A", "%20", "%00", "0"])
def test_a_blob_name_with_anything_after_the_hash_is_400(client: httpx.Client,
                                                         suffix: str) -> None:
    """Guards: the hash pattern accepted a trailing newline (``PUT /v1/blobs/<sha>%0A``
    was 422, a hash mismatch, instead of 400)."""
    data = b"abc"
    for method in ("PUT", "GET"):
        response = client.request(method, f"/v1/blobs/{sha(data)}{suffix}",
                                  content=data if method == "PUT" else None)
        assert response.status_code == 400, (method, response.text)
        assert code(response) == "INVALID_INPUT"
    job = client.get(f"/v1/jobs/job-{'0' * 32}{suffix}")
    assert job.status_code in (400, 404) and job.json()["success"] is False


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1/a.jpg", "http://a b/x.jpg",
                                 "http://:80/x.jpg", "https://", "http://x:99999/a.jpg",
                                 "http://x:0/a.jpg"])
def test_an_image_url_that_does_not_parse_is_400_at_submit(client: httpx.Client,
                                                           url: str) -> None:
    """Found while fuzzing: an image URL that does not parse was accepted (202) and its
    job failed later as 'ValueError: Invalid IPv6 URL' (JOB_FAILED): the client's mistake,
    said at submit."""
    response = client.post("/v1/jobs/render_video", json={"timeline": {
        "scenes": [{"image": url, "duration": 1}]}})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == [
        f"scenes[0].image: {url!r} is not a valid http(s) URL"]
    assert client.runner.calls == []  # type: ignore[attr-defined]
    fine = client.post("/v1/jobs/render_video", json={"timeline": {
        "scenes": [{"image": "https://example.com:8443/a%20b.jpg?x=1", "duration": 1}]}})
    assert fine.status_code == 202


# ---------------------------------------------------------------------------------------
# Models are names


def test_a_transcribe_model_is_a_name_never_a_path(client: httpx.Client) -> None:
    """Guards: a transcribe job's ``model`` was resolved as a path on the server (``/etc``
    -> 'no model.bin', ``/nonexistent`` -> 'does not exist'): the answer revealed which
    paths exist. Every path gets the same 400, which names only the allowed names."""
    audio = b"RIFF" + b"\1" * 60
    client.put(f"/v1/blobs/{sha(audio)}", content=audio)
    answers = set()
    for model in ["/etc", "../x", "/nonexistent", "~/models/x", "tiny.en/../../etc", "/"]:
        response = client.post("/v1/jobs/transcribe_audio",
                               json={"audio": f"blob:{sha(audio)}.wav", "model": model})
        assert response.status_code == 400 and code(response) == "INVALID_INPUT"
        error = response.json()["error"]
        answers.add(" | ".join([error["message"], *error["details"]]).replace(
            repr(model), "<model>"))
    assert len(answers) == 1, answers
    (answer,) = answers
    assert "<model> is not a faster-whisper model name" in answer
    assert "allowed: tiny.en" in answer
    assert "exist" not in answer and "model.bin" not in answer
    assert client.runner.calls == []  # type: ignore[attr-defined]


def test_a_transcribe_model_name_is_accepted(client: httpx.Client) -> None:
    audio = b"RIFF" + b"\2" * 60
    client.put(f"/v1/blobs/{sha(audio)}", content=audio)
    response = client.post("/v1/jobs/transcribe_audio",
                           json={"audio": f"blob:{sha(audio)}.wav", "model": "tiny.en"})
    assert response.status_code == 202, response.text
    assert client.runner.calls[0][1].model == "tiny.en"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# Server-side fetches: public addresses only (net.public_only)


class Fetches:
    """An inner transport that records what reached it; ``routes``: host -> response."""

    def __init__(self, routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> None:
        self.routes = routes
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.routes[request.url.host](request)


DNS = {"example.com": ["93.184.216.34"], "sneaky.example": ["127.0.0.1"],
       "mixed.example": ["93.184.216.34", "10.1.2.3"], "inside.example": ["10.0.0.5"],
       "v6.example": ["2606:2800:220:1:248:1893:25c8:1946"]}


def resolver(calls: list[str] | None = None) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host in DNS:
            return DNS[host]
        import ipaddress

        ipaddress.ip_address(host)  # a literal resolves to itself; a name we lack: error
        return [host]

    return resolve


def public_client(fetches: Fetches, calls: list[str] | None = None) -> httpx.Client:
    from canvascast_cli.net import public_only

    return httpx.Client(transport=public_only(httpx.MockTransport(fetches),
                                              resolve=resolver(calls)),
                        follow_redirects=True)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.jpg", "http://127.1.2.3:8080/a.jpg", "http://10.0.0.1/a.jpg",
    "http://192.168.1.1/a.jpg", "http://172.16.0.1/", "http://169.254.169.254/latest/",
    "http://[::1]/a.jpg", "http://[::ffff:127.0.0.1]/a.jpg", "http://[::ffff:10.0.0.1]/",
    "http://[fe80::1]/", "http://[fc00::1]/", "http://0.0.0.0/", "http://100.64.0.1/",
    "http://sneaky.example/a.jpg", "http://mixed.example/a.jpg", "https://inside.example/",
    "http://224.0.0.1/"])
def test_public_only_refuses_private_addresses(url: str) -> None:
    """Guards: the worker downloaded loopback URLs given as image inputs (server-side
    request forgery). Literals, names resolving to them, and a name with one private
    address among public ones are refused before any connection."""
    from canvascast_cli.net import PrivateAddress

    fetches = Fetches({})
    with public_client(fetches) as c, pytest.raises(PrivateAddress) as refused:
        c.get(url)
    assert fetches.seen == []
    assert refused.value.code == "INVALID_INPUT"
    assert "not a public address" in refused.value.message


def test_public_only_pins_the_checked_address_and_keeps_the_host() -> None:
    """The connection goes to the address that was checked (no second lookup a rebinding
    DNS could answer differently); Host header and TLS name stay the original."""
    fetches = Fetches({"93.184.216.34": lambda r: httpx.Response(200, content=b"jpeg"),
                       "2606:2800:220:1:248:1893:25c8:1946":
                           lambda r: httpx.Response(200, content=b"v6")})
    calls: list[str] = []
    with public_client(fetches, calls) as c:
        plain = c.get("http://example.com:8080/a.jpg?x=1")
        secure = c.get("https://example.com/b.jpg")
        v6 = c.get("https://v6.example/c.jpg")
    assert plain.content == b"jpeg" and v6.content == b"v6"
    first, second, third = fetches.seen
    assert (first.url.host, first.url.port, first.url.path, first.url.query) == (
        "93.184.216.34", 8080, "/a.jpg", b"x=1")
    assert first.headers["host"] == "example.com:8080"
    assert second.url.scheme == "https" and second.headers["host"] == "example.com"
    assert second.extensions["sni_hostname"] == "example.com"
    assert third.extensions["sni_hostname"] == "v6.example"
    assert calls == ["example.com", "example.com", "v6.example"]  # once per request
    assert secure.status_code == 200


@pytest.mark.parametrize("location", ["http://inside.example/x.jpg", "http://127.0.0.1/",
                                      "http://[::1]:8000/", "http://169.254.169.254/"])
def test_public_only_checks_every_redirect(location: str) -> None:
    """A public host that redirects to a private one: the redirected request is refused."""
    from canvascast_cli.net import PrivateAddress

    fetches = Fetches({"93.184.216.34": lambda r: httpx.Response(
        302, headers={"Location": location})})
    with public_client(fetches) as c, pytest.raises(PrivateAddress):
        c.get("http://example.com/start.jpg")
    assert [r.url.host for r in fetches.seen] == ["93.184.216.34"]


def test_public_only_follows_a_relative_redirect_on_the_same_host() -> None:
    fetches = Fetches({"93.184.216.34": lambda r: (
        httpx.Response(301, headers={"Location": "/moved.jpg"}) if r.url.path == "/a.jpg"
        else httpx.Response(200, content=r.headers["host"].encode()))})
    with public_client(fetches) as c:
        moved = c.get("http://example.com/a.jpg")
    assert moved.status_code == 200 and moved.content == b"example.com"
    assert [r.url.path for r in fetches.seen] == ["/a.jpg", "/moved.jpg"]


def test_an_unresolvable_name_is_a_connection_error() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    from canvascast_cli.net import public_only

    with httpx.Client(transport=public_only(httpx.MockTransport(lambda r: httpx.Response(200)),
                                            resolve=fail)) as c, pytest.raises(httpx.ConnectError):
        c.get("http://nowhere.invalid/")


# ---------------------------------------------------------------------------------------
# Retention


def aged_blobs(store: BlobStore, now: float, ages_days: list[float], size: int = 100
               ) -> list[str]:
    """Blobs of ``size`` bytes, each last used ``ages_days`` ago."""
    shas = []
    for i, age in enumerate(ages_days):
        name, _ = store.put_bytes(bytes([i]) * size)
        used = now - age * 86400
        os.utime(store.path(name), (used, used))
        shas.append(name)
    return shas


def test_prune_by_age_and_by_size_never_a_live_blob(tmp_path: Path) -> None:
    """Retention: blobs unused for max_age go; then the least recently used until the
    store fits max_bytes; a blob a queued or running job reads is never removed."""
    store = BlobStore(tmp_path / "store")
    now = 2_000_000_000.0
    old, live_old, mid, newer, newest = aged_blobs(store, now, [30, 20, 3, 2, 1])
    pruned = store.prune(max_age=7 * 86400, max_bytes=None, keep={live_old}, now=now)
    assert (pruned.removed, pruned.freed_bytes, pruned.kept_bytes) == (1, 100, 400)
    assert not store.has(old) and store.has(live_old)
    by_size = store.prune(max_age=None, max_bytes=250, keep={live_old}, now=now)
    assert by_size.removed == 2 and by_size.kept_bytes == 200
    assert [store.has(s) for s in (live_old, mid, newer, newest)] == [True, False, False, True]
    store.touch([live_old])  # a job read it: its age starts again
    assert store.prune(max_age=7 * 86400, max_bytes=None, now=time.time()).removed == 0


def test_the_janitor_prunes_at_start_and_at_most_every_interval(tmp_path: Path) -> None:
    """The janitor runs when the app starts, then after an upload only when ``interval``
    has passed since the last prune (an injected clock), keeping live jobs' blobs."""
    from fastapi.testclient import TestClient

    store = BlobStore(tmp_path / "store")
    runner = ScriptedRunner()
    clock = [1000.0]
    prunes: list[set[str]] = []
    original = store.prune

    def counted(**kwargs: Any) -> Any:
        prunes.append(set(kwargs["keep"]))
        return original(**kwargs)

    store.prune = counted  # type: ignore[method-assign]
    now = time.time()
    stale, kept = aged_blobs(store, now, [10, 10])
    runner.live.add(kept)
    janitor = Janitor(store, runner.live_blobs, max_age=7 * 86400, max_bytes=10**9,
                      interval=600, clock=lambda: clock[0])
    app = create_app(store, runner, TOKEN, janitor=janitor)
    with TestClient(app, headers=AUTH) as c:
        assert prunes == [{kept}]  # at start
        assert not store.has(stale) and store.has(kept)
        assert c.put(f"/v1/blobs/{sha(b'one')}", content=b"one").status_code == 200
        assert len(prunes) == 1  # within the interval: no prune
        clock[0] += 601
        assert c.put(f"/v1/blobs/{sha(b'two')}", content=b"two").status_code == 200
        assert len(prunes) == 2
        assert c.put(f"/v1/blobs/{sha(b'six')}", content=b"six").status_code == 200
        assert len(prunes) == 2
    assert store.has(kept) and store.has(sha(b"one"))


def test_a_blob_the_client_was_told_is_there_survives_the_next_prune(tmp_path: Path
                                                                     ) -> None:
    """Found by review: ``POST /v1/blobs/missing`` answered 'present' for a blob at the end
    of its retention and did not count that as a use, so the prune an upload of the same
    submission triggers could remove it before the submit (which then failed 400: 'not
    uploaded'). Being asked for, or uploaded again, is a use."""
    store = BlobStore(tmp_path / "store")
    clock = [0.0]
    janitor = Janitor(store, set, max_age=7 * 86400, max_bytes=10**9, interval=600,
                      clock=lambda: clock[0])
    janitor.maybe_prune(force=True)  # the last prune, before these two aged out:
    asked, put_again = aged_blobs(store, time.time(), [8, 8])
    app = create_app(store, ScriptedRunner(), TOKEN, janitor=janitor)
    with httpx.Client(transport=ASGIBridge(app), base_url=BASE,  # type: ignore[arg-type]
                      headers=AUTH) as c:
        missing = c.post("/v1/blobs/missing", json={"sha256": [asked, "f" * 64]})
        assert missing.json()["data"]["missing"] == ["f" * 64]
        again = c.put(f"/v1/blobs/{put_again}", content=bytes([1]) * 100)
        assert again.status_code == 200 and again.json()["data"]["stored"] is False
        clock[0] += 601
        fresh = c.put(f"/v1/blobs/{sha(b'new')}", content=b"new")  # prunes now
        assert fresh.status_code == 200
        assert store.has(asked) and store.has(put_again)
        payload = {"audio": f"blob:{asked}.wav"}
        assert c.post("/v1/jobs/transcribe_audio", json=payload).status_code == 202


def test_live_blobs_are_those_of_queued_and_running_jobs() -> None:
    from canvascast_cli.protocol import parse_payload
    from canvascast_cli.server.runner import Job, JobTable

    table = JobTable()
    refs = ["a" * 64, "b" * 64, "c" * 64]
    for i, (ref, state) in enumerate(zip(refs, ["queued", "running", "done"], strict=True)):
        payload = parse_payload("transcribe_audio", {"audio": f"blob:{ref}.wav"})
        table.add(Job(id=f"job-{i:032x}", function="transcribe_audio", payload=payload,
                      state=state))  # type: ignore[arg-type]
    assert table.live_blobs() == {refs[0], refs[1]}


# ---------------------------------------------------------------------------------------
# OpenAPI


def test_openapi_needs_the_token_and_describes_every_route(client: httpx.Client) -> None:
    """The document is behind the token, versioned as the wire format, has one submit
    route per function whose body is that function's payload model, lists every route the
    app serves (its own included; not the hidden catch-all for unknown functions), says
    which need the token, and documents every answer as the envelope the API really sends
    (before: no error status was documented but FastAPI's 422, which this API never
    sends, and the document's own route was missing)."""
    from fastapi.routing import iter_route_contexts

    bridge = ASGIBridge(client.app)  # type: ignore[attr-defined]
    with httpx.Client(transport=bridge, base_url=BASE) as bare:  # type: ignore[arg-type]
        anonymous = bare.get("/v1/openapi.json")
    assert anonymous.status_code == 401 and code(anonymous) == "AUTH"
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["info"]["version"] == API_VERSION
    schemas = doc["components"]["schemas"]
    for name, spec in FUNCTIONS.items():
        operation = doc["paths"][f"/v1/jobs/{name}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{spec.payload.__name__}"}
        assert set(schemas[spec.payload.__name__]["properties"]) == set(
            spec.payload.model_fields)
    served = set()
    for route in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        if route.path == "/v1/jobs/{name}":
            continue  # unknown functions: answered 400, not part of the API
        for method in route.methods or ():
            if method != "HEAD":
                served.add((route.path, method.lower()))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented

    def is_envelope(schema: dict[str, Any]) -> bool:
        name = schema.get("$ref", "").rsplit("/", 1)[-1]
        return set(schemas.get(name, {}).get("properties", {})) == {"success", "data",
                                                                     "error"}

    for path, ops in doc["paths"].items():
        for method, operation in ops.items():
            answers = operation["responses"]
            if path != "/v1/health":
                assert "401" in answers, (path, method)
            for status, answer in answers.items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and (path, status) != ("/v1/openapi.json", "200"):
                    assert is_envelope(schema), (path, method, status)
    for function_name in FUNCTIONS:
        submit = doc["paths"][f"/v1/jobs/{function_name}"]["post"]["responses"]
        assert {"202", "400", "401", "413", "422"} <= set(submit)
    assert {"413", "422", "429"} <= set(doc["paths"]["/v1/blobs/{sha}"]["put"]["responses"])
    assert "404" in doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "HTTPValidationError" not in schemas
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/v1/health"]["get"]["security"] == []


def test_a_method_a_route_lacks_is_405_with_allow(client: httpx.Client) -> None:
    """Found by schemathesis: a 405 came without the Allow header RFC 9110 requires."""
    response = client.request("PATCH", "/v1/health")
    assert response.status_code == 405 and response.json()["success"] is False
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}
    post = client.request("POST", f"/v1/blobs/{'0' * 64}")
    # (Starlette names the methods of the first route that matched the path: PUT or GET.)
    assert post.status_code == 405 and post.headers["Allow"] in ("PUT", "GET, HEAD")


# ---------------------------------------------------------------------------------------
# Errors never show the server's paths


def test_an_unexpected_engine_error_names_no_server_path(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Guards: failed-job errors showed server temp paths. An error the engine did not
    expect (an OSError on a file in the job's folder) leaves ``execute`` without them,
    its input named by its blob."""
    from canvascast_cli.errors import CanvasCastError
    from canvascast_cli.server import work

    store = BlobStore(tmp_path / "store")
    image, _ = store.put_bytes(b"\xff\xd8 not really a jpeg")
    folder = tmp_path / "store" / "work" / "job-x"

    def broken(payload: Any, store: Any, workdir: Path, *args: Any) -> Any:
        (linked,) = work._materialise({"image": f"blob:{image}.jpg"}, store, workdir).values()
        raise OSError(28, "No space left on device", linked)

    monkeypatch.setattr(work, "_render", broken)
    timeline = {"output": {"width": 64, "height": 64, "fps": 10},
                "scenes": [{"image": f"blob:{image}.jpg", "duration": 1}]}
    with pytest.raises(CanvasCastError) as failed:
        work.execute("render_video", {"timeline": timeline}, store, workdir=folder)
    text = str(failed.value.to_dict())
    assert str(tmp_path) not in text and "work/" not in text
    assert f"blob:{image}.jpg" in text and "No space left on device" in text
    assert failed.value.code == "JOB_FAILED"
    assert not folder.exists()
