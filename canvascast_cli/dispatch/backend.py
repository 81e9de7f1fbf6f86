"""What the dispatcher needs from a remote backend, and which one a run uses.

Two remote backends implement ``Backend``: ``http`` (the job API over httpx:
``dispatch/http.py``) and ``modal`` (Modal's SDK: ``dispatch/modal_backend.py``). Both
speak the wire format (``canvascast_cli.protocol``): blobs by sha256, a job submitted
and then polled (a ``JobStatus``), artifacts fetched by sha256 and verified.

``choose`` reads the environment and the config once and returns a ``Choice`` that holds
everything the chosen backend needs (its validated endpoint, its token), so nothing
later reads either again; ``open_backend`` builds the backend from it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from canvascast_cli import env
from canvascast_cli.errors import AuthFailed, InvalidInput, ModalUnavailable
from canvascast_cli.net import check_base_url

if TYPE_CHECKING:
    from canvascast_cli.config import Settings
    from canvascast_cli.protocol import JobStatus, Payload
    from canvascast_cli.retry import RetryPolicy

Bytes = Callable[[int], None]
BackendName = Literal["local", "http", "modal"]


class Backend(Protocol):
    name: str

    def missing(self, shas: list[str]) -> list[str]:
        """Which of these blobs the remote side lacks."""
        ...

    def upload(self, sha: str, path: Path, on_bytes: Bytes | None = None) -> int:
        """Store ``path`` (whose sha256 is ``sha``) remotely; bytes sent."""
        ...

    def submit(self, function: str, payload: Payload) -> str:
        """Start a job; its id. Never waits for the job."""
        ...

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        """The job's status, after waiting up to ``wait`` s for it to change."""
        ...

    def download(self, sha: str, into: Path, on_bytes: Bytes | None = None) -> int:
        """Write blob ``sha`` into the file ``into``; IntegrityError if the bytes do not
        hash to ``sha``."""
        ...

    def cancel(self, job_id: str) -> JobStatus: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Choice:
    """Which backend a run uses, why (for the one-line notice and ``--json``), and what
    it needs to be opened: the job API's endpoint and token for ``http``. The token is
    never part of the repr."""

    name: BackendName
    reason: str
    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)


def modal_token_configured(environ: Mapping[str, str]) -> bool:
    """A Modal token in the environment, or a profile file of Modal's own."""
    if environ.get(env.MODAL_TOKEN_ID) and environ.get(env.MODAL_TOKEN_SECRET):
        return True
    path = environ.get(env.MODAL_CONFIG_PATH) or str(Path.home() / ".modal.toml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return "token_id" in text and "token_secret" in text


def remote_configured(environ: Mapping[str, str], settings: Settings | None) -> bool:
    """Whether ``auto`` would try a remote backend."""
    return bool(environ.get(env.MODAL_ENDPOINT) or (settings and settings.app.endpoint)
                or modal_token_configured(environ))


def choose(requested: str, environ: Mapping[str, str], settings: Settings) -> Choice:
    """``--backend`` (auto|local|http|modal) -> the backend to use, read once.

    auto: http when an endpoint is configured (``MODAL_ENDPOINT`` or modal.toml
    ``[app] endpoint``), else modal when a Modal token is configured and Modal's SDK is
    installed, else local. A chosen http backend's endpoint is checked here (exit 2 for
    one that cannot be the job API) and needs ``MODAL_TOKEN`` (exit 3 without).
    """
    if requested not in ("auto", "local", "http", "modal"):
        raise InvalidInput(f"--backend: {requested!r}; allowed: auto, local, http, modal")
    from_env = environ.get(env.MODAL_ENDPOINT)
    endpoint = from_env or settings.app.endpoint
    source = env.MODAL_ENDPOINT if from_env else "modal.toml [app] endpoint"
    if requested == "local":
        return Choice("local", "--backend local")
    if requested == "modal" or (requested == "auto" and not endpoint
                                and modal_token_configured(environ)):
        reason = "--backend modal" if requested == "modal" else "a Modal token is configured"
        if importlib.util.find_spec("modal") is None:
            if requested == "modal":
                raise InvalidInput("--backend modal needs Modal's SDK: pip install "
                                   "'canvascast[modal]'")
            return Choice("local", "a Modal token is configured but Modal's SDK is not "
                                   "installed (pip install 'canvascast[modal]')")
        return Choice("modal", reason)
    if requested == "auto" and not endpoint:
        return Choice("local", f"no remote configured (set {env.MODAL_ENDPOINT} and "
                               f"{env.MODAL_TOKEN}, or a Modal token)")
    if not endpoint:
        raise InvalidInput(f"--backend http: set {env.MODAL_ENDPOINT} (or [app] endpoint "
                           "in modal.toml) to the job API's URL")
    endpoint = check_base_url(endpoint, source)
    token = environ.get(env.MODAL_TOKEN, "").strip()
    if not token:
        raise AuthFailed(f"the http backend needs {env.MODAL_TOKEN} (the job API's bearer "
                         "token)")
    reason = "--backend http" if requested == "http" else f"{source} is set"
    return Choice("http", reason, endpoint=endpoint, token=token)


def open_backend(choice: Choice, settings: Settings, *, retry: RetryPolicy,
                 transport: Any = None, timeout: float = 60.0,
                 clock: Callable[[], float] | None = None) -> Backend:
    """The backend ``choice`` names, ready to use."""
    if choice.name == "http":
        from canvascast_cli.dispatch.http import HttpBackend

        assert choice.endpoint is not None and choice.token is not None
        return HttpBackend(choice.endpoint, choice.token, transport=transport, retry=retry,
                           timeout=timeout, clock=clock)
    if choice.name == "modal":
        from canvascast_cli.dispatch.modal_backend import ModalBackend

        return ModalBackend.from_settings(settings, retry=retry)
    raise ModalUnavailable(f"no remote backend to open for {choice.name!r}")
