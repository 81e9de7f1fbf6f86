"""The ``canvascast`` root command: global options, and the table of its commands.

Heavy libraries (numpy, OpenCV, PyAV, torch, modal, whisper) are imported inside the
commands that need them, never here: ``canvascast --help`` must start instantly. Even the
command modules are imported only when their command runs or shows its own help:
``canvascast --help`` lists each from the ``COMMANDS`` table (panel and one-line help).

Every run goes through ``CanvasCastGroup.main``: SIGTERM/SIGHUP are handled like Ctrl-C,
usage errors become one JSON document under ``--json``, and a closed stdout (``| head``)
ends quietly.
"""

# No ``from __future__ import annotations`` here: typer reads the root's options from its
# annotations, and strings it would have to compile on every run (~3 ms of --help).
import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
import typer.main
from typer._click import Command
from typer.core import TyperCommand, TyperGroup

from canvascast_cli import __version__, env
from canvascast_cli.cli import lean_help
from canvascast_cli.errors import EXIT_CODES_HELP, EXIT_USAGE


class Entry(NamedTuple):
    """A command as ``canvascast --help`` lists it, and where it lives: its module
    (in ``canvascast_cli.cli``) is imported only when the command runs or shows its help."""

    panel: str
    summary: str  # a command's short help; a group's first paragraph of help
    module: str
    function: str = ""  # a command: its function and its help's name; a group: its `app`
    help: str = ""


COMMANDS = {  # in the order `canvascast --help` lists them
    "render": Entry("Jobs", "Render a JSON timeline to an H.264/AAC MP4.",
                    "render", "render_command", "RENDER_HELP"),
    "transcribe": Entry("Jobs", "Audio -> words with start/end times (Whisper): JSON, SRT, "
                        "VTT, text.", "transcribe", "transcribe_command", "TRANSCRIBE_HELP"),
    "images": Entry("Jobs", "Prompts + style -> images (gemini, diffusers, placeholder), "
                    "with sidecars.", "images", "images_command", "IMAGES_HELP"),
    "serve": Entry("Operations", "Run the job API locally (the same app Modal hosts).",
                   "serve", "serve_command", "SERVE_HELP"),
    "deploy": Entry("Operations", "Deploy the Modal functions from modal.toml (or --dry-run: "
                    "the plan).", "deploy_cmd", "deploy_command", "DEPLOY_HELP"),
    "status": Entry("Operations", "Breakers, warm pools, invocations, errors and spend "
                    "(--prometheus, --check).", "status_cmd", "status_command", "STATUS_HELP"),
    "warm": Entry("Operations", "Warm pools on Modal: containers kept ready when traffic "
                  "needs them, at a known cost. Overrides last until `canvascast warm reset` "
                  "(and survive redeploys: `canvascast deploy` applies them again).",
                  "warm_cmd"),
    "breaker": Entry("Operations", "The circuit breakers shared by every canvascast process "
                     "on this machine (one per backend and function; `canvascast status` "
                     "shows them).", "breaker_cmd"),
    "jobs": Entry("Operations", "Remote jobs by id: wait for one and fetch its result (after "
                  "the client that submitted it went away).", "jobs_cmd"),
    "models": Entry("Operations", "Whisper models available on this machine; convert between "
                    "engines.", "models_cmd"),
    "config": Entry("Operations", "Check and show the compute config (modal.toml; Modal "
                    "itself never reads it).", "config_cmd"),
    "cache": Entry("Operations", "The local result cache: a job done before is never done "
                   "again (renders, transcripts, images; capped by modal.toml's \\[cache] "
                   "max_gb).", "cache_cmd"),
}


class CommandGroup(TyperGroup):
    """A command group (the root, ``config``, ``jobs``, ``models``): run without its
    sub-command it shows its help — but under ``--json`` it is a usage error, one JSON
    document. (Click renders the help when it builds its "no arguments" error, onto
    stdout, so the check has to come before that.)"""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            from canvascast_cli.cli.context import Application

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


class LazyCommands(MutableMapping[str, Command]):
    """The root's commands by name: the ``COMMANDS`` table, each built the first time it
    is looked up (``_load``); one added later (``add_command``) is kept as given."""

    def __init__(self) -> None:
        self.loaded: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self.loaded and name in COMMANDS:
            self.loaded[name] = _load(name)
        return self.loaded[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self.loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(COMMANDS), **self.loaded})

    def __len__(self) -> int:
        return len({**dict.fromkeys(COMMANDS), **self.loaded})


def _load(name: str) -> Command:
    """A command from the table, built as registering it on ``app`` would build it."""
    entry = COMMANDS[name]
    module = importlib.import_module(f"canvascast_cli.cli.{entry.module}")
    holder = typer.Typer(rich_markup_mode=app.rich_markup_mode,
                         pretty_exceptions_short=app.pretty_exceptions_short,
                         suggest_commands=app.suggest_commands)
    if entry.function:
        holder.command(name, help=getattr(module, entry.help), short_help=entry.summary,
                       rich_help_panel=entry.panel)(getattr(module, entry.function))
    else:
        holder.add_typer(module.app, name=name, cls=CommandGroup, rich_help_panel=entry.panel)
    return typer.main.get_group(holder).commands[name]


def _summary(name: str) -> Command | None:
    """What listings need of a command not loaded yet: name, panel, one-line help (a
    group's as help, so that completions shorten it as they do a group's)."""
    entry = COMMANDS.get(name)
    if entry is None:
        return None
    return TyperCommand(name, rich_help_panel=entry.panel, help=entry.summary,
                        short_help=entry.summary if entry.function else None)


class CanvasCastGroup(CommandGroup):
    """The root. Its commands load lazily: click asks ``get_command`` for what listings
    show (``--help``, shell completion) and ``resolve_command`` for the command to run
    (its own ``--help`` included)."""

    commands: LazyCommands

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands()

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return list(self.commands)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Command | None:  # type: ignore[override]
        return self.commands.loaded.get(cmd_name) or _summary(cmd_name)

    def resolve_command(self, ctx: typer.Context, args: list[str]  # type: ignore[override]
                        ) -> tuple[str | None, Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return name, self.commands[name] if name is not None else command, rest

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
    from canvascast_cli.cli.output import Output
    from canvascast_cli.errors import InvalidInput

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
    from canvascast_cli.cli.context import Application

    application = ctx.obj if isinstance(ctx.obj, Application) else Application()
    application.out.json = application.out.json or json_output
    application.out.quiet, application.out.verbose = quiet, verbose
    application.out.color = not no_color
    application.config_path = config
    ctx.obj = application


def main() -> None:
    lean_help.install()  # typer's help renderer, minus two imports it never uses here
    app()
