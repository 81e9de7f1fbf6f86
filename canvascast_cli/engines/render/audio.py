"""The audio half of the render's filtergraph: narration, music (looped, faded, ducked under
the narration) mixed to 48 kHz stereo, exactly as long as the video.

Everything is built over the whole video, then the requested range is cut out with
sample-accurate ``atrim``, so a frame range rendered on its own carries the same audio
(compressor state included) as that stretch of the full render.
"""

from __future__ import annotations

from dataclasses import dataclass

from canvascast_cli.timeline import ResolvedTimeline

SAMPLE_RATE = 48000
_FORMAT = f"aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"


@dataclass(frozen=True)
class AudioGraph:
    inputs: list[str]  # ffmpeg input arguments (paths as plain arguments, never in filters)
    filters: list[str]  # filtergraph chains
    label: str  # the output pad, e.g. "[aout]"


def build_audio_graph(resolved: ResolvedTimeline, first_input: int, start: float, end: float
                      ) -> AudioGraph:
    """Audio for video time ``[start, end)`` of the whole timeline."""
    total = resolved.timeline.duration
    inputs: list[str] = []
    filters: list[str] = []
    index = first_input
    narr_label = music_label = None

    narration = resolved.timeline.narration
    if narration is not None and resolved.narration is not None:
        inputs += ["-i", str(resolved.narration)]
        delay_ms = round(narration.start * 1000)
        chain = f"[{index}:a]{_FORMAT},volume={narration.volume:g}"
        if delay_ms:
            chain += f",adelay=delays={delay_ms}:all=1"
        chain += f",apad,atrim=end={total:.6f}"
        filters.append(chain + "[narr]")
        narr_label = "[narr]"
        index += 1

    music = resolved.timeline.music
    if music is not None and resolved.music is not None:
        if music.loop:
            inputs += ["-stream_loop", "-1"]
        inputs += ["-i", str(resolved.music)]
        chain = f"[{index}:a]{_FORMAT},volume={music.volume:g},apad,atrim=end={total:.6f}"
        if music.fade_in > 0:
            chain += f",afade=t=in:st=0:d={min(music.fade_in, total):.6f}"
        if music.fade_out > 0:
            fade = min(music.fade_out, total)
            chain += f",afade=t=out:st={total - fade:.6f}:d={fade:.6f}"
        filters.append(chain + "[music]")
        music_label = "[music]"
        index += 1

    if narr_label and music_label and music.ducking:  # type: ignore[union-attr]
        # The narration keys a compressor on the music: music dips while someone speaks.
        filters.append("[narr]asplit=2[narr_mix][narr_key]")
        filters.append(
            "[music][narr_key]sidechaincompress=threshold=0.015:ratio=8:attack=20:"
            "release=350:makeup=1[music_ducked]")
        narr_label, music_label = "[narr_mix]", "[music_ducked]"

    if narr_label and music_label:
        filters.append(f"{narr_label}{music_label}amix=inputs=2:duration=first:"
                       "dropout_transition=0:normalize=0[mix]")
        mixed = "[mix]"
    elif narr_label or music_label:
        mixed = narr_label or music_label  # type: ignore[assignment]
    else:
        filters.append(f"anullsrc=r={SAMPLE_RATE}:cl=stereo,atrim=end={total:.6f}[silence]")
        mixed = "[silence]"

    filters.append(f"{mixed}atrim=start={start:.6f}:end={end:.6f},asetpts=PTS-STARTPTS[aout]")
    return AudioGraph(inputs=inputs, filters=filters, label="[aout]")
