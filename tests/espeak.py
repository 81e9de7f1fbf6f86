"""Speech with exact word timings, synthesised by libespeak-ng through ctypes.

Tests of transcription, caption timing and audio/scene alignment need speech whose word
boundaries are *known*, not estimated by another model. eSpeak NG reports, while it
synthesises, where each word and each phoneme starts in its own output, so those
timings are ground truth by construction.

We talk to the shared library directly (``libespeak-ng.so.1``, Debian package
``libespeak-ng1``, pulled in by ``espeak-ng``) instead of running the ``espeak-ng`` CLI,
because only the library API exposes the per-word and per-phoneme events.

Timing model (all times are seconds from sample 0 of :attr:`Speech.samples`; leading
silence is kept, never trimmed):

* ``Word.start`` is the sample at which eSpeak emitted the WORD event. For a word that
  begins with a stop consonant this includes the short closure silence before the burst,
  which is part of the word.
* ``Word.end`` is the end of the word's last spoken phoneme: the position of the event
  that follows it (a pause phoneme, the next word, the end of the clause). Pauses at
  commas and between sentences therefore fall *between* words, not inside them.

Mapping to the text: every whitespace-separated token of the input belongs to exactly
one :class:`Word`, and ``Word.word`` is made of original tokens, punctuation included
(``"Hello,"``). eSpeak's report is followed, not corrected, which has visible effects:

* eSpeak's English dictionary joins some short pairs into one word and emits a single
  WORD event for both (``"of the"``, ``"out of"``); such a :class:`Word` holds both
  tokens joined by one space.
* One token can be spoken as several words (``"1999"``, ``"3.5"``, an emoji's name);
  their events are folded into one :class:`Word` for that token.
* Tokens eSpeak does not speak at all (a lone ``"—"``) join the preceding word (the
  first word, when they lead the text).

So ``" ".join(w.word for w in speech.words) == " ".join(text.split())`` always holds when
eSpeak spoke at least one word.

eSpeak keeps global state between calls (voice, parameters and internal synthesiser
state), so the same text can come out a few samples longer or shorter depending on what
was synthesised before it in the process. A fixed sequence of calls is reproducible.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
import wave
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Speech", "Word", "available", "synthesize"]

# --- speak_lib.h constants (espeak-ng 1.51, API revision 12) ------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # retrieval mode, espeak_Synth() returns when done
_INITIALIZE_PHONEME_EVENTS = 0x0001
# Without this flag the library calls exit(1) when its data directory is missing, which
# would kill the whole test run instead of letting us raise.
_INITIALIZE_DONT_EXIT = 0x8000

_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_SENTENCE = 2
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7

_POS_CHARACTER = 1
_CHARS_UTF8 = 1  # plain UTF-8 text: no SSML, no [[phoneme]] input, no trailing pause

_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_WORDGAP = 7

_EE_OK = 0

_RATE_MIN, _RATE_MAX = 80, 450  # espeakRATE_MINIMUM / espeakRATE_MAXIMUM (words per minute)

_LIBRARY_NAMES = (
    "libespeak-ng.so.1",  # Debian/Ubuntu runtime package ships only the versioned name
    "libespeak-ng.so",
    "libespeak-ng.1.dylib",
    "libespeak-ng.dylib",
)


class _EventId(ctypes.Union):
    _fields_ = (
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),  # phoneme mnemonic, NUL-terminated unless 8 bytes long
    )


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters (code points) of the text
        ("length", ctypes.c_int),  # unreliable: 2 for "It's", 0 for a quoted word
        ("audio_position", ctypes.c_int),  # milliseconds; `sample` is the exact version
        ("sample", ctypes.c_int),  # output sample index, from 0 at each espeak_Synth call
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


class _Voice(ctypes.Structure):
    """``espeak_VOICE`` from speak_lib.h, used as a selector by language."""

    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


# --- public types ------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """One spoken word (or espeak-merged group of tokens) and its span, in seconds."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Speech:
    """Synthesised mono speech and the ground-truth timing of its words."""

    samples: np.ndarray  # int16, mono
    sample_rate: int
    words: list[Word]

    @property
    def duration(self) -> float:
        """Length of :attr:`samples` in seconds."""
        return len(self.samples) / self.sample_rate

    def write_wav(self, path: str | Path) -> Path:
        """Write the samples as a 16-bit mono PCM WAV file and return its path."""
        path = Path(path)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            # WAV is little-endian whatever the host order is.
            out.writeframes(np.asarray(self.samples, dtype="<i2").tobytes())
        return path


