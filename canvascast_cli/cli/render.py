"""``canvascast render``: a JSON timeline -> H.264/AAC MP4."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from canvascast_cli import env
from canvascast_cli.cli.cache_cmd import (
    NoCacheFlag,
    cache_report,
    remote_cache_flag,
    results_cache,
)
from canvascast_cli.cli.context import Application, command_app
from canvascast_cli.cli.options import (
    BackendName,
    BackendOption,
    JsonFlag,
    LocalFlag,
    OverwriteFlag,
    RemoteFlag,
)
from canvascast_cli.cli.output import reporting
from canvascast_cli.cli.uploads import (
    UploadFlag,
    open_upload_store,
    remote_upload,
    upload_files,
    wanted,
)
from canvascast_cli.engines.render.presets import DEFAULT_CRF, DEFAULT_PRESET, X264_PRESETS
from canvascast_cli.errors import EXIT_CODES_HELP, InvalidInput


def _preset(value: str) -> str:
    if value not in X264_PRESETS:
        raise typer.BadParameter(f"{value!r}; allowed: {', '.join(X264_PRESETS)}")
    return value

if TYPE_CHECKING:
    from collections.abc import Callable

    from canvascast_cli.engines.render.engine import RenderResult

RENDER_HELP = f"Render a JSON timeline to an H.264/AAC MP4.\n\n{EXIT_CODES_HELP}"


def render_command(
    ctx: typer.Context,
    timeline: Annotated[Path | None, typer.Argument(
        metavar="TIMELINE", help="Timeline JSON file (see --schema).", show_default=False)
    ] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="OUT.mp4",
        help="Where to write the video. \\[default: TIMELINE's name with .mp4, here]")
    ] = None,
    local: LocalFlag = False,
    remote: RemoteFlag = False,
    backend: BackendOption = BackendName.auto,
    preset: Annotated[str, typer.Option(
        help=f"x264 speed/size trade-off: {', '.join(X264_PRESETS)}.", callback=_preset,
        autocompletion=lambda: list(X264_PRESETS))] = DEFAULT_PRESET,
    crf: Annotated[int, typer.Option(
        min=0, max=51, help="x264 quality (lower is better and larger).")] = DEFAULT_CRF,
    overwrite: OverwriteFlag = False,
    frames: Annotated[str | None, typer.Option(
        "--frames", metavar="START:END",
        help="Render only frames [START, END) (the pieces of a split render join exactly).")
    ] = None,
    split: Annotated[str | None, typer.Option(
        "--split", metavar="auto|N",
        help="Cut the video into N frame ranges rendered in parallel (worker processes "
        "locally, one job each remotely) and joined by stream copy; auto: the cores "
        "here, one piece per minute of video remotely (docs/scale.md). "
        "\\[default: modal.toml's [render] split, else 1]")
    ] = None,
    ffmpeg: Annotated[str | None, typer.Option(
        "--ffmpeg", envvar=env.FFMPEG, show_envvar=True, metavar="PATH",
        help="ffmpeg binary with libx264 and libass. \\[default: imageio-ffmpeg's]")
    ] = None,
    allow_missing_glyphs: Annotated[bool, typer.Option(
        "--allow-missing-glyphs",
        help="Render even if no font here has some caption characters (they show as empty "
        "boxes; a warning, and --json's missing_glyphs, list them). Without it that is "
        "an error (exit 2) before any work.")] = False,
    schema: Annotated[bool, typer.Option(
        "--schema", help="Print the timeline JSON Schema and exit.")] = False,
    no_cache: NoCacheFlag = False,
    upload: UploadFlag = None,
    json_output: JsonFlag = False,
) -> None:
    application = command_app(ctx, json_output)
    if schema:
        from canvascast_cli.timeline import timeline_schema

        sys.stdout.write(json.dumps(timeline_schema(), indent=2) + "\n")
        return
    with reporting(application.out):
        if timeline is None:
            raise InvalidInput("TIMELINE: give a timeline JSON file (or --schema)")
        destination = output if output is not None else Path(timeline.stem + ".mp4")
        frame_range = parse_frames(frames) if frames else None
        _render(application, timeline, destination, local=local, remote=remote,
                backend=backend.value, preset=preset,
                crf=crf, overwrite=overwrite, frame_range=frame_range, ffmpeg=ffmpeg,
                allow_missing_glyphs=allow_missing_glyphs, no_cache=no_cache, upload=upload,
                split=split)


def parse_frames(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(":")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise InvalidInput(f"--frames: {text!r} is not START:END (whole frame numbers)")
    first, last = int(start), int(end)
    if first >= last:
        raise InvalidInput(f"--frames: {text!r}: START must be below END (frames START to "
                           "END-1 are rendered)")
    return first, last


def _render(
    application: Application,
    timeline_path: Path,
    destination: Path,
    *,
    local: bool,
    remote: bool,
    backend: str,
    preset: str,
    crf: int,
    overwrite: bool,
    frame_range: tuple[int, int] | None,
    ffmpeg: str | None,
    allow_missing_glyphs: bool = False,
    no_cache: bool = False,
    upload: bool | None = None,
    split: str | None = None,
) -> None:
    from canvascast_cli.cli.remote import make_dispatcher, plan_backend, stages_for
    from canvascast_cli.config import function_cost_per_second
    from canvascast_cli.dispatch.dispatcher import LocalCost, RemoteJob
    from canvascast_cli.engines.render.engine import RenderOptions
    from canvascast_cli.engines.render.job import RenderJob, check_job, input_limits, run_render
    from canvascast_cli.records import dump
    from canvascast_cli.timeline import load_timeline_file

    out = application.out
    timeline = load_timeline_file(timeline_path)
    choice, config = plan_backend(application, backend, local=local, remote=remote)
    job = RenderJob(
        timeline=timeline, base_dir=timeline_path.expanduser().absolute().parent,
        output=destination, overwrite=overwrite,
        options=RenderOptions(preset=preset, crf=crf, ffmpeg=ffmpeg, frame_range=frame_range),
        limits=input_limits(config.settings), allow_missing_glyphs=allow_missing_glyphs)
    check_job(job)  # before the note: a bad -o or --frames never prints "Rendering"
    ranges = _split_ranges(split, config.settings, job, local=choice.name == "local",
                           explicit=split is not None)
    store = (open_upload_store(application, config.settings)
             if wanted(upload, config.settings) else None)  # its settings: exit 2 now
    spec, total = timeline.output, job.frames
    out.note(f"Rendering {timeline_path} -> {destination} ({spec.width}x{spec.height} @ "
             f"{spec.fps:g} fps, {total} frames, {total / spec.fps:.1f} s) on {choice.name}"
             + (f" in {len(ranges)} pieces" if len(ranges) > 1 else ""))
    cache, cache_reason = results_cache(application, config, no_cache)
    key: str | None = None
    if cache is not None:
        from canvascast_cli.cache.keys import ffmpeg_identity, local_render_timeline, render_key

        keyed, cache_reason = local_render_timeline(timeline, job.base_dir)
        if keyed is not None:
            params: dict[str, Any] = {
                "preset": preset, "crf": crf, "frame_range": frame_range,
                "allow_missing_glyphs": allow_missing_glyphs,
                "audio_bitrate": job.options.audio_bitrate}
            if len(ranges) > 1:  # the same frames, other bytes (an IDR starts each piece)
                params["split"] = [list(r) for r in ranges]
            key = render_key(keyed, params, ffmpeg=ffmpeg_identity(ffmpeg))
        else:
            cache = None
    if cache is not None and key is not None:
        hit = _from_cache(application, cache, key, job, destination)
        if hit is not None:
            result, payload = hit
            if store is not None:
                payload["uploads"] = upload_files(application, store, config.settings,
                                                  [Path(result.output)])
            out.data(payload, text=result.output)
            return
    remote_cache: list[str | None] = []
    reported: dict[str, Any] = {}  # artifacts the job's host uploaded itself
    first = "render" if choice.name == "local" else "submitting"
    with stages_for(application, first, total, "frames") as stages:
        in_pieces: tuple[list[RemoteJob], Callable[[list[str]], RemoteJob],
                         list[RemoteJob]] | None = None
        if choice.name == "local":
            remote_job, fetch = RemoteJob("render_video"), None
        else:
            from canvascast_cli.dispatch.remote_jobs import render_remote

            remote_job, fetch = render_remote(job, stages)
            remote_job, fetch = remote_cache_flag(remote_job, fetch, config, no_cache,
                                              remote_cache)
            remote_job, fetch = remote_upload(remote_job, fetch, store, reported)
            if len(ranges) > 1:  # pieces at once on the host, joined there
                from canvascast_cli.dispatch.remote_jobs import split_jobs

                in_pieces = split_jobs(remote_job, ranges)

        def here() -> RenderResult:
            stages.stage("render", total, "frames")
            if len(ranges) > 1:
                from canvascast_cli.engines.render.split import render_local

                return render_local(job, ranges, progress=stages.update, note=out.note)
            return run_render(job, progress=stages.update)

        dispatcher = make_dispatcher(application, choice, config, remote_only=remote,
                                     stages=stages)
        if in_pieces is not None:
            began = time.perf_counter()
            outcome = dispatcher.run_split(*in_pieces, local=here, fetch=fetch)
            if outcome.pieces:  # the join's own seconds are not the render's: the wall
                wall = time.perf_counter() - began
                outcome.value = replace(outcome.value, render_seconds=wall, speed=round(
                    outcome.value.duration / wall, 3) if wall > 0 else 0.0)
        else:
            outcome = dispatcher.run(remote_job, local=here, fetch=fetch)
    result = outcome.value
    report = dump(outcome.report())
    if outcome.backend == "local":
        rate = function_cost_per_second(config.settings, "render_video")
        fn = config.settings.functions.render_video
        would_cost = rate * result.render_seconds
        report["cost"] = dump(LocalCost(usd=0.0, modal_equivalent_usd=would_cost))
        cost_line = (f"Cost: $0 locally; the same run on Modal ({fn.cpu or 0.125:g} CPU, "
                     f"{fn.memory or 128} MiB) would cost about ${would_cost:.4f}")
    else:
        cost_line = (f"Cost on {outcome.backend}: about ${outcome.actual_usd or 0:.4f} "
                     f"({outcome.billed_seconds or 0:.1f} s billed)")
    if cache is not None and key is not None:
        summary = dump(result)
        summary.pop("output", None)
        cache.store("render", key, {"video.mp4": Path(result.output)}, data=summary,
                    label=f"{timeline_path.name} ({result.frames} frames, {preset}, crf {crf})")
    payload = {**dump(result), **report, "preset": preset, "crf": crf,
               **cache_report("miss" if key is not None else "off", key, cache_reason,
                              remote_cache[0] if remote_cache else None)}
    for warning in result.warnings:
        out.warn(warning)
    out.note(
        f"[green]Rendered[/green] {result.output}: {result.duration:.2f} s, {result.frames} "
        f"frames, {result.size_bytes / 1e6:.1f} MB in {result.render_seconds:.1f} s "
        f"({result.speed:.2f}x realtime)")
    out.note(cost_line)
    if store is not None:
        payload["uploads"] = upload_files(application, store, config.settings,
                                          [Path(result.output)], reported=reported)
    out.data(payload, text=result.output)


def _split_ranges(text: str | None, settings: Any, job: Any, *, local: bool,
                  explicit: bool) -> list[tuple[int, int]]:
    """The frame ranges of a split render (one range: not split)."""
    from canvascast_cli.engines.render.split import auto_pieces, parse_split, plan

    value = parse_split(text if text is not None else settings.render.split)
    if value == 1:
        return [(0, job.timeline.total_frames)]
    if job.options.frame_range is not None:
        if explicit:
            raise InvalidInput("--split renders the whole video in pieces; it cannot be "
                               "combined with --frames")
        return [job.options.frame_range]  # modal.toml's default applies to whole renders
    total = job.timeline.total_frames
    pieces = value if isinstance(value, int) else auto_pieces(
        total, job.timeline.output.fps, local=local,
        max_containers=settings.functions.render_video.max_containers)
    return plan(total, pieces)


def _from_cache(application: Application, cache: Any, key: str, job: Any,
                destination: Path) -> tuple[Any, dict[str, Any]] | None:
    """Write the cached video to the destination: its result and ``--json`` payload;
    None on a miss."""
    from canvascast_cli.atomic import staged
    from canvascast_cli.cache.store import restore
    from canvascast_cli.engines.render.engine import RenderResult
    from canvascast_cli.records import dump

    entry = cache.lookup("render", key)
    if entry is None:
        return None
    output = destination.expanduser().absolute()
    _refuse_an_input(output, job)
    with staged(output, overwrite=job.overwrite, suffix=".part" + output.suffix) as tmp:
        restore(entry, "video.mp4", tmp)
    result = RenderResult(**{**entry.data, "output": str(output)})
    out = application.out
    for warning in result.warnings:
        out.warn(warning)
    out.note(f"[green]Cache hit[/green] ({entry.short}): {result.output} as rendered "
             f"before ({result.frames} frames, {result.size_bytes / 1e6:.1f} MB; "
             f"{result.render_seconds:.1f} s saved); --no-cache renders again")
    payload = {**dump(result), "backend": "cache", "fallback": None, "job_id": None,
               "preset": job.options.preset, "crf": job.options.crf,
               **cache_report("hit", key)}
    return result, payload


def _refuse_an_input(output: Path, job: Any) -> None:
    """The check run_render makes (never write the video over one of its own inputs),
    from the timeline's file references alone: a cache hit resolves nothing else."""
    from canvascast_cli.engines.render.job import refuse_overwriting
    from canvascast_cli.protocol import is_url, timeline_refs

    refs = timeline_refs(job.timeline.model_dump(mode="json")).values()
    paths = (Path(ref).expanduser() for ref in refs if not is_url(ref))
    refuse_overwriting(output, (p if p.is_absolute() else job.base_dir / p for p in paths))
