"""Terminal output: data on stdout, everything else (progress, notes, costs) on stderr.

With ``--json`` a command prints exactly one JSON document on stdout — its result, or
``{"error": {"code", "message", "retryable"}}`` — and no progress bars. Progress bars
show only when stderr is a terminal; ``NO_COLOR`` and ``--no-color`` turn colour off.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from canvascast_cli import env
from canvascast_cli.errors import (
    CanvasCastError,
    Interrupted,
    InvalidInput,
    JobFailed,
    from_os_error,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


@dataclass
class Output:
    json: bool = False
    quiet: bool = False
    verbose: bool = False
    color: bool = True

    _stderr: Console | None = None

    @property
    def err(self) -> Console:
        if self._stderr is None:
            from rich.console import Console

            no_color = not self.color or env.NO_COLOR_STANDARD in os.environ
            self._stderr = Console(stderr=True, no_color=no_color, highlight=False,
                                   soft_wrap=True)
        return self._stderr

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person watching a terminal."""
        return not (self.json or self.quiet) and sys.stderr.isatty()

    def note(self, message: str) -> None:
        """A line for the person at the terminal (suppressed by --quiet and --json)."""
        if not (self.quiet or self.json):
            self.err.print(message)

    def debug(self, message: str) -> None:
        if self.verbose and not self.json:
            self.err.print(f"[dim]{message}[/dim]")

    def warn(self, message: str) -> None:
        """A warning: plain text (a server's or a file's words included, so nothing in it
        is read as markup)."""
        if not self.json:
            from rich.markup import escape

            self.err.print(f"[yellow]warning:[/yellow] {escape(message)}")

    def data(self, payload: Any, text: str | None = None) -> None:
        """The command's result: JSON with --json, else ``text`` (if any) on stdout."""
        if self.json:
            sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        elif text is not None:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def error(self, exc: CanvasCastError) -> None:
        if self.json:
            sys.stdout.write(json.dumps({"error": exc.to_dict()}, indent=2) + "\n")
            sys.stdout.flush()
            return
        from rich.markup import escape

        self.err.print(f"[bold red]error:[/bold red] {escape(exc.message)}")
        for detail in exc.details:
            self.err.print(f"  - {escape(detail)}")

    def progress(self) -> Progress | None:
        if not self.interactive:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.err,
            transient=False,
        )


@contextmanager
def reporting(out: Output) -> Iterator[None]:
    """Every way a command can fail ends here: one message (one JSON document under
    ``--json``), a documented exit code; a traceback only with ``--verbose``."""
    try:
        yield
    except typer.Exit:
        raise
    except BaseException as exc:
        error = as_error(exc)
        if out.verbose and not isinstance(exc, (CanvasCastError, KeyboardInterrupt)):
            import traceback

            out.err.print(traceback.format_exc(), markup=False, highlight=False)
        out.error(error)
        raise typer.Exit(error.exit_code) from None


def as_error(exc: BaseException) -> CanvasCastError:
    """Any exception as the CanvasCastError the user sees."""
    if isinstance(exc, CanvasCastError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        from canvascast_cli.signals import signal_number

        signum = signal_number(exc)
        name = "Ctrl-C" if signum == 2 else __import__("signal").Signals(signum).name
        return Interrupted(f"interrupted ({name}); nothing was written", signum=signum)
    if isinstance(exc, OSError):
        return from_os_error(exc)
    if isinstance(exc, MemoryError):
        return JobFailed("out of memory")
    if isinstance(exc, RecursionError):
        return InvalidInput("input nested too deeply to process")
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return JobFailed(f"internal error: {type(exc).__name__}" + (f": {message}" if message
                                                                 else "")
                     + " (run with --verbose for the traceback)")
