"""Whether Modal can be asked at all: a token, before any SDK call."""

from __future__ import annotations

from collections.abc import Mapping

from canvascast_cli import env
from canvascast_cli.dispatch.backend import modal_token_configured
from canvascast_cli.errors import InvalidInput

TOKEN_HELP = (f"set {env.MODAL_TOKEN_ID} and {env.MODAL_TOKEN_SECRET} (create a token at "
              "https://modal.com/settings/tokens; in CI, from the repository's secrets), or "
              "store one in ~/.modal.toml with `modal token new`")


def has_credentials(environ: Mapping[str, str]) -> bool:
    """A Modal token in the environment, or a profile in Modal's own ~/.modal.toml."""
    return modal_token_configured(environ)


def require_credentials(environ: Mapping[str, str], doing: str) -> None:
    """``InvalidInput`` (exit 2) at once when no Modal token is configured: the SDK would
    fail later and less clearly. Names the variables and where a token comes from; never
    prints a token."""
    if not has_credentials(environ):
        raise InvalidInput(f"{doing} needs a Modal token: {TOKEN_HELP}")
