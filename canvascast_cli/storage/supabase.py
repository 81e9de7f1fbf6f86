"""The artifact store on Supabase Storage, through the ``supabase`` package's client.

``supabase.create_client(url, key).storage.from_(bucket)`` (storage3) makes every request
under ``<url>/storage/v1/``, each with the headers ``apikey: <key>`` and
``Authorization: Bearer <key>``:

    exists / the check before a put   GET  object/info/<bucket>/<object path>
    put                               POST object/<bucket>/<object path>
                                           multipart/form-data (field "file", the
                                           bytes streamed from the open file; field
                                           "cacheControl"), header x-upsert: true
    signed_url                        POST object/sign/<bucket>/<object path>
                                           {"expiresIn": "<seconds>"}
                                           -> {"signedURL": "/object/sign/...?token=..."}
    download                          a signed URL (expiring in a minute), then
                                           GET object/sign/<bucket>/<path>?token=...
                                           (no key sent), streamed to a staged file

A put is idempotent: the object's name holds the sha256, so when the check finds it
(with the same size) nothing is sent (``uploaded=False``); otherwise the upload is an
upsert, so two machines storing the same result at once both succeed (same name, same
bytes). An object found with another size (a broken one) is replaced.

Limits of the client: an upload is one request (the body is streamed from the file,
never read whole into memory, but it cannot resume: storage3 has no TUS/resumable
uploads, so a failed upload starts again from the first byte, and the project's upload
size limit applies — 50 MB on the Free plan). storage3's own ``download()`` returns the
whole body as bytes, which is why a download here goes through a signed URL and
streams. 5xx answers, 429 (honouring Retry-After), timeouts and connection failures are
retried with the ``RetryPolicy``; a failed upload never touches the local file.

The key is never shown: not in an error, a log line or a ``repr``; an error names the
variable it came from (``key_env``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from canvascast_cli import env
from canvascast_cli.atomic import staged
from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    IntegrityError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServerError,
    UnexpectedResponse,
    from_os_error,
)
from canvascast_cli.net import Service, status_error, transport_error
from canvascast_cli.protocol import CHUNK, check_sha256, sha256_file
from canvascast_cli.retry import RetryPolicy
from canvascast_cli.storage.store import (
    CACHE_SECONDS,
    DASHBOARD_API,
    Provider,
    StoredObject,
    check_expiry,
    check_into,
    check_object_path,
    check_prefix,
    content_type_of,
    local_size,
    object_path,
)

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

DOWNLOAD_URL_SECONDS = 60  # the signed URL a download fetches through
CONNECT_TIMEOUT = 10.0
IO_TIMEOUT = 120.0  # seconds without a byte moving (each read or write), not in all

SUPABASE = Service("Supabase Storage", unauthorized=AuthFailed, unavailable=ServerError,
                   client_error=UnexpectedResponse)


def check_project_url(url: str, *, source: str = env.SUPABASE_URL) -> str:
    """The project's URL (``https://<project-ref>.supabase.co``), checked: http(s), a
    host, no credentials, no query. A trailing ``/storage/v1`` is dropped (the client
    adds it). A message never echoes anything but the scheme and host."""
    url = url.strip()
    if "@" in url:
        raise InvalidInput(f"{source}: the URL carries credentials (something before an "
                           "'@'); give the project URL alone (https://<project-ref>."
                           "supabase.co): the key goes in its own variable")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidInput(f"{source}: not a URL; give the project URL "
                           "(https://<project-ref>.supabase.co)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{source}: not an http(s) URL with a host; give the project "
                           "URL (https://<project-ref>.supabase.co)")
    if parts.query or parts.fragment:
        raise InvalidInput(f"{source}: {parts.scheme}://{parts.netloc}... has a ?query or "
                           "#fragment; give the project URL alone")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/storage/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


class _Conflict(UnexpectedResponse):
    """HTTP 409: the object exists (an upload without upsert lost a race)."""


class SupabaseStore:
    """Artifacts in a Supabase Storage bucket (see the module docstring).

    ``client``: the httpx client every request goes through (the library's and the
    downloads'); by default one made here (10 s to connect, 120 s without progress) and
    closed by ``close``. ``retry``: the policy for transient failures (default:
    ``RetryPolicy()``)."""

    provider: Provider = "supabase"

    def __init__(self, url: str, key: str, bucket: str, prefix: str = "", *,
                 retry: RetryPolicy | None = None, client: httpx.Client | None = None,
                 url_env: str = env.SUPABASE_URL, key_env: str = env.SUPABASE_SERVICE_KEY
                 ) -> None:
        import httpx
        from supabase import ClientOptions, SupabaseException, create_client

        self.url = check_project_url(url, source=url_env)
        self.bucket = bucket
        self.prefix = check_prefix(prefix)
        self.url_env, self.key_env = url_env, key_env
        self._retry = retry or RetryPolicy()
        key = key.strip()
        if not key:
            raise InvalidInput(f"{key_env} is empty: set it to the project's service_role "
                               f"(secret) key ({DASHBOARD_API})")
        self._scrub = _scrubber(key)
        self._own_client = client is None
        self._http = client or httpx.Client(
            timeout=httpx.Timeout(IO_TIMEOUT, connect=CONNECT_TIMEOUT), follow_redirects=True)
        try:
            supabase = create_client(self.url, key,
                                     options=ClientOptions(httpx_client=self._http))
        except SupabaseException as exc:
            self.close()
            raise InvalidInput(f"{url_env}/{key_env}: {self._scrub(exc.message)}") from None
        self._files = supabase.storage.from_(bucket)

    def __repr__(self) -> str:
        return (f"SupabaseStore({self.url!r}, bucket={self.bucket!r}, "
                f"prefix={self.prefix!r}, key=${self.key_env})")

    # -- the interface ------------------------------------------------------------------

    def put(self, path: Path, *, sha256: str, name: str,
            content_type: str | None = None) -> StoredObject:
        key = object_path(self.prefix, sha256, name)
        size = local_size(path)
        if self._present(key, size):
            return self._stored(key, sha256, size, uploaded=False)
        # The bytes go out under a name that promises their sha256: check it first.
        try:
            actual, size = sha256_file(path)
        except OSError as exc:
            raise from_os_error(exc, "reading the file to store") from None
        if actual != sha256:
            raise IntegrityError(f"{path}: sha256 is {actual}, not the announced {sha256} "
                                 "(did it change?); nothing was uploaded")
        kind = content_type_of(name, content_type)
        try:
            self._call(f"uploading {key}", self._upload, path, key, kind)
        except _Conflict:
            # Another upload of the same name won (only without upsert): same bytes.
            if not self._present(key, size):
                raise
            return self._stored(key, sha256, size, uploaded=False)
        return self._stored(key, sha256, size, uploaded=True)

    def signed_url(self, object_path: str, expires_in: int) -> str:
        return self._call(f"signing a URL for {object_path}", self._sign,
                          check_object_path(object_path), check_expiry(expires_in))

    def download(self, object_path: str, into: Path, *, sha256: str) -> None:
        check_sha256(sha256)
        key = check_object_path(object_path)
        into = check_into(into)
        self._call(f"downloading {key}", self._download, key, into, sha256)

    def exists(self, object_path: str) -> bool:
        key = check_object_path(object_path)
        return self._call(f"looking up {key}", self._info, key) is not None

    def close(self) -> None:
        if self._own_client:
            self._http.close()

    def __enter__(self) -> SupabaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request each ---------------------------------------------------------------

    def _stored(self, key: str, sha256: str, size: int, *, uploaded: bool) -> StoredObject:
        return StoredObject("supabase", self.bucket, key, sha256, size, uploaded=uploaded)

    def _present(self, key: str, size: int) -> bool:
        info = self._call(f"looking up {key}", self._info, key)
        if info is None:
            return False
        stored = _size_of(info)
        return stored is None or stored == size

    def _info(self, key: str) -> dict[str, Any] | None:
        from storage3.exceptions import StorageApiError

        try:
            return self._files.info(key)
        except StorageApiError as exc:
            # What storage3's exists() reads as "no such object": 404 not_found, or a 404
            # without a body it can parse. A missing bucket says "Bucket not found".
            if (_status_of(exc) == 404
                    and str(exc.code) in ("not_found", "NoSuchKey", "InternalError")):
                return None
            raise

    def _upload(self, path: Path, key: str, content_type: str) -> None:
        # An open file: httpx streams it into the multipart body in chunks, and reopening
        # it for each attempt starts a retry from the first byte.
        with path.open("rb") as fh:
            self._files.upload(key, fh, {"content-type": content_type,
                                         "cache-control": str(CACHE_SECONDS),
                                         "upsert": "true"})

    def _sign(self, key: str, expires_in: int) -> str:
        signed = self._files.create_signed_url(key, expires_in)["signedURL"]
        if not signed:
            raise UnexpectedResponse(f"{self._where('signing ' + key)}: no signed URL in "
                                     "the answer")
        return signed

    def _download(self, key: str, into: Path, sha256: str) -> None:
        url = self._sign(key, DOWNLOAD_URL_SECONDS)
        digest = hashlib.sha256()
        with staged(into) as tmp:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 300:
                    response.read()
                    raise self._status_error(*_body_error(response), response.headers,
                                             f"downloading {key}")
                with tmp.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            if digest.hexdigest() != sha256:
                raise IntegrityError(f"{key}: downloaded bytes have sha256 "
                                     f"{digest.hexdigest()}, not the expected {sha256}; "
                                     f"nothing was written to {into}")

    # -- errors -------------------------------------------------------------------------

    def _call(self, doing: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` with the library's failures as ours, retried when transient."""
        import httpx
        from storage3.exceptions import StorageApiError
        from storage3.utils import StorageException

        def attempt() -> T:
            try:
                return fn(*args)
            except CanvasCastError:
                raise
            except StorageApiError as exc:
                response = _response_of(exc)
                raise self._status_error(
                    _status_of(exc), str(exc.code), str(exc.message),
                    response.headers if response is not None else None, doing) from None
            except httpx.HTTPError as exc:
                raise transport_error(exc, self._where(doing)) from None
            except OSError as exc:
                raise from_os_error(exc, doing) from None
            except (StorageException, ValueError, KeyError, TypeError) as exc:
                # pydantic's ValidationError is a ValueError: an answer not in the API's
                # shape (a proxy's page, another service at this URL).
                raise UnexpectedResponse(
                    f"{self._where(doing)}: the answer is not Supabase Storage's "
                    f"({type(exc).__name__}); is {self.url_env} the project's URL "
                    "(https://<project-ref>.supabase.co)?") from None

        return self._retry.call(attempt)

    def _where(self, doing: str) -> str:
        return f"Supabase Storage at {self.url} ({doing})"

    def _status_error(self, status: int, code: str, message: str,
                      headers: Mapping[str, str] | None, doing: str) -> CanvasCastError:
        where = self._where(doing)
        said = self._scrub(message)[:300]
        lowered = f"{code} {said}".lower()
        if status in (401, 403) or code in ("Unauthorized", "InvalidJWT"):
            return AuthFailed(
                f"{where}: the key in {self.key_env} was refused (HTTP {status}: {said}); "
                f"check that it is this project's service_role (secret) key ({DASHBOARD_API})"
                f" and that {self.url_env} is the same project's URL")
        if status == 404 and ("bucket" in lowered):
            return InvalidInput(
                f"{where}: bucket {self.bucket!r} does not exist: create it (Supabase "
                "dashboard -> Storage -> New bucket, private) or set [storage] bucket in "
                "modal.toml to one that exists")
        if status == 404 and code in ("not_found", "NoSuchKey"):
            return NotFound(f"{where}: no such object in bucket {self.bucket!r}")
        if status == 404:
            return UnexpectedResponse(
                f"{where}: HTTP 404 ({said}); is {self.url_env} the project's URL "
                "(https://<project-ref>.supabase.co)?")
        if status == 409:
            return _Conflict(f"{where}: the object exists already ({said})")
        if status == 413:
            return PayloadTooLarge(
                f"{where}: the file is larger than the upload limit ({said}): raise the "
                "project's limit (Supabase dashboard -> Storage -> Settings; 50 MB on the "
                "Free plan) and the bucket's own file size limit, or store smaller files")
        if status in (408, 429) or status >= 500:
            return status_error(status, headers, where, SUPABASE,
                                said=CanvasCastError(said) if said else None)
        return UnexpectedResponse(f"{where}: HTTP {status} {code}: {said}")


# ---------------------------------------------------------------------------------------


def _scrubber(secret: str) -> Callable[[str], str]:
    def scrub(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    return scrub


def _response_of(exc: BaseException) -> httpx.Response | None:
    """The HTTP answer behind a storage3 error (its cause chain holds httpx's error)."""
    import httpx

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, httpx.HTTPStatusError):
            return current.response
        current = current.__cause__ or current.__context__
    return None


def _status_of(exc: Any) -> int:
    """The status an error means. Supabase Storage puts the real one in the body's
    ``statusCode`` (the HTTP status may be a plain 400); a gateway's 429 or 5xx is
    taken from the HTTP status, whatever the body says."""
    response = _response_of(exc)
    http = response.status_code if response is not None else 0
    if http == 429 or http >= 500:
        return http
    try:
        return int(str(exc.status))
    except ValueError:
        return http


def _body_error(response: httpx.Response) -> tuple[int, str, str]:
    """(status, code, message) of an error answer outside storage3 (a signed GET)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        return status, "", response.text[:200]
    if not isinstance(body, dict):
        return status, "", str(body)[:200]
    if status != 429 and status < 500:
        with contextlib.suppress(ValueError):
            status = int(str(body.get("statusCode", status)))
    return status, str(body.get("error") or body.get("code") or ""), str(
        body.get("message") or "")


def _size_of(info: Mapping[str, Any]) -> int | None:
    """The object's size in an info answer (top level, or in its metadata)."""
    for value in (info.get("size"), (info.get("metadata") or {}).get("size")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
