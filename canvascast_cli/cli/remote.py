"""What the job commands share about where a job runs: backend choice, the dispatcher,
and the progress of a remote job on a terminal (uploading, queued, running, downloading).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from canvascast_cli import env
from canvascast_cli.cli.context import Application
from canvascast_cli.errors import AuthFailed, ConfigError, InvalidInput, ModalUnavailable

if TYPE_CHECKING:
    from canvascast_cli.config import Config
    from canvascast_cli.dispatch.backend import Backend, Choice
    from canvascast_cli.dispatch.dispatcher import Dispatcher


def plan_backend(application: Application, requested: str, *, local: bool, remote: bool
                 ) -> tuple[Choice, Config]:
    """The backend this run uses and the config it runs with.

    A run that stays local tolerates a broken modal.toml (warned, defaults used); a run
    that may go remote needs a valid one.
    """
    from canvascast_cli.dispatch.backend import Choice, choose, modal_token_configured

    environ = _environ(application)
    if local and remote:
        raise InvalidInput("--local and --remote: give one")
    if local or requested == "local":
        if remote:
            raise InvalidInput("--remote with --backend local: give one")
        return Choice("local", "--local"), application.local_config()
    try:
        config = application.config()
    except ConfigError:
        remote_configured = bool(environ.get(env.MODAL_ENDPOINT)) or \
            modal_token_configured(environ)
        if requested != "auto" or remote or remote_configured:
            raise
        return Choice("local", "no remote configured"), application.local_config()
    endpoint = environ.get(env.MODAL_ENDPOINT) or config.settings.app.endpoint
    choice = choose(requested, environ, endpoint)
    if choice.name == "local":
        if remote:
            raise ModalUnavailable(f"--remote: {choice.reason}")
        application.out.note(f"running locally: {choice.reason}")
    return choice, config


def make_dispatcher(application: Application, choice: Choice, config: Config, *,
                    remote_only: bool, stages: Any = None) -> Dispatcher:
    from canvascast_cli.dispatch.dispatcher import Dispatcher

    services = application.services
    return Dispatcher(
        settings=config.settings, choice=choice, remote_only=remote_only,
        make_backend=lambda name, attempts: make_backend(application, name, config,
                                                         attempts=attempts),
        stages=stages if stages is not None else _NoStages(),
        note=application.out.note, sleep=services.sleep, clock=services.clock)


def make_backend(application: Application, name: str, config: Config, *,
                 attempts: int = 3) -> Backend:
    environ = _environ(application)
    services = application.services
    if name == "http":
        from canvascast_cli.dispatch.http import HttpBackend
        from canvascast_cli.dispatch.retry import RetryPolicy

        endpoint = environ.get(env.MODAL_ENDPOINT) or config.settings.app.endpoint
        if not endpoint:
            raise InvalidInput(f"--backend http: set {env.MODAL_ENDPOINT} (or [app] endpoint "
                               "in modal.toml) to the job API's URL")
        token = environ.get(env.MODAL_TOKEN, "").strip()
        if not token:
            raise AuthFailed(f"the http backend needs {env.MODAL_TOKEN} (the job API's "
                             "bearer token)")
        return HttpBackend(endpoint, token, transport=services.transport,
                           retry=RetryPolicy(attempts=attempts, sleep=services.sleep),
                           timeout=services.http_timeout, clock=services.clock)
    if name == "modal":
        from canvascast_cli.dispatch.modal_backend import ModalBackend
        from canvascast_cli.dispatch.retry import RetryPolicy

        return ModalBackend.from_settings(
            config.settings, retry=RetryPolicy(attempts=attempts, sleep=services.sleep))
    raise InvalidInput(f"--backend: {name!r}; allowed: auto, local, http, modal")


def _environ(application: Application) -> Any:
    return application.services.environ if application.services.environ is not None \
        else os.environ


class _NoStages:
    def stage(self, name: str, total: float | None, unit: str) -> None:
        return None

    def update(self, done: float, total: float | None = None) -> None:
        return None


class BarStages:
    """One Rich progress bar whose stage (uploading, queued, running, downloading) and
    unit change as the job moves; ``local`` runs use it too (stage 'render' etc.)."""

    def __init__(self, progress: Any, first: str, total: float | None, unit: str) -> None:
        self._progress = progress
        self._task = progress.add_task(first, total=total, rate="")
        self._unit = unit
        self._began = time.perf_counter()

    def stage(self, name: str, total: float | None, unit: str) -> None:
        self._unit, self._began = unit, time.perf_counter()
        self._progress.reset(self._task, total=total, description=name, rate="")

    def update(self, done: float, total: float | None = None) -> None:
        elapsed = time.perf_counter() - self._began
        rate = ""
        if elapsed > 0 and done:
            per_second = done / elapsed
            rate = (f"{per_second / 1e6:5.1f} MB/s" if self._unit == "bytes"
                    else f"{per_second:5.1f} {self._unit}/s")
        if total is not None:
            self._progress.update(self._task, completed=done, total=total, rate=rate)
        else:
            self._progress.update(self._task, completed=done, rate=rate)


@contextmanager
def stages_for(application: Application, first: str, total: float | None, unit: str
               ) -> Iterator[Any]:
    """A ``BarStages`` on a terminal; a silent one otherwise (``--json``, pipes)."""
    progress = application.out.progress()
    if progress is None:
        yield _NoStages()
        return
    with progress:
        yield BarStages(progress, first, total, unit)