# --- library binding -----------------------------------------------------------------------


@dataclass
class _RawEvent:
    """The fields of an espeak_EVENT we keep, copied out before espeak reuses the buffer."""

    type: int
    text_position: int
    sample: int
    phoneme: str


class _Engine:
    """The initialised library. eSpeak is a process-wide singleton, and so is this."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self._declare_signatures()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        # With DONT_EXIT a missing espeak-ng-data directory is only printed to stderr; an
        # empty voice list is how it shows, so check for it here rather than failing later
        # with a misleading "unknown voice".
        voices = lib.espeak_ListVoices(None)
        if not voices or not voices[0]:
            raise RuntimeError(
                "libespeak-ng loaded but found no voices (is espeak-ng-data installed?)"
            )
        self.sample_rate: int = rate
        # Parameters persist between calls, so every synthesis sets all of them; the
        # library's own defaults stand in for "not specified".
        self.default_pitch: int = lib.espeak_GetParameter(_PARAM_PITCH, 0)
        self._chunks: list[bytes] = []
        self._events: list[_RawEvent] = []
        self._callback_error: BaseException | None = None
        # Keep a reference: if the ctypes thunk were garbage collected, espeak would call
        # freed memory.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def _declare_signatures(self) -> None:
        lib = self.lib
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.c_void_p)
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByProperties.argtypes = (ctypes.POINTER(_Voice),)
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        )
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = ()
        lib.espeak_Synchronize.restype = ctypes.c_int

    def _on_synth(self, wav: ctypes.c_void_p, numsamples: int, events: ctypes.Array[_Event]) -> int:
        # An exception must not propagate into C; remember it and ask espeak to abort (1).
        try:
            if wav and numsamples > 0:
                self._chunks.append(ctypes.string_at(wav, numsamples * 2))
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                ev = events[i]
                phoneme = ""
                if ev.type == _EVENT_PHONEME:
                    phoneme = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append(_RawEvent(ev.type, ev.text_position, ev.sample, phoneme))
                i += 1
        except BaseException as exc:  # re-raised by synthesize()
            self._callback_error = exc
            return 1
        return 0

    def _select_voice(self, voice: str) -> None:
        lib = self.lib
        # By name or file first ("en-us" is the file gmw/en-US). Many languages are only
        # reachable by language code ("en-gb" lives in the file gmw/en), so fall back to
        # selecting by language, as the espeak-ng command line does for -v.
        if lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return
        selector = _Voice(languages=voice.encode())
        if lib.espeak_SetVoiceByProperties(ctypes.byref(selector)) != _EE_OK:
            raise ValueError(f"unknown espeak-ng voice {voice!r}")

    def synthesize(
        self, text: str, voice: str, rate: int, pitch: int | None, gap_ms: int
    ) -> tuple[np.ndarray, list[_RawEvent]]:
        lib = self.lib
        self._select_voice(voice)
        # Set after the voice: selecting a voice may reset speech parameters.
        lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, self.default_pitch if pitch is None else pitch, 0)
        # espeakWORDGAP counts in units of 10 ms (at the default speed).
        lib.espeak_SetParameter(_PARAM_WORDGAP, round(gap_ms / 10), 0)

        self._chunks, self._events, self._callback_error = [], [], None
        data = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        lib.espeak_Synchronize()
        if self._callback_error is not None:
            raise RuntimeError("espeak synth callback failed") from self._callback_error
        samples = np.frombuffer(b"".join(self._chunks), dtype=np.int16).copy()
        return samples, self._events


_lock = threading.RLock()  # espeak's state is global: one synthesis at a time
_engine: _Engine | None = None
_load_error: str | None = None


def _get_engine() -> _Engine:
    """Load and initialise the library once per process; raise RuntimeError if impossible."""
    global _engine, _load_error
    with _lock:
        if _engine is not None:
            return _engine
        if _load_error is not None:  # don't retry a failed load on every call
            raise RuntimeError(_load_error)
        names = [n for n in (ctypes.util.find_library("espeak-ng"), *_LIBRARY_NAMES) if n]
        errors: list[str] = []
        for name in names:
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                errors.append(str(exc))
                continue
            try:
                _engine = _Engine(lib)
            except (RuntimeError, AttributeError) as exc:
                _load_error = f"libespeak-ng ({name}) is unusable: {exc}"
                raise RuntimeError(_load_error) from exc
            return _engine
        _load_error = (
            "libespeak-ng is not installed (on Debian/Ubuntu: apt-get install espeak-ng); "
            + "; ".join(errors)
        )
        raise RuntimeError(_load_error)


# --- public functions --------------------------------------------------------------------


def available() -> bool:
    """True when libespeak-ng can be loaded and initialised (for ``pytest.skipif``)."""
    try:
        _get_engine()
    except RuntimeError:
        return False
    return True


def synthesize(
    text: str,
    *,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int | None = None,
    gap_ms: int = 0,
) -> Speech:
    """Speak ``text`` with eSpeak NG and return the audio with exact word timings.

    Args:
        text: Plain text (no SSML). Sentence punctuation produces pauses.
        voice: An eSpeak NG voice name, e.g. ``"en-us"``, ``"en-gb"``, ``"fr"``.
        rate: Speaking rate in words per minute, 80-450.
        pitch: Base pitch 0-99; ``None`` keeps eSpeak's default (50).
        gap_ms: Extra pause inserted between words, in ms (eSpeak resolves it to 10 ms
            steps at the default rate).

    Raises:
        RuntimeError: libespeak-ng is missing or synthesis failed.
        ValueError: Bad arguments or an unknown voice.
    """
    if "\0" in text:
        raise ValueError("text must not contain NUL characters")  # espeak stops at NUL
    if not _RATE_MIN <= rate <= _RATE_MAX:
        raise ValueError(f"rate must be {_RATE_MIN}-{_RATE_MAX} words per minute, got {rate}")
    if pitch is not None and not 0 <= pitch <= 99:
        raise ValueError(f"pitch must be 0-99, got {pitch}")
    if gap_ms < 0:
        raise ValueError(f"gap_ms must be >= 0, got {gap_ms}")
    with _lock:
        engine = _get_engine()
        samples, events = engine.synthesize(text, voice, rate, pitch, gap_ms)
        sample_rate = engine.sample_rate
    words = _words_from_events(text, events, len(samples), sample_rate)
    return Speech(samples=samples, sample_rate=sample_rate, words=words)


# --- event to word mapping --------------------------------------------------------------


@dataclass
class _Group:
    """Tokens first..last (inclusive) spoken as one word, with sample bounds."""

    first: int
    last: int
    start: int
    end: int | None = None


def _is_pause(phoneme: str) -> bool:
    # eSpeak's pause phonemes are all named with a leading underscore: "_", "_:", "_!", ...
    return phoneme.startswith("_")


def _words_from_events(
    text: str, events: list[_RawEvent], n_samples: int, sample_rate: int
) -> list[Word]:
    tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    if not tokens:
        return []
    token_starts = [start for start, _, _ in tokens]

    def token_at(text_position: int) -> int:
        # text_position is 1-based. A position that lands on whitespace (espeak does
        # this for the later words of a multi-word expansion, e.g. an emoji's name)
        # belongs to the token before it.
        index = bisect_right(token_starts, text_position - 1) - 1
        return max(index, 0)

    groups: list[_Group] = []
    phoneme_open = False  # the current group's last spoken phoneme has not ended yet
    for ev in events:
        if ev.type not in (_EVENT_WORD, _EVENT_PHONEME, _EVENT_END, _EVENT_SENTENCE):
            continue  # SAMPLERATE / MSG_TERMINATED carry no usable position
        sample = min(max(ev.sample, 0), n_samples)
        # Whatever comes next marks the end of the phoneme being spoken.
        if phoneme_open and groups:
            groups[-1].end = sample
            phoneme_open = False
        if ev.type == _EVENT_WORD:
            token = token_at(ev.text_position)
            if groups and token <= groups[-1].last:
                # Same token again (a number spoken as several words), or espeak jumping
                # back (it emits a stray WORD for a dash at the end of the clause):
                # continue the current word.
                continue
            if groups:
                groups[-1].last = token - 1  # unspoken/merged tokens join the previous word
            groups.append(_Group(first=0 if not groups else token, last=token, start=sample))
        elif ev.type == _EVENT_PHONEME and groups and not _is_pause(ev.phoneme):
            phoneme_open = True
    if not groups:
        return []
    if phoneme_open:
        groups[-1].end = n_samples
    groups[-1].last = len(tokens) - 1

    words: list[Word] = []
    for i, group in enumerate(groups):
        # A word without phoneme events should not happen; bound it by its neighbour.
        fallback = groups[i + 1].start if i + 1 < len(groups) else n_samples
        end = group.end if group.end is not None else fallback
        end = max(end, group.start)
        word = " ".join(tok for _, _, tok in tokens[group.first : group.last + 1])
        words.append(Word(word=word, start=group.start / sample_rate, end=end / sample_rate))
    return words
