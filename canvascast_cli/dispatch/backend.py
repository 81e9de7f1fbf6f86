"""What the dispatcher needs from a remote backend, and how one is chosen.

Two remote backends implement ``Backend``: ``http`` (the job API over httpx:
``dispatch/http.py``) and ``modal`` (Modal's SDK: ``dispatch/modal_backend.py``). Both
speak the same jobs (``server/work.py``): blobs by sha256, a job submitted and then
polled, artifacts fetched by sha256 and verified.

A job status is a dict: ``{"id", "function", "state": queued|running|done|failed|
cancelled, "progress": {"done", "total", "unit"} | None, "result": {...} (done),
"error": {"code", "message", "retryable"} (failed), "queue_seconds"?}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from canvascast_cli import env

Bytes = Callable[[int], None]


class Backend(Protocol):
    name: str

    def missing(self, shas: list[str]) -> list[str]:
        """Which of these blobs the remote side lacks."""
        ...

    def upload(self, sha: str, path: Path, on_bytes: Bytes | None = None) -> int:
        """Store ``path`` (whose sha256 is ``sha``) remotely; bytes sent."""
        ...

    def submit(self, function: str, payload: dict[str, Any]) -> str:
        """Start a job; its id. Never waits for the job."""
        ...

    def status(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The job's status, after waiting up to ``wait`` s for it to change."""
        ...

    def download(self, sha: str, into: Path, on_bytes: Bytes | None = None) -> int:
        """Write blob ``sha`` into the file ``into``; IntegrityError if the bytes do not
        hash to ``sha``."""
        ...

    def cancel(self, job_id: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Choice:
    """Which backend a run uses, and why (for the one-line notice and ``--json``)."""

    name: str  # local | http | modal
    reason: str


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


def choose(requested: str, environ: Mapping[str, str], endpoint: str | None) -> Choice:
    """``--backend`` (auto|local|http|modal) -> the backend to use.

    auto: http when an endpoint is configured (``MODAL_ENDPOINT`` or modal.toml
    ``[app] endpoint``), else modal when a Modal token is configured, else local.
    """
    if requested == "local":
        return Choice("local", "--local")
    if requested in ("http", "modal"):
        return Choice(requested, f"--backend {requested}")
    if endpoint:
        return Choice("http", f"{env.MODAL_ENDPOINT} is set" if environ.get(env.MODAL_ENDPOINT)
                      else "modal.toml [app] endpoint is set")
    if modal_token_configured(environ):
        import importlib.util

        if importlib.util.find_spec("modal") is not None:
            return Choice("modal", "a Modal token is configured")
        return Choice("local", "a Modal token is configured but Modal's SDK is not "
                               "installed (pip install 'canvascast[modal]')")
    return Choice("local", f"no remote configured (set {env.MODAL_ENDPOINT} and "
                           f"{env.MODAL_TOKEN}, or a Modal token)")
