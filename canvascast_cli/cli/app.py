"""The ``canvascast`` root command: global options, and one sub-app per command group.

Heavy libraries (numpy, OpenCV, PyAV, torch, modal, whisper) are imported inside the
commands that need them, never here: ``canvascast --help`` must start instantly.

Every run goes through ``CanvasCastGroup.main``: SIGTERM/SIGHUP are handled like Ctrl-C,
usage errors become one JSON document under ``--json``, and a closed stdout (``| head``)
ends quietly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from canvascast_cli import __version__, env
from canvascast_cli.cli import (
    breaker_cmd,
    cache_cmd,
    config_cmd,
    deploy_cmd,
    images,
    jobs_cmd,
    lean_help,
    models_cmd,
    render,
    serve,
    status_cmd,
    transcribe,
    warm_cmd,
)
from canvascast_cli.cli.context import Application
from canvascast_cli.cli.output import Output
from canvascast_cli.errors import EXIT_CODES_HELP, EXIT_USAGE, InvalidInput


class CommandGroup(TyperGroup):
    """A command group (the root, ``config``, ``jobs``, ``models``): run without its
    sub-command it shows its help — but under ``--json`` it is a usage error, one JSON
    document. (Click renders the help when it builds its "no arguments" error, onto
    stdout, so the check has to come before that.)"""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            application = ctx.find_object(Application)
            if _wants_json(()) or (application is not None and application.out.json):
                raise MissingCommand(ctx)
        return super().parse_args(ctx, args)


class MissingCommand(typer.TyperException):
    """A command group without its sub-command, under ``--json``."""

    exit_code = EXIT_USAGE

    def __init__(self, ctx: typer.Context) -> None:
        names = sorted(getattr(ctx.command, "commands", {}) or {})
        self.message = (f"{ctx.command_path}: give a command" +
                        (f": {', '.join(names)}" if names else "") +
                        f" (see {ctx.command_path} --help)")
        super().__init__(self.message)


class CanvasCastGroup(CommandGroup):
    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        from canvascast_cli.signals import terminating_signals

        argv = list(sys.argv[1:] if args is None else args)
        with terminating_signals():
            try:
                result = super().main(argv, prog_name or "canvascast", complete_var,
                                      standalone_mode=False,
                                      windows_expand_args=windows_expand_args, **extra)
                code = result if isinstance(result, int) else 0
            except typer.TyperException as exc:  # usage errors: bad flags and arguments
                code = _usage_error(exc, argv)
            except typer.Abort:
                code = 130
            except BrokenPipeError:  # stdout closed early (`| head`): not an error
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
                code = 0
        if standalone_mode:
            sys.exit(code)
        return code


def _wants_json(argv: Sequence[str]) -> bool:
    flag = os.environ.get(env.JSON, "").strip().lower() in ("1", "true", "yes", "on")
    return flag or "--json" in argv[: argv.index("--") if "--" in argv else len(argv)]


def _usage_error(exc: typer.TyperException, argv: Sequence[str]) -> int:
    code = getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE
    if isinstance(exc, MissingCommand):
        Output(json=True).error(InvalidInput(exc.message))
        return EXIT_USAGE
    if not _wants_json(argv):
        from typer import rich_utils

        rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
        return int(code)
    message = exc.format_message().replace("Value error, ", "")
    Output(json=True).error(InvalidInput(message))
    return EXIT_USAGE


app = typer.Typer(
    name="canvascast",
    cls=CanvasCastGroup,
    help="CanvasCast's heavy compute from a terminal: generate scene images, render "
    "narrated videos from a timeline, transcribe narration — on Modal or locally."
    f"\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"canvascast {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option(
        "--json", envvar=env.JSON, show_envvar=True,
        help="Print one JSON document on stdout (result or error); no progress bars.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", envvar=env.QUIET, show_envvar=True,
        help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", envvar=env.VERBOSE, show_envvar=True,
        help="More detail on stderr (commands run, timings, tracebacks).")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", envvar=env.CONFIG, show_envvar=True, metavar="PATH",
        help="modal.toml to use (default: the nearest one in this folder or a parent).")
    ] = None,
    no_color: Annotated[bool, typer.Option(
        "--no-color", envvar=env.NO_COLOR, show_envvar=True,
        help="No colour on stderr (NO_COLOR is honoured too).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    # An Application passed in (tests: ``CliRunner.invoke(app, obj=...)``) keeps its
    # services; the flags configure its output either way.
    application = ctx.obj if isinstance(ctx.obj, Application) else Application()
    application.out.json = application.out.json or json_output
    application.out.quiet, application.out.verbose = quiet, verbose
    application.out.color = not no_color
    application.config_path = config
    ctx.obj = application


app.command(
    "render",
    help=render.RENDER_HELP,
    short_help="Render a JSON timeline to an H.264/AAC MP4.",
    rich_help_panel="Jobs",
    no_args_is_help=False,
)(render.render_command)
app.command(
    "transcribe",
    help=transcribe.TRANSCRIBE_HELP,
    short_help="Audio -> words with start/end times (Whisper): JSON, SRT, VTT, text.",
    rich_help_panel="Jobs",
)(transcribe.transcribe_command)
app.command(
    "images",
    help=images.IMAGES_HELP,
    short_help="Prompts + style -> images (gemini, diffusers, placeholder), with sidecars.",
    rich_help_panel="Jobs",
)(images.images_command)
app.command(
    "serve",
    help=serve.SERVE_HELP,
    short_help="Run the job API locally (the same app Modal hosts).",
    rich_help_panel="Operations",
)(serve.serve_command)
app.command(
    "deploy",
    help=deploy_cmd.DEPLOY_HELP,
    short_help="Deploy the Modal functions from modal.toml (or --dry-run: the plan).",
    rich_help_panel="Operations",
)(deploy_cmd.deploy_command)
app.add_typer(warm_cmd.app, name="warm", cls=CommandGroup, rich_help_panel="Operations")
app.command(
    "status",
    help=status_cmd.STATUS_HELP,
    short_help="Breakers, warm pools, invocations, errors and spend (--prometheus, --check).",
    rich_help_panel="Operations",
)(status_cmd.status_command)
app.add_typer(breaker_cmd.app, name="breaker", cls=CommandGroup, rich_help_panel="Operations")
app.add_typer(jobs_cmd.app, name="jobs", cls=CommandGroup, rich_help_panel="Operations")
app.add_typer(models_cmd.app, name="models", cls=CommandGroup, rich_help_panel="Operations")
app.add_typer(config_cmd.app, name="config", cls=CommandGroup, rich_help_panel="Operations")
app.add_typer(cache_cmd.app, name="cache", cls=CommandGroup, rich_help_panel="Operations")


def main() -> None:
    lean_help.install()  # typer's help renderer, minus two imports it never uses here
    app()
