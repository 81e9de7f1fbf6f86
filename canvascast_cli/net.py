"""HTTP failures as canvascast errors: the one httpx -> error mapping.

Every HTTP caller maps what httpx raises and what a server answers here — the job API
client (``dispatch/http.py``), image downloads of a timeline (``engines/render/inputs``)
— so a 429 honours its ``Retry-After`` and a plain 404 is never retried, whoever asked.
What differs between services is only which class a few statuses become, and that is
data (``Service``), not a second mapping:

    transport
      timeout (connect, read, write, pool)       Timeout             retryable
      refused, reset, DNS, protocol error        ConnectionFailed    retryable
      unsupported scheme, invalid URL,
      too many redirects                         InvalidInput        (the URL is wrong)
    status
      401, 403                                   service.unauthorized
      408                                        Timeout             retryable
      413                                        PayloadTooLarge
      429 (+ Retry-After, seconds or HTTP date)  RateLimited         retryable, hint kept
      502, 503, 504                              service.unavailable retryable
      other 5xx                                  ServerError         retryable
      3xx left over, other 4xx                   service.client_error (never retried)

Messages name the service's URL and the route; never a header (the token) or the URL's
user-info part (``redact``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from canvascast_cli import env
from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    ConnectionFailed,
    InvalidInput,
    JobFailed,
    ModalUnavailable,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Timeout,
    UnexpectedResponse,
)
from canvascast_cli.retry import retry_after

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Service:
    """How one kind of HTTP peer's statuses read (see the module docstring)."""

    name: str
    unauthorized: type[CanvasCastError]
    unavailable: type[CanvasCastError]
    client_error: type[CanvasCastError]
    auth_hint: str = ""
    client_hint: str = ""


JOB_API = Service(
    "job API", unauthorized=AuthFailed, unavailable=ModalUnavailable,
    client_error=UnexpectedResponse, auth_hint="the token was refused (check MODAL_TOKEN)",
    client_hint="is MODAL_ENDPOINT the job API's base URL, without /v1?")
DOWNLOAD = Service("download", unauthorized=InvalidInput, unavailable=ServerError,
                   client_error=InvalidInput)

_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
            413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def redact(text: str) -> str:
    """``text`` — a URL, or a message naming URLs — without any URL's user-info
    (``http://user:TOKEN@host`` -> ``http://host``).

    Pure text work, so it never fails: a URL it cannot parse (a port that is not a
    number, a password with an ``@`` in it) is redacted as well as a good one, and so is
    one with no scheme (``user:TOKEN@host``, when ``text`` begins with it)."""
    text = _USERINFO.sub("//", text)
    return _LEADING_USERINFO.sub("", text, count=1)


# The authority's user-info: after "//", up to its last "@" before the path, query or
# fragment begins (RFC 3986: "/", "?" and "#" end the authority).
_USERINFO = re.compile(r"//[^\s/?#]*@")
# A URL without a scheme at the start of the text ("user:TOKEN@host/...").
_LEADING_USERINFO = re.compile(r"^[^\s/?#]*@(?=[^\s/?#@])")


