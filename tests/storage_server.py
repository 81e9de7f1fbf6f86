"""A fake Supabase Storage server for tests: a real HTTP server on a loopback port.

It answers exactly the routes the ``supabase`` client (storage3) uses for what
``canvascast_cli.storage`` does, under ``/storage/v1``:

    GET  /object/info/<bucket>/<path>      the object's info, or 404 not_found
    POST /object/<bucket>/<path>           upload (multipart field "file"); 409 Duplicate
                                           unless ``x-upsert: true``; 413 over ``max_size``
    PUT  /object/<bucket>/<path>           update (replace)
    GET  /object/<bucket>/<path>           authenticated download
    POST /object/sign/<bucket>/<path>      {"expiresIn"} -> {"signedURL": "/object/sign/..."}
    GET  /object/sign/<bucket>/<path>?token=...   the signed download (no key needed)
    POST /object/list/<bucket>             {"prefix"} -> [{"name", ...}]

Objects live in memory. Every request is recorded (method, path, query, headers, body
size). The key is checked as the real service does it: a wrong ``apikey`` gets the
gateway's 401 ({"message": "Invalid API key"}, not Storage's error shape); a right
``apikey`` with a wrong ``Authorization: Bearer`` gets Storage's 403. An unknown bucket is
404 "Bucket not found" (Storage's error body: statusCode, error, message). ``fail()``
queues faults: the next N requests matching a method and path fragment answer a given
status (503 with a Retry-After, a 403, ...), before any other check.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PREFIX = "/storage/v1"
# A JWT-shaped test key (header.payload.signature; nothing here verifies it). The client
# needs only a non-empty string; Supabase's legacy service_role keys look like this.
TEST_KEY = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
            "eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UtZmFrZSJ9."
            "c2VjcmV0LXNpZ25hdHVyZS1mb3ItdGVzdHMtb25seQ")


@dataclass
class Recorded:
    method: str
    path: str  # without /storage/v1 and without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body_size: int


@dataclass
class Fault:
    method: str | None
    fragment: str
    status: int
    times: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stored:
    data: bytes
    content_type: str
    cache_control: str
    created: float


class FakeStorage:
    def __init__(self, *, key: str = TEST_KEY, buckets: tuple[str, ...] = ("canvascast",),
                 max_size: int | None = None) -> None:
        self.key = key
        self.buckets: dict[str, dict[str, Stored]] = {b: {} for b in buckets}
        self.max_size = max_size
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.tokens: dict[str, tuple[str, str, float]] = {}  # token -> bucket, path, until
        self.clock = time.time
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The project URL a client is given (it adds /storage/v1 itself)."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeStorage:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail(self, status: int, *, times: int = 1, method: str | None = None,
             fragment: str = "", body: Any = None, headers: dict[str, str] | None = None
             ) -> None:
        """The next ``times`` requests whose path contains ``fragment`` (and whose method
        is ``method``, if given) answer ``status`` with ``body`` (default: Storage's
        error shape)."""
        with self._lock:
            self.faults.append(Fault(method, fragment, status, times, body, headers or {}))

    def put_object(self, bucket: str, path: str, data: bytes,
                   content_type: str = "application/octet-stream") -> None:
        self.buckets[bucket][path] = Stored(data, content_type, "max-age=3600", self.clock())

    def calls(self, method: str | None = None, fragment: str = "") -> list[Recorded]:
        return [r for r in self.requests
                if (method is None or r.method == method) and fragment in r.path]

    # -- answering ----------------------------------------------------------------------

    def _fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (fault.method in (None, method) and fault.fragment in path
                        and fault.times > 0):
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None


def _error(status: int, error: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"statusCode": str(status), "error": error, "message": message}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStorage
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ----------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self, method: str) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        body = self._body()
        path = unquote(parts.path)
        if path.startswith(PREFIX):
            path = path[len(PREFIX):]
        query = parse_qs(parts.query, keep_blank_values=True)
        with fake._lock:
            fake.requests.append(Recorded(method, path, query,
                                          {k.lower(): v for k, v in self.headers.items()},
                                          len(body)))
        fault = fake._fault(method, path)
        if fault is not None:
            answer = fault.body if fault.body is not None else _error(
                fault.status, "fault", f"injected {fault.status}")[1]
            self._send(fault.status, answer, fault.headers)
            return
        status, answer, ctype = self._route(method, path, query, body)
        self._send(status, answer, content_type=ctype)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes
               ) -> tuple[int, Any, str]:
        fake = self.fake
        signed_get = method == "GET" and path.startswith("/object/sign/")
        if not signed_get:
            if self.headers.get("apikey") != fake.key:
                # The API gateway's answer, before Storage sees the request.
                return 401, {"message": "Invalid API key",
                             "hint": "Double check your Supabase `anon` or `service_role` "
                             "API key."}, "application/json"
            if self.headers.get("authorization") != f"Bearer {fake.key}":
                return (*_error(403, "Unauthorized", "invalid signature"),
                        "application/json")
        routes = (("/object/info/", "info"), ("/object/sign/", "sign"),
                  ("/object/list/", "list"), ("/object/", "object"))
        found = next(((r, a) for r, a in routes if path.startswith(r)), None)
        if found is None:
            return 404, {"message": "no Route matched with those values"}, "application/json"
        route, action = found
        rest = path[len(route):]
        bucket, _, key = rest.partition("/")
        if bucket not in fake.buckets:
            return (*_error(404, "Bucket not found", "Bucket not found"), "application/json")
        objects = fake.buckets[bucket]
        missing = (*_error(404, "not_found", "Object not found"), "application/json")
        if action == "list" and method == "POST":
            prefix = json.loads(body or b"{}").get("prefix", "")
            names = sorted({k[len(prefix):].lstrip("/").split("/")[0]
                            for k in objects if k.startswith(prefix)})
            return 200, [{"name": n, "id": None, "metadata": None} for n in names], \
                "application/json"
        if action == "info" and method == "GET":
            if key not in objects:
                return missing
            obj = objects[key]
            return 200, {"id": f"{bucket}/{key}", "name": key, "version": "1",
                         "bucket_id": bucket, "size": len(obj.data),
                         "content_type": obj.content_type, "cache_control": obj.cache_control,
                         "etag": f'"{len(obj.data)}"', "metadata": {},
                         "created_at": "2026-01-01T00:00:00Z"}, "application/json"
        if action == "sign" and method == "POST":
            if key not in objects:
                return missing
            expires = int(json.loads(body or b"{}").get("expiresIn", "0"))
            token = secrets.token_urlsafe(16)
            fake.tokens[token] = (bucket, key, fake.clock() + expires)
            return 200, {"signedURL": f"/object/sign/{bucket}/{key}?token={token}"}, \
                "application/json"
        if action == "sign" and method == "GET":
            token = (query.get("token") or [""])[0]
            known = fake.tokens.get(token)
            if known is None or known[:2] != (bucket, key):
                return (*_error(400, "InvalidJWT", "invalid signature"), "application/json")
            if known[2] < fake.clock():
                return (*_error(400, "InvalidJWT", "jwt expired"), "application/json")
            if key not in objects:
                return missing
            return 200, objects[key].data, objects[key].content_type
        if action == "object" and method == "GET":
            if key not in objects:
                return missing
            return 200, objects[key].data, objects[key].content_type
        if action == "object" and method in ("POST", "PUT"):
            upsert = self.headers.get("x-upsert") == "true"
            if method == "POST" and key in objects and not upsert:
                return (*_error(409, "Duplicate", "The resource already exists"),
                        "application/json")
            if method == "PUT" and key not in objects:
                return missing
            fields = _multipart(self.headers.get("content-type", ""), body)
            data, ctype = fields.get("file", (body, self.headers.get("content-type", "")))
            if fake.max_size is not None and len(data) > fake.max_size:
                return (*_error(413, "Payload too large",
                                "The object exceeded the maximum allowed size"),
                        "application/json")
            cache = fields.get("cacheControl", (b"3600", ""))[0].decode()
            objects[key] = Stored(data, ctype, f"max-age={cache}", fake.clock())
            return 200, {"Id": secrets.token_hex(8), "Key": f"{bucket}/{key}"}, \
                "application/json"
        return 400, {"statusCode": "400", "error": "invalid_route",
                     "message": f"{method} {path}"}, "application/json"


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type) of a multipart/form-data body (bytes kept exactly)."""
    if not content_type.startswith("multipart/form-data"):
        return {}
    boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip().strip('"')
    fields: dict[str, tuple[bytes, str]] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        match = re.search(r'name="([^"]*)"', disposition)
        if match:
            fields[match[1]] = (data, headers.get("content-type", ""))
    return fields


@contextmanager
def running(**kwargs: Any) -> Iterator[FakeStorage]:
    fake = FakeStorage(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()
