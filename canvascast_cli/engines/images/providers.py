"""The image providers by name: defaults, and the factory that builds one.

Importing this module is cheap (no Pillow, SDK or torch): each provider's module is
imported only when that provider is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from canvascast_cli import env
from canvascast_cli.engines.images.base import Provider
from canvascast_cli.engines.images.gemini import DEFAULT_MODEL as GEMINI_DEFAULT_MODEL

PROVIDERS = ("gemini", "diffusers", "placeholder")
DEFAULT_MODELS = {
    "gemini": GEMINI_DEFAULT_MODEL,
    "diffusers": "black-forest-labs/FLUX.1-schnell",
    "placeholder": "placeholder-card-v1",
}
# The long side of the default image size, per provider (what each makes natively).
LONG_SIDE = {"gemini": 1344, "diffusers": 1024, "placeholder": 1920}


def default_provider(environ: Mapping[str, str]) -> str:
    """gemini when a Gemini API key is set, else the offline placeholder cards."""
    has_key = any(environ.get(name, "").strip() for name in env.GEMINI_KEYS)
    return "gemini" if has_key else "placeholder"


def make_provider(name: str, model: str, *, palette: list[str] | None = None,
                  notify: Callable[[str], None] | None = None,
                  sleep: Callable[[float], None] | None = None) -> Provider:
    """Build provider ``name`` for ``model``; ``sleep`` is what retry backoffs wait with."""
    if name == "placeholder":
        from canvascast_cli.engines.images.placeholder import PlaceholderProvider

        return PlaceholderProvider(palette=palette or None)
    if name == "gemini":
        from canvascast_cli.engines.images.gemini import GeminiProvider

        extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        return GeminiProvider.from_environment(model, **extra)
    if name == "diffusers":
        from canvascast_cli.engines.images.diffusers_provider import DiffusersProvider

        return DiffusersProvider(model, notify=notify)
    raise ValueError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
