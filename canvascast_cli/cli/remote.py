"""What the job commands share about where a job runs: the plan (backend and config, read
once), the dispatcher, and the progress of a job on a terminal (uploading, queued,
running, downloading).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from canvascast_cli.cli.context import Application
from canvascast_cli.errors import ConfigError, InvalidInput, ModalUnavailable

if TYPE_CHECKING:
    from canvascast_cli.config import Config
    from canvascast_cli.dispatch.backend import Backend, Choice
    from canvascast_cli.dispatch.dispatcher import Dispatcher, Stages
    from canvascast_cli.retry import RetryPolicy


def plan_backend(application: Application, requested: str, *, local: bool, remote: bool
                 ) -> tuple[Choice, Config]:
    """The backend this run uses and the config it runs with, from the flags, the
    environment and modal.toml — each read once, here.

    A run that stays local tolerates a broken modal.toml (warned, defaults used); a run
    that may go remote needs a valid one.
    """
    from canvascast_cli.dispatch.backend import Choice, choose, remote_configured

    environ = environ_of(application)
    if local and remote:
        raise InvalidInput("--local and --remote: give one")
    if remote and requested == "local":
        raise InvalidInput("--remote and --backend local: give one")
    if local or requested == "local":
        return Choice("local", "--local" if local else "--backend local"), \
            application.local_config()
    try:
        config = application.config()
    except ConfigError:
        if requested != "auto" or remote or remote_configured(environ, None):
            raise
        return Choice("local", "no remote configured"), application.local_config()
    choice = choose(requested, environ, config.settings)
    if choice.name == "local":
        if remote:
            raise ModalUnavailable(f"--remote: {choice.reason}")
        application.out.note(f"running locally: {choice.reason}")
    return choice, config


def make_dispatcher(application: Application, choice: Choice, config: Config, *,
                    remote_only: bool, stages: Stages | None = None) -> Dispatcher:
    from canvascast_cli.dispatch.dispatcher import Dispatcher, Silent

    services, out = application.services, application.out
    return Dispatcher(
        settings=config.settings, choice=choice, remote_only=remote_only,
        make_backend=lambda chosen, retry: open_backend(application, chosen, config, retry),
        stages=stages if stages is not None else Silent(),
        note=out.note, warn=out.warn, debug=out.debug, sleep=services.sleep,
        clock=services.clock)


def open_backend(application: Application, choice: Choice, config: Config,
                 retry: RetryPolicy | None = None) -> Backend:
    """The remote backend ``choice`` names, with this application's services."""
    from canvascast_cli.dispatch import backend
    from canvascast_cli.retry import RetryPolicy

    services = application.services
    return backend.open_backend(
        choice, config.settings, retry=retry or RetryPolicy(sleep=services.sleep),
        transport=services.transport, timeout=services.http_timeout, clock=services.clock)


def environ_of(application: Application) -> Any:
    return application.services.environ if application.services.environ is not None \
        else os.environ


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
    from canvascast_cli.dispatch.dispatcher import Silent

    progress = application.out.progress()
    if progress is None:
        yield Silent()
        return
    with progress:
        yield BarStages(progress, first, total, unit)
