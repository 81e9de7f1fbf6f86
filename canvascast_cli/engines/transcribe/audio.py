"""Any audio or video file -> 16 kHz mono float32, the input every Whisper engine wants.

Decoded with PyAV (the libraries faster-whisper itself uses), so openai-whisper needs no
``ffmpeg`` on PATH either. The file is checked on the way: not media, no audio stream,
nothing decodable, cut short, or silent are each an InvalidInput naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canvascast_cli.errors import InvalidInput

SAMPLE_RATE = 16000
# Below this peak level (about -66 dBFS) there is nothing a recogniser could hear.
SILENCE_PEAK = 5e-4
# A container that promises this much more audio than decodes is truncated.
TRUNCATION_TOLERANCE = 0.9


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    path: Path
    declared_seconds: float | None

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_audio(path: Path) -> Audio:
    import av

    if not path.exists():
        raise InvalidInput(f"{path}: file not found")
    if not path.is_file():
        raise InvalidInput(f"{path}: not a file")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                raise InvalidInput(f"{path}: has no audio stream (streams: {kinds})")
            stream = container.streams.audio[0]
            declared = _wav_declared_seconds(path) or _declared_seconds(container, stream)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
            except av.error.InvalidDataError:
                pass  # damaged tail: judged below by how much decoded
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except InvalidInput:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(
            f"{path}: not an audio or video file that can be decoded ({exc}); "
            "use wav, mp3, m4a, ogg/opus, flac, or a video with an audio track") from None
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else \
        np.zeros(0, np.float32)
    audio = Audio(samples, path, declared)
    if audio.duration == 0:
        raise InvalidInput(f"{path}: holds no decodable audio (empty or damaged)")
    if declared and audio.duration < declared * TRUNCATION_TOLERANCE:
        raise InvalidInput(f"{path}: truncated: the file declares {declared:.2f} s but only "
                           f"{audio.duration:.2f} s decode")
    peak = float(np.max(np.abs(samples)))
    if peak < SILENCE_PEAK:
        level = 20 * np.log10(peak) if peak > 0 else float("-inf")
        raise InvalidInput(f"{path}: is silent (peak {level:.0f} dBFS over "
                           f"{audio.duration:.1f} s): nothing to transcribe")
    return audio


def _wav_declared_seconds(path: Path) -> float | None:
    """Seconds a RIFF/WAVE header promises (ffmpeg trusts the file size instead, so a
    cut-off WAV would otherwise pass as a shorter, complete one)."""
    try:
        with path.open("rb") as fh:
            riff = fh.read(12)
            if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                return None
            byte_rate = None
            while len(header := fh.read(8)) == 8:
                kind, size = header[:4], int.from_bytes(header[4:], "little")
                if kind == b"fmt ":
                    fmt = fh.read(size)
                    byte_rate = int.from_bytes(fmt[8:12], "little")
                    if size % 2:
                        fh.read(1)
                    continue
                if kind == b"data":
                    # 0 and 0xFFFFFFFF mean "unknown" (a stream written before its end).
                    if not byte_rate or size in (0, 0xFFFFFFFF):
                        return None
                    return size / byte_rate
                fh.seek(size + size % 2, 1)
    except OSError:
        return None
    return None


def _declared_seconds(container: object, stream: object) -> float | None:
    duration = getattr(stream, "duration", None)
    time_base = getattr(stream, "time_base", None)
    if duration is not None and time_base is not None:
        return float(duration * time_base)
    total = getattr(container, "duration", None)
    return total / 1_000_000 if total else None
