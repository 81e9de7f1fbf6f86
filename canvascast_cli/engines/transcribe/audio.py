"""Any audio or video file -> 16 kHz mono float32, the input every Whisper engine wants.

Decoded with PyAV (the libraries faster-whisper itself uses), so openai-whisper needs no
``ffmpeg`` on PATH either. The file is checked on the way: not media, no audio stream,
nothing decodable, cut short, or silent are each an InvalidInput naming the file.

Long recordings are never held whole: ``probe_audio`` decodes the file once keeping only
counts (length, peak) for those checks, then ``iter_chunks`` decodes it again and yields
it in pieces of about ``chunk_seconds``, each cut at the quietest 100 ms inside the last
``search_seconds`` before its nominal end, so a cut falls in a pause, not in a word.
Memory is then set by the chunk length, not by the recording's (see docs/transcribe.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canvascast_cli.errors import InvalidInput

SAMPLE_RATE = 16000
# Below this peak level (about -66 dBFS) there is nothing a recogniser could hear.
SILENCE_PEAK = 5e-4
# A container that promises this much more audio than decodes is truncated.
TRUNCATION_TOLERANCE = 0.9
# Chunks of 5 min: the engines' whole-input buffers (faster-whisper's STFT and log-mel)
# stay ~0.25 GB whatever the recording's length (10 min: ~0.45 GB); see
# docs/performance.md. Each chunk costs one part-filled 30 s window more to decode.
DEFAULT_CHUNK_SECONDS = 300.0
# A chunk's end is searched for a pause within this much before its nominal end.
DEFAULT_SEARCH_SECONDS = 20.0
# The length of the quiet frame a cut is centred on, and the step between frames tried.
CUT_FRAME_SECONDS = 0.1
CUT_HOP_SECONDS = 0.01


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    path: Path
    declared_seconds: float | None

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class AudioInfo:
    """What one decoding pass learnt about a file, without keeping its samples."""

    path: Path
    samples: int  # at SAMPLE_RATE, mono
    declared_seconds: float | None
    peak: float

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE


@dataclass(frozen=True)
class Chunk:
    """A piece of a recording: its samples and where it starts in the whole."""

    index: int
    first_sample: int  # of the whole recording, at SAMPLE_RATE
    samples: np.ndarray  # float32, mono, SAMPLE_RATE

    @property
    def start(self) -> float:
        """Seconds from the start of the recording: add it to times within the chunk."""
        return self.first_sample / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def end(self) -> float:
        return self.start + self.duration


def load_audio(path: Path) -> Audio:
    """The whole file in memory (short clips, tests); long recordings: ``iter_chunks``."""
    decoded = _Decoded(path)
    blocks = list(decoded)
    samples = np.concatenate(blocks).astype(np.float32, copy=False) if blocks else \
        np.zeros(0, np.float32)
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    _check(AudioInfo(path, len(samples), decoded.declared, peak))
    return Audio(samples, path, decoded.declared)


def probe_audio(path: Path) -> AudioInfo:
    """Decode the whole file once, keeping only its length and peak, and check it: every
    InvalidInput ``load_audio`` raises, raised here with memory independent of length."""
    decoded = _Decoded(path)
    count, peak = 0, 0.0
    for block in decoded:
        if len(block):
            count += len(block)
            peak = max(peak, float(np.max(np.abs(block))))
    info = AudioInfo(path, count, decoded.declared, peak)
    _check(info)
    return info


def iter_chunks(path: Path, *, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                search_seconds: float = DEFAULT_SEARCH_SECONDS) -> Iterator[Chunk]:
    """The file's samples in consecutive chunks that cover every sample exactly once.

    Each chunk but the last is cut at the quietest ``CUT_FRAME_SECONDS`` frame within
    ``search_seconds`` before ``chunk_seconds`` (at most half the chunk is searched), so
    chunks are between ``chunk_seconds - search_seconds`` and ``chunk_seconds`` long; the
    last one, at most ``chunk_seconds + search_seconds``, takes the tail rather than
    leaving a scrap. Check the file with ``probe_audio`` first: this decodes again and
    trusts it. Only about two chunks' samples are ever held.
    """
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, not {chunk_seconds}")
    nominal = max(1, round(chunk_seconds * SAMPLE_RATE))
    search = min(max(0, round(search_seconds * SAMPLE_RATE)), nominal // 2)
    # Decoding runs this far past a nominal end before cutting, so the last chunk is
    # never a scrap: it gets at least the search window.
    ahead = max(search, 1)
    capacity = nominal + ahead
    buffer = np.empty(capacity + SAMPLE_RATE, np.float32)
    filled = 0
    first = 0
    index = 0
    for block in _Decoded(path):
        while len(block):  # the slack past capacity takes it, or its first part
            take = min(len(block), len(buffer) - filled)
            buffer[filled: filled + take] = block[:take]
            filled += take
            block = block[take:]
            while filled >= capacity:
                cut = quietest_cut(buffer[:filled], nominal - search, nominal)
                # A fresh buffer takes the rest; the old one is handed out, not copied.
                rest = np.empty(len(buffer), np.float32)
                rest[: filled - cut] = buffer[cut:filled]
                yield Chunk(index, first, buffer[:cut])
                index, first, buffer, filled = index + 1, first + cut, rest, filled - cut
    if filled:
        yield Chunk(index, first, buffer[:filled])


def quietest_cut(samples: np.ndarray, lo: int, hi: int) -> int:
    """Where to cut ``samples`` within ``[lo, hi]``: the centre of the quietest pause.

    Frames of ``CUT_FRAME_SECONDS`` every ``CUT_HOP_SECONDS`` are scored by mean square;
    those within 3 dB of the quietest count as quiet, and the cut goes in the middle of
    the longest run of quiet frames (the middle of a gap, not its edge next to a word).
    """
    lo, hi = max(0, lo), min(hi, len(samples))
    frame = round(CUT_FRAME_SECONDS * SAMPLE_RATE)
    hop = round(CUT_HOP_SECONDS * SAMPLE_RATE)
    if hi - lo < frame + hop:
        return max(hi, 1)
    window = samples[lo:hi].astype(np.float64)
    sums = np.concatenate([[0.0], np.cumsum(window * window)])
    starts = np.arange(0, len(window) - frame + 1, hop)
    energy = (sums[starts + frame] - sums[starts]) / frame
    quiet = energy <= energy.min() * 2 + 1e-12
    # Longest run of quiet frames: edges of runs from the differences of a padded mask.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    run_starts, run_ends = edges[::2], edges[1::2]  # [start, end) in frame indices
    best = int(np.argmax(run_ends - run_starts))
    first_frame, last_frame = run_starts[best], run_ends[best] - 1
    centre = (starts[first_frame] + starts[last_frame] + frame) // 2
    return max(lo + int(centre), 1)


def _check(info: AudioInfo) -> None:
    path, declared = info.path, info.declared_seconds
    if info.samples == 0:
        raise InvalidInput(f"{path}: holds no decodable audio (empty or damaged)")
    if declared and info.duration < declared * TRUNCATION_TOLERANCE:
        raise InvalidInput(f"{path}: truncated: the file declares {declared:.2f} s but only "
                           f"{info.duration:.2f} s decode")
    if info.peak < SILENCE_PEAK:
        level = 20 * np.log10(info.peak) if info.peak > 0 else float("-inf")
        raise InvalidInput(f"{path}: is silent (peak {level:.0f} dBFS over "
                           f"{info.duration:.1f} s): nothing to transcribe")


class _Decoded:
    """One pass over a file's first audio stream as blocks of 16 kHz mono float32.

    ``declared`` (the length the container promises) is set once iteration has begun.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.declared: float | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        path = self.path
        if not path.exists():
            raise InvalidInput(f"{path}: file not found")
        if not path.is_file():
            raise InvalidInput(f"{path}: not a file")
        try:
            with av.open(str(path), metadata_errors="ignore") as container:
                if not container.streams.audio:
                    kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                    raise InvalidInput(f"{path}: has no audio stream (streams: {kinds})")
                stream = container.streams.audio[0]
                self.declared = _wav_declared_seconds(path) or _declared_seconds(container,
                                                                                 stream)
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                try:
                    for frame in container.decode(stream):
                        for out in resampler.resample(frame):
                            yield out.to_ndarray().reshape(-1)
                except av.error.InvalidDataError:
                    pass  # damaged tail: judged by how much decoded
                for out in resampler.resample(None):
                    yield out.to_ndarray().reshape(-1)
        except InvalidInput:
            raise
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(
                f"{path}: not an audio or video file that can be decoded ({exc}); "
                "use wav, mp3, m4a, ogg/opus, flac, or a video with an audio track") from None


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
