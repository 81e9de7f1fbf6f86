"""``canvascast render``: a JSON timeline -> H.264/AAC MP4."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from canvascast_cli.cli.output import Output, get_output, reporting
from canvascast_cli.errors import EXIT_CODES_HELP, InvalidInput


class Preset(enum.StrEnum):
    ultrafast = "ultrafast"
    superfast = "superfast"
    veryfast = "veryfast"
    faster = "faster"
    fast = "fast"
    medium = "medium"
    slow = "slow"
    slower = "slower"
    veryslow = "veryslow"


def render_command(
    ctx: typer.Context,
    timeline: Annotated[Path | None, typer.Argument(
        metavar="TIMELINE", help="Timeline JSON file (see --schema).", show_default=False)
    ] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="OUT.mp4",
        help="Where to write the video. \\[default: TIMELINE's name with .mp4, here]")
    ] = None,
    local: Annotated[bool, typer.Option(
        "--local", help="Render on this machine (the default until a remote is configured).")
    ] = False,
    preset: Annotated[Preset, typer.Option(
        help="x264 speed/size trade-off.", case_sensitive=False)] = Preset.veryfast,
    crf: Annotated[int, typer.Option(
        min=0, max=51, help="x264 quality (lower is better and larger).")] = 20,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace OUT if it exists.")] = False,
    frames: Annotated[str | None, typer.Option(
        "--frames", metavar="START:END",
        help="Render only frames [START, END) (the pieces of a split render join exactly).")
    ] = None,
    ffmpeg: Annotated[str | None, typer.Option(
        "--ffmpeg", envvar="CANVASCAST_FFMPEG", show_envvar=True, metavar="PATH",
        help="ffmpeg binary with libx264 and libass. \\[default: imageio-ffmpeg's]")
    ] = None,
    schema: Annotated[bool, typer.Option(
        "--schema", help="Print the timeline JSON Schema and exit.")] = False,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print the result as one JSON document.")] = False,
) -> None:
    out = get_output(ctx, json_output)
    if schema:
        from canvascast_cli.timeline import timeline_schema

        sys.stdout.write(json.dumps(timeline_schema(), indent=2) + "\n")
        return
    with reporting(out):
        if timeline is None:
            raise InvalidInput("TIMELINE: give a timeline JSON file (or --schema)")
        destination = output if output is not None else Path(timeline.stem + ".mp4")
        frame_range = _parse_frames(frames) if frames else None
        _render(ctx, out, timeline, destination, local=local, preset=preset.value, crf=crf,
                overwrite=overwrite, frame_range=frame_range, ffmpeg=ffmpeg)


RENDER_HELP = f"Render a JSON timeline to an H.264/AAC MP4.\n\n{EXIT_CODES_HELP}"


def _parse_frames(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(":")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise InvalidInput(f"--frames: {text!r} is not START:END (whole frame numbers)")
    return int(start), int(end)


def _render(
    ctx: typer.Context,
    out: Output,
    timeline_path: Path,
    destination: Path,
    *,
    local: bool,
    preset: str,
    crf: int,
    overwrite: bool,
    frame_range: tuple[int, int] | None,
    ffmpeg: str | None,
) -> None:
    import time

    from canvascast_cli.config import function_cost_per_second, load_config
    from canvascast_cli.engines.render.engine import RenderOptions, render
    from canvascast_cli.engines.render.inputs import resolve_timeline
    from canvascast_cli.timeline import load_timeline_file

    config = load_config(ctx.meta.get("config_path"))
    timeline = load_timeline_file(timeline_path)
    started = time.perf_counter()
    resolved = resolve_timeline(timeline, timeline_path.resolve().parent)
    out.debug(f"inputs resolved in {time.perf_counter() - started:.2f} s")
    # Only the local backend exists so far; the remote one slots in here, behind the same
    # face (`--local` then forces this branch).
    backend = "local"
    del local

    spec = timeline.output
    total = frame_range[1] - frame_range[0] if frame_range else timeline.total_frames
    out.note(f"Rendering {timeline_path} -> {destination} ({spec.width}x{spec.height} @ "
             f"{spec.fps:g} fps, {total} frames, {total / spec.fps:.1f} s) on {backend}")
    options = RenderOptions(preset=preset, crf=crf, ffmpeg=ffmpeg, frame_range=frame_range)
    progress = out.progress()
    if progress is None:
        result = render(resolved, destination, options=options, overwrite=overwrite)
    else:
        with progress:
            task = progress.add_task("render", total=total, rate="")
            began = time.perf_counter()

            def update(done: int, all_frames: int) -> None:
                elapsed = time.perf_counter() - began
                rate = f"{done / elapsed:5.1f} fps" if elapsed > 0 else ""
                progress.update(task, completed=done, rate=rate)

            result = render(resolved, destination, options=options, overwrite=overwrite,
                            on_progress=update)

    rate = function_cost_per_second(config.settings, "render_video")
    fn = config.settings.functions.render_video
    would_cost = rate * result.render_seconds
    payload = {**result.to_dict(), "backend": backend, "preset": preset, "crf": crf,
               "cost": {"usd": 0.0, "modal_equivalent_usd": round(would_cost, 6)}}
    out.note(
        f"[green]Rendered[/green] {result.output}: {result.duration:.2f} s, {result.frames} "
        f"frames, {result.size_bytes / 1e6:.1f} MB in {result.render_seconds:.1f} s "
        f"({result.speed:.2f}x realtime)")
    out.note(f"Cost: $0 locally; the same run on Modal ({fn.cpu or 0.125:g} CPU, "
             f"{fn.memory or 128} MiB) "
             f"would cost about ${would_cost:.4f}")
    out.data(payload, text=result.output)
