"""``canvascast transcribe``: audio -> words with start/end times; and ``canvascast models``."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from canvascast_cli.atomic import check_destination, staged
from canvascast_cli.cli.cache_cmd import (
    NoCacheFlag,
    cache_report,
    remote_cache_flag,
    results_cache,
)
from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import (
    BackendName,
    BackendOption,
    LocalFlag,
    OverwriteFlag,
    RemoteFlag,
)
from canvascast_cli.cli.output import reporting
from canvascast_cli.cli.uploads import UploadFlag, open_upload_store, upload_files, wanted
from canvascast_cli.engines.transcribe import SCRIPT_FAIL_SHARE, SCRIPT_WARN_SHARE
from canvascast_cli.errors import EXIT_CODES_HELP, InvalidInput

if TYPE_CHECKING:
    from canvascast_cli.engines.transcribe.result import Transcript




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
        help="Write here (format from the extension: .json .srt .vtt .txt, unless "
        "--format); '-' is stdout. \\[default: stdout]")] = None,
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
    allow_script_mismatch: Annotated[bool, typer.Option(
        "--allow-script-mismatch", help=f"Keep going when under {SCRIPT_FAIL_SHARE:.0%} of "
        "the script's words match the speech (a warning below "
        f"{SCRIPT_WARN_SHARE:.0%} either way).")] = False,
    beam_size: Annotated[int, typer.Option(
        min=1, max=20, help="Beam width (1 = greedy, fastest).")] = 5,
    refine: Annotated[bool, typer.Option(
        "--refine/--no-refine", help="Re-time the words against the audio with an "
        "acoustic aligner (pocketsphinx; English); skipped with a note where it is not "
        "available.")] = True,
    compute_type: Annotated[str | None, typer.Option(
        metavar="TYPE", help="int8, float16, float32... \\[default: int8 on CPU, float16 on "
        "GPU]")] = None,
    offset: Annotated[float, typer.Option(
        min=0.0, help="Seconds added to every time (a piece of a longer recording).")] = 0.0,
    local: LocalFlag = False,
    remote: RemoteFlag = False,
    backend: BackendOption = BackendName.auto,
    overwrite: OverwriteFlag = False,
    no_cache: NoCacheFlag = False,
    upload: UploadFlag = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document (the transcript, or with -o a summary).")
    ] = False,
) -> None:
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        to_stdout = output is None or str(output) == "-"
        chosen = _format(fmt, None if to_stdout else output)
        destination = None if to_stdout else check_destination(
            output, overwrite=overwrite, what="-o")  # type: ignore[arg-type]
        from canvascast_cli.cli.remote import plan_backend
        from canvascast_cli.engines.transcribe.job import TranscribeJob
        from canvascast_cli.engines.transcribe.pipeline import read_script

        job = TranscribeJob(
            audio=audio, engine=engine.value, model=model, language=language,
            beam_size=beam_size, offset=offset, compute_type=compute_type,
            script=tuple(read_script(script)) if script is not None else None,
            allow_script_mismatch=allow_script_mismatch, refine=refine)
        if not audio.is_file():
            raise InvalidInput(f"{audio}: " + ("is a folder, not a file" if audio.is_dir()
                                               else "file not found"))
        choice, config = plan_backend(application, backend.value, local=local, remote=remote)
        store = None
        if wanted(upload, config.settings):
            if destination is None:
                raise InvalidInput("--upload needs -o: a transcript written to stdout is "
                                   "not a file to upload")
            store = open_upload_store(application, config.settings)
        cache, cache_reason = results_cache(application, config, no_cache)
        key = _cache_key(job) if cache is not None else None
        entry = cache.lookup("transcript", key) if cache is not None and key else None
        remote_cache: list[str | None] = []
        if entry is not None:
            transcript = _cached_transcript(entry)
            from canvascast_cli.dispatch.dispatcher import RunReport

            report: Any = RunReport(backend="cache")
            out.note(f"[green]Cache hit[/green] ({entry.short}): transcribed before; "
                     "--no-cache transcribes again")
        else:
            outcome = _run(application, job, choice, config, remote, no_cache,
                           remote_cache)
            transcript, report = outcome.value, outcome.report()
            if cache is not None and key is not None:
                from canvascast_cli.records import dump as _dump

                cache.store("transcript", key, {"transcript.json": (json.dumps(
                    _dump(transcript), ensure_ascii=False) + "\n").encode("utf-8")},
                    label=f"{audio.name} ({job.engine} {job.model})")
        cached = cache_report("hit" if entry is not None else "miss" if key else "off",
                              key, cache_reason, remote_cache[0] if remote_cache else None)

        from canvascast_cli.engines.transcribe.formats import render_transcript

        for warning in transcript.warnings:
            out.warn(warning)
        refinement = transcript.refinement
        if refinement is not None and refinement.skipped is not None:
            from rich.markup import escape

            out.note(f"word timing refinement skipped: {escape(refinement.skipped)}")
        text = render_transcript(transcript, chosen)
        timing = transcript.extra.get("timing", {})
        summary = (f"{len(transcript.words)} words, {transcript.duration:.1f} s of audio, "
                   f"{transcript.engine} {transcript.model}, "
                   f"{timing.get('realtime_factor')}x realtime")
        if transcript.alignment is not None:
            a = transcript.alignment
            summary += (f"; script: {a.matched}/{a.script_words} words matched, "
                        f"{a.interpolated} interpolated")
        if refinement is not None and refinement.skipped is None:
            summary += f"; {refinement.refined}/{len(refinement.kept)} word times refined"
        from canvascast_cli.records import dump

        where = {**dump(report), **cached}
        if destination is None:
            if out.json:
                doc = {**dump(transcript), **where}
                if chosen != "json":
                    doc.update(rendered=text, format=chosen)
                out.data(doc)
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
            out.note(summary)
            return
        with staged(destination, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
        out.note(f"[green]Wrote[/green] {destination} ({chosen}): {summary}")
        if store is not None:
            where["uploads"] = upload_files(application, store, config.settings,
                                            [destination])
        out.data({"output": str(destination), "format": chosen,
                  "words": len(transcript.words), "segments": len(transcript.segments),
                  "duration": transcript.duration, "language": transcript.language,
                  "engine": transcript.engine, "model": transcript.model,
                  "alignment": dump(transcript.alignment),
                  "refinement": dump(refinement),
                  "warnings": list(transcript.warnings), **timing, **where},
                 text=str(destination))


def _format(fmt: Format | None, output: Path | None) -> str:
    if fmt is not None:
        return fmt.value
    if output is None:
        return "json"
    suffix = output.suffix.lower().lstrip(".")
    if suffix in Format.__members__:
        return suffix
    raise InvalidInput(f"-o: cannot tell the format from {output.name!r}; name it .json, "
                       ".srt, .vtt or .txt, or pass --format")


def _cache_key(job: Any) -> str | None:
    from canvascast_cli.cache.keys import file_sha256, transcript_key

    return transcript_key(
        audio_sha256=file_sha256(job.audio), engine=job.engine, model=job.model,
        language=job.language, beam_size=job.beam_size, compute_type=job.compute_type,
        offset=job.offset, script=job.script,
        allow_script_mismatch=job.allow_script_mismatch, refine=job.refine)


def _cached_transcript(entry: Any) -> Transcript:
    from canvascast_cli.engines.transcribe.result import Transcript

    text = entry.files["transcript.json"].read_text(encoding="utf-8")
    return Transcript.from_dict(json.loads(text))


def _run(application: Any, job: Any, choice: Any, config: Any, remote: bool,
         no_cache: bool, remote_cache: list[str | None]) -> Any:
    """The transcription, here or remotely (the dispatcher's Outcome). A long recording
    sent to a remote backend goes as pieces cut at pauses, one job each, at once
    (``parallel.REMOTE_PIECE_SECONDS``; docs/scale.md), unless ``--script`` is given."""
    import contextlib

    from canvascast_cli.cli.remote import make_dispatcher, stages_for
    from canvascast_cli.dispatch.dispatcher import RemoteJob
    from canvascast_cli.engines.transcribe.job import run_transcribe

    first = "transcribe" if choice.name == "local" else "submitting"
    with stages_for(application, first, None, "s") as stages, \
            contextlib.ExitStack() as scratch:
        pieces: list[RemoteJob] = []
        if choice.name == "local":
            remote_job, fetch = RemoteJob("transcribe_audio"), None
        else:
            from canvascast_cli.dispatch.remote_jobs import (
                audio_seconds,
                check_transcribe_remote,
                transcribe_remote,
                transcribe_split_remote,
            )

            check_transcribe_remote(job)
            seconds = audio_seconds(job.audio)
            count = _remote_pieces(job, seconds, config)
            if count == 1:  # the whole file hashed and sent only when it goes as is
                remote_job, fetch = transcribe_remote(job, seconds)
                remote_job, fetch = remote_cache_flag(remote_job, fetch, config, no_cache,
                                                  remote_cache)
            else:
                import tempfile

                from canvascast_cli.engines.transcribe.parallel import cut_to_files

                stages.stage("cutting at pauses", None, "s")
                folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(
                    prefix="canvascast-pieces-")))
                cut = cut_to_files(job.audio, seconds, count, folder)
                application.out.note(f"{job.audio}: {seconds:.0f} s of audio in "
                                     f"{len(cut)} pieces cut at pauses, one job each")
                pieces, stitched = transcribe_split_remote(job, cut)
                pieces = [remote_cache_flag(p, None, config, no_cache, [])[0]
                          for p in pieces]

        def here() -> Transcript:
            stages.stage("transcribe", None, "s")
            return run_transcribe(job, progress=stages.update)

        dispatcher = make_dispatcher(application, choice, config, remote_only=remote,
                                     stages=stages)
        if pieces:
            return dispatcher.run_pieces(pieces, local=here, fetch=stitched)
        return dispatcher.run(remote_job, local=here, fetch=fetch)


def _remote_pieces(job: Any, seconds: float, config: Any) -> int:
    """How many jobs a remote transcription is sent as: 1 with ``--script`` (its words
    cannot be shared out before they are heard), else ``parallel.remote_pieces``."""
    from canvascast_cli.engines.transcribe.parallel import remote_pieces

    if job.script is not None:
        return 1
    return remote_pieces(seconds, config.settings.functions.transcribe_audio.max_containers)