def check_base_url(url: str, source: str = env.MODAL_ENDPOINT) -> str:
    """The job API's base URL, checked: http(s), a host, no credentials, no query, not
    ending in the API's own ``/v1``. InvalidInput (exit 2) names ``source``; a URL with
    user-info (anything before an ``@``) is refused without being echoed."""
    if "@" in url:
        # User-info, or what a parser might take for it (a password with "/" in it ends
        # the authority early): checked first, so no message ever echoes a secret.
        shown = redact(url)
        named = f"{shown!r} " if "@" not in shown else "the URL "
        raise InvalidInput(f"{source}: {named}carries credentials (user-info before an "
                           "'@'); they are never sent or shown: put the job API's token in "
                           f"{env.MODAL_TOKEN}")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidInput(f"{source}: {url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{source}: {url!r} is not an http(s) URL with a host (e.g. "
                           "https://you--canvascast-api.modal.run)")
    if parts.query or parts.fragment:
        raise InvalidInput(f"{source}: {url!r}: give the base URL, without ?query or "
                           "#fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        raise InvalidInput(f"{source}: {url!r}: give the base URL without /v1 (canvascast "
                           "adds the API's routes)")
    return f"{parts.scheme}://{parts.netloc}{path}"


def transport_error(exc: httpx.HTTPError, where: str, *, timeout: float | None = None
                    ) -> CanvasCastError:
    """What httpx raised before any answer arrived; ``where`` names URL and route,
    ``timeout`` (when known) how long an answer was waited for."""
    import httpx

    kind = type(exc).__name__
    where = redact(where)
    if isinstance(exc, httpx.TimeoutException):
        within = f"within {timeout:g} s" if timeout is not None else "in time"
        return Timeout(f"{where} did not answer {within} ({kind})")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return InvalidInput(f"{where}: not an http(s) URL that can be fetched ({kind})")
    if isinstance(exc, httpx.TooManyRedirects):
        return InvalidInput(f"{where}: too many redirects")
    if isinstance(exc, httpx.TransportError):  # network, protocol, proxy errors
        return ConnectionFailed(f"cannot reach {where}: {kind}")
    return JobFailed(f"{where}: {kind}: {exc}")  # decoding errors and the like


def status_error(status: int, headers: Mapping[str, str] | None, where: str,
                 service: Service, *, said: CanvasCastError | None = None,
                 clock: Callable[[], float] | None = None) -> CanvasCastError:
    """The error for an answer with HTTP ``status`` (>= 300).

    ``said``: the error the body itself carries, when the caller could read one in its
    own format (the job API's envelope); it is kept where it agrees with the status, so
    a server's own message reaches the user."""
    reason = _REASONS.get(status, "")
    text = f"{redact(where)} answered HTTP {status}" + (f" {reason}" if reason else "")
    if status in (401, 403):
        if said is not None and isinstance(said, service.unauthorized):
            return said
        hint = f": {service.auth_hint}" if service.auth_hint else ""
        return service.unauthorized(text + hint)
    if status == 408:
        return Timeout(text)
    if status == 413:
        return said if isinstance(said, PayloadTooLarge) else PayloadTooLarge(text)
    if status == 429:
        wait = retry_after(headers, now=clock() if clock is not None else None)
        if isinstance(said, RateLimited) and wait is None:
            wait = said.retry_after
        return RateLimited(text + ": rate limited", retry_after=wait)
    if status >= 500:
        # The server's fault, whatever its body says: worth another try.
        cls = service.unavailable if status in (502, 503, 504) else ServerError
        return cls(text + (f": {said.message}" if said is not None else ""))
    if said is not None and status >= 400:
        return said  # our own error document: its class says what to do
    hint = f" ({service.client_hint})" if service.client_hint else ""
    if 300 <= status < 400:
        return service.client_error(text + f": a redirect{hint}")
    return service.client_error(text + hint)


# ---------------------------------------------------------------------------------------
# Server-side fetches: public addresses only


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local,
    multicast, reserved or unspecified — the addresses a server must not be made to
    fetch from on a client's behalf)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def public_only(inner: httpx.BaseTransport | None = None, *,
                resolve: Callable[[str, int], list[str]] | None = None
                ) -> httpx.BaseTransport:
    """A transport that refuses to connect anywhere but public addresses.

    For a job API, a timeline's image URL is a request the *server* makes: without this,
    ``http://127.0.0.1:…``, ``http://169.254.169.254/`` (cloud metadata) or a private
    host's name would be server-side request forgery. Every request — each redirect is
    one — has its host resolved here, every address checked, and the connection pinned to
    the checked address (the Host header and TLS name stay the original), so a name that
    resolves differently a moment later (DNS rebinding) cannot slip through.
    ``resolve(host, port)`` -> addresses (default: ``socket.getaddrinfo``)."""
    import httpx

    return _public_only_class()(inner or httpx.HTTPTransport(), resolve or _resolve)


def _resolve(host: str, port: int) -> list[str]:
    import socket

    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.cache
def _public_only_class() -> Any:
    # A subclass of httpx's transport, defined on first use: httpx is not imported when
    # this module is.
    import httpx

    class PublicOnly(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport,
                     resolve: Callable[[str, int], list[str]]) -> None:
            self._inner = inner
            self._resolve = resolve

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            import socket

            host = request.url.host
            port = request.url.port or (443 if request.url.scheme == "https" else 80)
            try:
                addresses = self._resolve(host, port)
            except (OSError, socket.gaierror) as exc:
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}",
                                         request=request) from None
            refused = [a for a in addresses if not is_public_address(a)]
            if refused or not addresses:
                raise PrivateAddress(f"{host} resolves to {', '.join(refused) or 'nothing'}"
                                     ": not a public address (this server fetches only from "
                                     "the public internet)")
            pinned = addresses[0]
            request.url = request.url.copy_with(host=pinned)
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
            return self._inner.handle_request(request)

        def close(self) -> None:
            self._inner.close()

    return PublicOnly


class PrivateAddress(InvalidInput):
    """A URL input that leads to a private, loopback or link-local address (refused on a
    server unless its operator allows them)."""

