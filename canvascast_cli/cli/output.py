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
from canvascast_cli.errors import CanvasCastError, Interrupted

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
        if not self.json:
            self.err.print(f"[yellow]warning:[/yellow] {message}")

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


def get_output(ctx: typer.Context, json_flag: bool = False) -> Output:
    """The Output set up by the root callback; a command's own ``--json`` adds to it."""
    out = ctx.find_object(Output)
    if out is None:  # a command invoked without the root callback (tests)
        out = Output()
        ctx.obj = out
    if json_flag:
        out.json = True
    return out


@contextmanager
def reporting(out: Output) -> Iterator[None]:
    """Turn CanvasCastError (and Ctrl-C) into the documented output and exit code."""
    try:
        yield
    except CanvasCastError as exc:
        out.error(exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        interrupted = Interrupted("interrupted")
        out.error(interrupted)
        raise typer.Exit(interrupted.exit_code) from None
