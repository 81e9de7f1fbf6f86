"""The two Whisper engines behind one interface.

Both take 16 kHz mono float32 samples and return the same ``Segment``/``Word`` types, so
everything downstream (script alignment, formats, render captions) is engine-agnostic.
Heavy imports (ctranslate2, torch, whisper) happen only when an engine is created.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from canvascast_cli.engines.transcribe.models import ModelRef
from canvascast_cli.engines.transcribe.result import Segment, Word
from canvascast_cli.errors import InvalidInput, JobFailed

Progress = Callable[[float], None]  # seconds of audio done
OnSegment = Callable[[Segment], None]  # each segment as soon as it is decoded

COMPUTE_TYPES = ("int8", "int8_float16", "int8_float32", "float16", "float32")


class Engine(Protocol):
    name: str
    model: ModelRef

    def transcribe(self, audio: np.ndarray, *, language: str | None, beam_size: int,
                   progress: Progress | None = None, on_segment: OnSegment | None = None
                   ) -> tuple[list[Segment], str]:
        """Segments (with word timings) and the language spoken; ``on_segment`` sees each
        segment as it is decoded (word timing refinement starts on it meanwhile)."""
        ...


def create_engine(model: ModelRef, *, compute_type: str | None = None,
                  threads: int | None = None) -> Engine:
    if model.engine == "faster-whisper":
        return FasterWhisperEngine(model, compute_type=compute_type, threads=threads)
    if compute_type not in (None, "float32", "float16"):
        raise InvalidInput(f"--compute-type: openai-whisper runs float32 (CPU) or float16 "
                           f"(GPU), not {compute_type}")
    return OpenAIWhisperEngine(model, compute_type=compute_type, threads=threads)


class FasterWhisperEngine:
    """faster-whisper (CTranslate2): int8 on a CPU, float16 on a GPU by default."""

    name = "faster-whisper"

    def __init__(self, model: ModelRef, *, compute_type: str | None = None,
                 threads: int | None = None) -> None:
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
        except ImportError:
            raise InvalidInput("--engine faster-whisper needs the transcribe extra: "
                               "pip install 'canvascast[transcribe]'") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        gpu = ctranslate2.get_cuda_device_count() > 0
        self.device = "cuda" if gpu else "cpu"
        self.compute_type = compute_type or ("float16" if gpu else "int8")
        if self.compute_type not in COMPUTE_TYPES:
            raise InvalidInput(f"--compute-type: {self.compute_type!r}; allowed: "
                               f"{', '.join(COMPUTE_TYPES)}")
        self.model = model
        try:
            self._model = WhisperModel(str(model.path), device=self.device,
                                       compute_type=self.compute_type,
                                       cpu_threads=threads or os.cpu_count() or 0,
                                       local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise JobFailed(f"faster-whisper could not load {model.path}: {exc}") from None

    def transcribe(self, audio: np.ndarray, *, language: str | None, beam_size: int,
                   progress: Progress | None = None, on_segment: OnSegment | None = None
                   ) -> tuple[list[Segment], str]:
        try:
            pieces, info = self._model.transcribe(
                audio, language=language, beam_size=beam_size, word_timestamps=True,
                condition_on_previous_text=False, vad_filter=False)
            segments = []
            for i, piece in enumerate(pieces):  # a generator: decoding happens here
                words = tuple(_word(w.word, w.start, w.end, w.probability)
                              for w in (piece.words or ()))
                segments.append(Segment(i, float(piece.start), float(piece.end),
                                        piece.text.strip(), words))
                if on_segment is not None:
                    on_segment(segments[-1])
                if progress is not None:
                    progress(float(piece.end))
        except (RuntimeError, ValueError) as exc:
            raise JobFailed(f"faster-whisper failed: {exc}") from None
        return segments, str(info.language)


class OpenAIWhisperEngine:
    """openai-whisper (PyTorch), the seed's engine: float32 on a CPU, float16 on a GPU."""

    name = "openai-whisper"

    def __init__(self, model: ModelRef, *, compute_type: str | None = None,
                 threads: int | None = None) -> None:
        try:
            import torch

            from canvascast_cli.engines.transcribe.convert import load_openai_whisper
        except ImportError:
            raise InvalidInput("--engine openai-whisper needs the whisper extra: "
                               "pip install 'canvascast[whisper]'") from None
        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.fp16 = self.device == "cuda" and compute_type != "float32"
        self.model = model
        try:
            self._model = load_openai_whisper(model.path, device=self.device)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise JobFailed(f"openai-whisper could not load {model.path}: {exc}") from None

    def transcribe(self, audio: np.ndarray, *, language: str | None, beam_size: int,
                   progress: Progress | None = None, on_segment: OnSegment | None = None
                   ) -> tuple[list[Segment], str]:
        import whisper  # noqa: F401 - loads whisper.transcribe

        # The package re-exports a *function* named transcribe over the module's name.
        whisper_transcribe = sys.modules["whisper.transcribe"]

        options: dict[str, Any] = {"language": language, "word_timestamps": True,
                                   "fp16": self.fp16, "condition_on_previous_text": False,
                                   "verbose": None if progress is None else False}
        if beam_size > 1:
            options["beam_size"] = beam_size
        real_tqdm = getattr(whisper_transcribe, "tqdm")  # noqa: B009 - untyped module
        if progress is not None:
            # openai-whisper reports progress only through a tqdm bar over mel frames
            # (100 per second); a stand-in bar forwards it.
            setattr(whisper_transcribe, "tqdm", _TqdmModule(progress))  # noqa: B010
        try:
            result = self._model.transcribe(audio, **options)
        except (RuntimeError, ValueError) as exc:
            raise JobFailed(f"openai-whisper failed: {exc}") from None
        finally:
            setattr(whisper_transcribe, "tqdm", real_tqdm)  # noqa: B010
        segments = []
        for i, seg in enumerate(result["segments"]):
            words = tuple(_word(w["word"], w["start"], w["end"], w["probability"])
                          for w in seg.get("words", ()))
            segments.append(Segment(i, float(seg["start"]), float(seg["end"]),
                                    str(seg["text"]).strip(), words))
            if on_segment is not None:  # all at the end: openai-whisper returns at once
                on_segment(segments[-1])
        return segments, str(result.get("language") or language or "en")


class _TqdmModule:
    """Just enough of the ``tqdm`` module for ``whisper.transcribe``'s progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def tqdm(self, total: int = 0, **_: Any) -> _Bar:
        return _Bar(self._progress)


class _Bar:
    def __init__(self, progress: Progress) -> None:
        self._progress, self._frames = progress, 0

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, frames: int) -> None:
        self._frames += frames
        self._progress(self._frames / 100)  # mel frames are 10 ms


def _word(text: Any, start: Any, end: Any, probability: Any) -> Word:
    """A recognised word as the one Word type (times never negative or reversed)."""
    begin = max(0.0, float(start))
    return Word(str(text).strip(), begin, max(begin, float(end)),
                min(1.0, max(0.0, float(probability))))

