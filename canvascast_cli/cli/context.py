"""The application object: built once by the root callback, handed to every command.

It holds the output (terminal or ``--json``), the config (loaded once, lazily, only by
the commands that need it) and the services commands reach the outside world with (the
image provider factory, the HTTP transport, sleep and clock for retries). Tests pass
their own ``Services`` instead of monkeypatching module internals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from canvascast_cli.cli.output import Output
from canvascast_cli.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from canvascast_cli.config import Config


def _default_provider_factory(name: str, model: str, **options: Any) -> Any:
    from canvascast_cli.engines.images.providers import make_provider

    return make_provider(name, model, **options)


@dataclass
class Services:
    """How commands reach the world; every field has a real default."""

    # (provider name, model, palette=..., notify=..., sleep=...) -> an images Provider
    image_provider: Callable[..., Any] = _default_provider_factory
    # httpx transport for the HTTP backend and downloads (httpx.MockTransport in tests)
    transport: httpx.BaseTransport | None = None
    http_timeout: float = 60.0  # seconds a job API request may take (polls add their wait)
    sleep: Callable[[float], None] = time.sleep  # retry backoff waits with this
    clock: Callable[[], float] = time.time  # wall clock (breaker, ledger)
    environ: dict[str, str] | None = None  # None: os.environ
    # settings -> an ops.fleet.Fleet (Modal's live warm pools); None: Modal's SDK
    fleet: Callable[[Any], Any] | None = None


@dataclass
class Application:
    out: Output = field(default_factory=Output)
    config_path: Path | None = None
    services: Services = field(default_factory=Services)
    _config: Config | None = None
    _config_error: ConfigError | None = None

    def config(self) -> Config:
        """The validated config; a ConfigError (exit 2) when it is invalid."""
        if self._config is None and self._config_error is None:
            from canvascast_cli.config import load_config

            try:
                self._config = load_config(self.config_path, env=self.services.environ)
            except ConfigError as exc:
                self._config_error = exc
        if self._config_error is not None:
            raise self._config_error
        assert self._config is not None
        return self._config

    def local_config(self) -> Config:
        """The config for a run on this machine: problems in it are noted, not fatal.

        A local run uses modal.toml only for cost comparisons and batch sizes, so a
        setting only the remote side needs must not stop it: the defaults stand in and
        a warning says what was ignored.
        """
        try:
            return self.config()
        except ConfigError as exc:
            from canvascast_cli.config import load_config

            self.out.warn(f"{exc.message}; ignored for this local run (built-in defaults "
                          "used; `canvascast config validate` lists them)")
            return load_config(search=False, env={})


def get_app(ctx: typer.Context) -> Application:
    """The Application the root callback set up (one is made for a bare sub-command)."""
    app = ctx.find_object(Application)
    if app is None:
        app = Application()
        ctx.obj = app
    return app


def command_app(ctx: typer.Context, json_flag: bool) -> Application:
    """``get_app`` plus a command's own ``--json`` (which adds to the global one)."""
    app = get_app(ctx)
    if json_flag:
        app.out.json = True
    return app
