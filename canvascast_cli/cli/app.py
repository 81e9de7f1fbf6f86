"""The ``canvascast`` root command: global options, and one sub-app per command group.

Heavy libraries (numpy, OpenCV, PyAV, torch, modal, whisper) are imported inside the
commands that need them, never here: ``canvascast --help`` must start instantly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from canvascast_cli import __version__
from canvascast_cli.cli import config_cmd, images, render, transcribe
from canvascast_cli.cli.output import Output
from canvascast_cli.errors import EXIT_CODES_HELP

app = typer.Typer(
    name="canvascast",
    help="CanvasCast's heavy compute from a terminal: generate scene images, render "
    "narrated videos from a timeline, transcribe narration — locally or on Modal."
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
        "--json", envvar="CANVASCAST_JSON", show_envvar=True,
        help="Print one JSON document on stdout (result or error); no progress bars.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", envvar="CANVASCAST_QUIET", show_envvar=True,
        help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", envvar="CANVASCAST_VERBOSE", show_envvar=True,
        help="More detail on stderr (commands run, timings).")] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", envvar="CANVASCAST_CONFIG", show_envvar=True, metavar="PATH",
        help="modal.toml to use (default: the nearest one in this folder or a parent).")
    ] = None,
    no_color: Annotated[bool, typer.Option(
        "--no-color", envvar="CANVASCAST_NO_COLOR", show_envvar=True,
        help="No colour on stderr (NO_COLOR is honoured too).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = Output(json=json_output, quiet=quiet, verbose=verbose, color=not no_color)
    ctx.meta["config_path"] = config


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
app.add_typer(transcribe.models_app, name="models", rich_help_panel="Operations")
app.add_typer(config_cmd.app, name="config", rich_help_panel="Operations")


def main() -> None:
    app()
