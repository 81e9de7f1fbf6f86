"""Word timing refinement: re-time words against the audio with an acoustic aligner.

Whisper times words from its cross-attention: on narration they land ~0.1 s late on
average, and only about half of the boundaries fall within 0.1 s of the truth. A forced
aligner knows the words and looks only for where each one's sounds are: pocketsphinx 5
(its en-us acoustic model and CMUdict, shipped in the PyPI wheel, nothing downloaded).

How (``Stream``), on one chunk's samples at a time:

1. **Pronunciations.** Each word is looked up in CMUdict, as written and then in parts
   (possessive 's, hyphenated and run-together words: "CanvasCast" = "canvas" + "cast").
   A word with no letters or digits ("—") is not spoken: it is left out. Any other word
   gets a rough spelling-based pronunciation so that its neighbours can be aligned around
   it, but its own times are Whisper's (``kept``: "not in dictionary").
2. **Blocks, chained.** Words are aligned ``BLOCK_WORDS`` at a time plus the next word
   as context (it takes any speech that spills into the window; its times are not used:
   it is aligned again with the next block). A block's audio window starts where the
   previous block's last word ended (or ``LEAD_SECONDS`` before the block's recognised
   start, after a pause: Whisper is late, never much early) and ends where the word after
   the context was recognised to start. Whole segments in one window went wrong more
   often: extra speech at a window's edges is what misleads a forced aligner.
3. **Search.** A left-to-right grammar of the block's words with optional silences,
   Viterbi over all of it (beams wide open: the grammar is tiny, and narrow beams lost
   the path on synthetic voices); 10 ms frames; cepstral mean normalisation carried from
   block to block (reset for each chunk), steadier than each short window's own mean.
4. **Kept words.** A block that cannot be aligned keeps Whisper's times, as do the words
   above. Kept times are clamped between the refined neighbours, so words never overlap
   or change order and never end before they start.

A block is aligned as soon as the words after it are known, so without a script the
recognised words are refined on a thread of their own while the recogniser decodes the
rest (``Refiner.stream``, fed each segment as it is decoded). Only English has a model:
other languages, or pocketsphinx missing, skip refinement (``unavailable`` says why).
The decoder is loaded once per process (~0.15 s).
"""

from __future__ import annotations

import queue
import re
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from canvascast_cli.engines.transcribe.audio import SAMPLE_RATE
from canvascast_cli.words import Word

LANGUAGES = ("en",)  # pocketsphinx's bundled acoustic model is US English
BLOCK_WORDS = 5  # words aligned together (plus CONTEXT_WORDS); see the module docstring
CONTEXT_WORDS = 1
LEAD_SECONDS = 0.45  # window before a block's recognised start, after a pause
TAIL_SECONDS = 0.25  # window after the last word when no word follows it
MIN_WORD_SECONDS = 0.15  # a shorter window per word starts at the previous block's end
EDGE_SECONDS = 0.02  # a word found this close to a window's start was cut by it
FRAME_SECONDS = 0.01  # pocketsphinx's frame rate is 100 per second
# Wide-open beams: a forced alignment's grammar is a handful of words, so keeping every
# path costs little, and the default beams lost the true path on synthetic voices. No
# language model (the words are known), no lattice rescoring, 16 kHz input.
BEAM = 1e-300
# Two Gaussians per codebook instead of pocketsphinx's four: the scoring of Gaussians is
# most of the work; 3 took 13 % less time than 4, 2 another ~20 % less, for the same
# accuracy on the tuning voice (14.5 -> 15.2 ms start error) and the held-out ones
# (23.6 -> 23.1 ms); 1 lost accuracy (demo 22 ms). See docs/performance.md.
DECODER_OPTIONS: dict[str, Any] = {
    "lm": None, "bestpath": False, "beam": BEAM, "wbeam": BEAM, "pbeam": BEAM,
    "maxhmmpf": -1, "topn": 2, "samprate": SAMPLE_RATE, "loglevel": "FATAL"}
PIECE_BYTES = 2 * 4800  # audio handed to the decoder per call: 0.3 s of 16-bit samples

NOT_IN_DICTIONARY = "not in dictionary"
NO_ALIGNMENT = "no alignment"
NOT_SPOKEN = "no letters"

_FILLERS = ("<s>", "</s>", "<sil>")


def unavailable(language: str | None) -> str | None:
    """Why refinement cannot run here for ``language`` (None: it can)."""
    if (language or "en").split("-")[0].lower() not in LANGUAGES:
        return (f"no acoustic model for language {language!r} (pocketsphinx ships English "
                "only)")
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return "pocketsphinx is not installed (pip install 'canvascast[transcribe]')"
    return None


def aligner_name() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pocketsphinx {version('pocketsphinx')} en-us"
    except PackageNotFoundError:  # pragma: no cover - imported but not installed?
        return "pocketsphinx en-us"


_cache_lock = threading.Lock()
_cached: Refiner | None = None


def get_refiner() -> Refiner:
    """A refiner for this thread's use: the process's cached one when no other job holds
    it (loading the dictionary costs ~0.15 s), else a new one."""
    global _cached
    with _cache_lock:
        if _cached is None:
            _cached = Refiner()
        refiner = _cached
    if refiner.lock.acquire(blocking=False):
        refiner.lock.release()
        return refiner
    return Refiner()


@dataclass(frozen=True)
class _Token:
    name: str  # the dictionary entry aligned
    exact: bool  # its pronunciation is CMUdict's (a word's own or its parts')


class Refiner:
    """A pocketsphinx decoder set up for forced alignment, and the words added to it."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder: Any = Decoder(**DECODER_OPTIONS)
        self.name = aligner_name()
        self.lock = threading.Lock()
        self._tokens: dict[str, _Token | None] = {}
        self._cmn = self.decoder.get_cmn()  # the model's starting cepstral mean

    # -- public ---------------------------------------------------------------------------

    def refine(self, samples: np.ndarray, words: Sequence[Word], *, offset: float = 0.0
               ) -> tuple[list[Word], list[str | None]]:
        """``words`` re-timed against ``samples`` (16 kHz mono, sample 0 at ``offset``
        seconds on the words' clock), and per word why its time was kept (None: refined).
        """
        with self.lock:
            stream = Stream(self, samples, offset)
            stream.add(words)
            return stream.finish()

    def stream(self, samples: np.ndarray, *, offset: float = 0.0) -> Stream:
        """A ``Stream`` over ``samples`` that refines in a background thread as words are
        added (``refine`` is the same, all at once)."""
        return Stream(self, samples, offset, background=True)

    # -- the work ---------------------------------------------------------------------------

    def _align(self, samples: np.ndarray, names: list[str], lo: float, hi: float
               ) -> list[tuple[float, float]] | None:
        """Each word's (start, end) in seconds on the samples' clock, or None."""
        a, b = round(lo * SAMPLE_RATE), round(hi * SAMPLE_RATE)
        if b - a < len(names) * 3 * 160:  # three 10 ms frames (states) per word at least
            return None
        pcm = (np.clip(samples[a:b], -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder = self.decoder
        try:
            decoder.set_align_text(" ".join(names))
            decoder.start_utt()
            # Live cepstral mean normalisation: carried from block to block (reset for
            # each stream), it is a steadier estimate than a short window's own mean
            # (start error 23 -> 15 ms on the tuning set). In pieces, so that the GIL is
            # never held for long while a recogniser runs beside this.
            for i in range(0, len(pcm), PIECE_BYTES):
                decoder.process_raw(pcm[i: i + PIECE_BYTES], full_utt=False)
            decoder.end_utt()
            segments = list(decoder.seg() or ())
        except RuntimeError:
            return None
        found = [(lo + s.start_frame * FRAME_SECONDS, lo + (s.end_frame + 1) * FRAME_SECONDS)
                 for s in segments if s.word not in _FILLERS and not s.word.startswith("[")]
        # A search that missed the grammar's end gives a partial path: not an alignment.
        if len(found) != len(names):
            return None
        return found

    # -- pronunciations -------------------------------------------------------------------

    def _token(self, word: str) -> _Token | None:
        if word in self._tokens:
            return self._tokens[word]
        token = self._make_token(word)
        self._tokens[word] = token
        return token

    def _make_token(self, word: str) -> _Token | None:
        parts = spoken_parts(word)
        if not parts:
            return None
        name = "".join(parts)
        if self._phones(name) is not None:
            return _Token(name, True)
        known = [self._phones(p) for p in parts]
        if len(parts) > 1 and all(known):
            return self._added(name, " ".join(p for p in known if p), exact=True)
        if len(parts) == 1:
            derived = self._derived(name)
            if derived is not None:
                return self._added(name, derived, exact=True)
        guess = " ".join(self._phones(p) or guess_phones(p) for p in parts)
        if not guess:
            return None
        return self._added(name, guess, exact=False)

    def _phones(self, name: str) -> str | None:
        found = self.decoder.lookup_word(name)
        return str(found) if found else None

    def _added(self, name: str, phones: str, *, exact: bool) -> _Token | None:
        entry = f"{name}__cc"  # never a CMUdict word
        if self._phones(entry) is None:
            try:
                self.decoder.add_word(entry, phones, True)
            except RuntimeError:
                return None
        return _Token(entry, exact)

    def _derived(self, name: str) -> str | None:
        """CMUdict phones for a possessive or a run-together pair of dictionary words."""
        if name.endswith("'s") or name.endswith("s'"):
            base = self._phones(name[:-2]) if name.endswith("'s") else self._phones(name[:-1])
            if base is not None:
                if name.endswith("s'"):
                    return base
                last = base.split()[-1]
                suffix = ("IH Z" if last in ("S", "Z", "SH", "ZH", "CH", "JH") else
                          "S" if last in ("P", "T", "K", "F", "TH") else "Z")
                return f"{base} {suffix}"
        for cut in range(3, len(name) - 2):  # both halves at least 3 letters
            first, second = self._phones(name[:cut]), self._phones(name[cut:])
            if first and second:
                return f"{first} {second}"
        return None


class Stream:
    """Words in time order (a recogniser's segments as they come), refined block by block
    as soon as the words after a block are known; ``finish`` refines the rest.

    In the background (``Refiner.stream``) the work runs on a thread of its own, beside
    the recogniser, which leaves a CPU core idle much of the time; the decoder is used
    by that thread only, under the refiner's lock.
    """

    def __init__(self, refiner: Refiner, samples: np.ndarray, offset: float,
                 background: bool = False) -> None:
        self._refiner = refiner
        self._samples = samples
        self._offset = offset
        self._duration = len(samples) / SAMPLE_RATE
        self._words: list[Word] = []
        self._starts: list[float] = []  # recognised times on the samples' clock
        self._ends: list[float] = []
        self._tokens: list[_Token | None] = []
        self._spoken: list[int] = []  # indexes of the words with something to say
        self._times: list[tuple[float, float] | None] = []
        self._kept: list[str | None] = []
        self._next = 0  # index in _spoken of the next block's first word
        self._cursor = 0.0  # where the last aligned block's last word ended
        self._started = False
        self._closed = False
        self.seconds = 0.0  # spent aligning
        self._queue: queue.SimpleQueue[list[Word] | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if background:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._serve, name="canvascast-refine",
                                            daemon=True)
            self._thread.start()

    def add(self, words: Sequence[Word]) -> None:
        """More words, after those already added."""
        if self._queue is not None:
            self._queue.put(list(words))
        else:
            self._take(words)

    def finish(self) -> tuple[list[Word], list[str | None]]:
        """Every word, re-timed, and per word why its time was kept (None: refined)."""
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            if self._error is not None:
                raise self._error
        else:
            self._run(final=True)
        return (_assemble(self._words, self._starts, self._ends, self._times, self._kept,
                          self._offset), list(self._kept))

    def close(self) -> None:
        """Stop without finishing (the recogniser failed): the thread ends, the refiner is
        free for the next job. Harmless after ``finish``."""
        self._closed = True
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _serve(self) -> None:
        assert self._queue is not None
        try:
            with self._refiner.lock:
                while (words := self._queue.get()) is not None:
                    if not self._closed:
                        self._take(words)
                if not self._closed:
                    self._run(final=True)
        except BaseException as exc:  # re-raised by finish(), in the caller's thread
            self._error = exc
            while self._queue.get() is not None:  # let finish() through
                pass

    def _take(self, words: Sequence[Word]) -> None:
        for word in words:
            k = len(self._words)
            token = self._refiner._token(word.word)
            self._words.append(word)
            self._starts.append(min(max(word.start - self._offset, 0.0), self._duration))
            self._ends.append(min(max(word.end - self._offset, 0.0), self._duration))
            self._tokens.append(token)
            self._times.append(None)
            self._kept.append(NOT_SPOKEN if token is None else NO_ALIGNMENT)
            if token is not None:
                self._spoken.append(k)
        self._run(final=False)

    def _run(self, *, final: bool) -> None:
        """Align every block whose context and following word are known (all, if final)."""
        if not self._started:  # the same input gives the same times, whatever came before
            self._refiner.decoder.set_cmn(self._refiner._cmn)
            self._started = True
        need = BLOCK_WORDS + CONTEXT_WORDS + 1
        while self._next < len(self._spoken) and (
                final or len(self._spoken) - self._next >= need):
            began = time.perf_counter()
            self._block(self._next)
            self.seconds += time.perf_counter() - began
            self._next += BLOCK_WORDS

    def _block(self, b: int) -> None:
        spoken, starts, ends = self._spoken, self._starts, self._ends
        block = spoken[b: b + BLOCK_WORDS]
        context = spoken[b + BLOCK_WORDS: b + BLOCK_WORDS + CONTEXT_WORDS]
        after = spoken[b + BLOCK_WORDS + CONTEXT_WORDS: b + BLOCK_WORDS + CONTEXT_WORDS + 1]
        last = (context or block)[-1]
        cursor = self._cursor
        lo = max(cursor, starts[block[0]] - LEAD_SECONDS)
        hi = ends[last] + TAIL_SECONDS
        if after:
            hi = max(min(hi, starts[after[0]]), ends[last])
        hi = min(hi, self._duration)
        if hi - lo < MIN_WORD_SECONDS * len(block + context):
            # Squeezed times (a hallucinating recogniser, script words interpolated into a
            # sliver): nothing unaligned lies between the cursor and the block.
            lo = min(cursor, lo)
        names = [token.name for k in block + context if (token := self._tokens[k])]
        align = self._refiner._align
        found = align(self._samples, names, lo, hi)
        if found is not None and lo > cursor + EDGE_SECONDS and found[0][0] - lo < EDGE_SECONDS:
            # The first word starts at the window's edge: the window cut into it (the
            # recognised start was far too late). Again from the previous block's end.
            found = align(self._samples, names, cursor, hi) or found
        if found is None:
            self._cursor = max(cursor, ends[block[-1]])
            return
        for k, span in zip(block, found, strict=False):
            self._times[k] = span
            token = self._tokens[k]
            self._kept[k] = None if token is not None and token.exact else NOT_IN_DICTIONARY
        self._cursor = found[len(block) - 1][1]


def spoken_parts(word: str) -> list[str]:
    """A written word as lower-case ASCII pieces to look up: split at hyphens, slashes,
    dots and case changes ("CanvasCast" -> canvas, cast); empty when nothing is spoken."""
    text = unicodedata.normalize("NFKD", word.replace("\u2019", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    parts = []
    for piece in re.split(r"[^A-Za-z0-9']+", text):
        piece = piece.lower().strip("'")
        if re.search(r"[a-z0-9]", piece):
            parts.append(piece)
    # "CanvasCast" splits for lookup, but keep "it's" or "don't" whole.
    return parts


def _assemble(words: list[Word], starts: list[float], ends: list[float],
              times: list[tuple[float, float] | None], kept: list[str | None],
              offset: float) -> list[Word]:
    """Final times: refined where found, else recognised and clamped between the
    neighbours, so that no word overlaps another, moves past one, or ends before it starts.
    A word whose alignment was only a placeholder (not in dictionary) keeps its own."""
    n = len(words)
    final: list[tuple[float, float]] = [(0.0, 0.0)] * n
    # The next refined start after each word bounds a kept word's end.
    next_start = [float("inf")] * (n + 1)
    for k in range(n - 1, -1, -1):
        span = times[k]
        next_start[k] = span[0] if span is not None and kept[k] is None else next_start[k + 1]
    previous_end = 0.0
    for k in range(n):
        span = times[k]
        if span is not None and kept[k] is None:
            start, end = span
        else:
            bound = next_start[k + 1]
            start = min(max(starts[k], previous_end), bound)
            end = min(max(ends[k], start), max(bound, start))
        start = max(start, previous_end)
        end = max(end, start)
        final[k] = (start, end)
        previous_end = end
    return [replace(w, start=start + offset, end=end + offset)
            for w, (start, end) in zip(words, final, strict=True)]


# ---------------------------------------------------------------------------------------
# Rough pronunciations for words CMUdict lacks: only placeholders, so that the words
# around them align; such a word keeps its recognised times.

_GRAPHEMES = [  # longest first within each starting letter is enough for this use
    ("tch", "CH"), ("sch", "S K"), ("igh", "AY"), ("ough", "AO"),
    ("ch", "CH"), ("sh", "SH"), ("th", "TH"), ("ph", "F"), ("wh", "W"), ("ng", "NG"),
    ("ck", "K"), ("qu", "K W"), ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"),
    ("ow", "OW"), ("ai", "EY"), ("ay", "EY"), ("oi", "OY"), ("oy", "OY"), ("au", "AO"),
    ("aw", "AO"), ("er", "ER"), ("ir", "ER"), ("ur", "ER"), ("ar", "AA R"), ("or", "AO R"),
    ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"), ("f", "F"), ("g", "G"),
    ("h", "HH"), ("i", "IH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"), ("n", "N"),
    ("o", "AA"), ("p", "P"), ("q", "K"), ("r", "R"), ("s", "S"), ("t", "T"), ("u", "AH"),
    ("v", "V"), ("w", "W"), ("x", "K S"), ("y", "IY"), ("z", "Z"),
]
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
         "ninety"]


def number_words(number: int) -> list[str]:
    """A whole number as English words (years 1100-1999 in pairs, as they are said)."""
    if number < 20:
        return [_ONES[number]]
    if number < 100:
        return [_TENS[number // 10]] + ([_ONES[number % 10]] if number % 10 else [])
    if 1100 <= number < 2000 and number % 100:
        return number_words(number // 100) + number_words(number % 100)
    if number < 1000:
        rest = number % 100
        return [_ONES[number // 100], "hundred"] + (number_words(rest) if rest else [])
    if number < 1_000_000:
        rest = number % 1000
        return number_words(number // 1000) + ["thousand"] + (number_words(rest) if rest
                                                               else [])
    return [word for digit in str(number) for word in number_words(int(digit))]


_NUMBER_PHONES = {  # CMUdict's, so a guess never needs the decoder for digits
    "zero": "Z IH R OW", "one": "W AH N", "two": "T UW", "three": "TH R IY",
    "four": "F AO R", "five": "F AY V", "six": "S IH K S", "seven": "S EH V AH N",
    "eight": "EY T", "nine": "N AY N", "ten": "T EH N", "eleven": "IH L EH V AH N",
    "twelve": "T W EH L V", "thirteen": "TH ER T IY N", "fourteen": "F AO R T IY N",
    "fifteen": "F IH F T IY N", "sixteen": "S IH K S T IY N",
    "seventeen": "S EH V AH N T IY N", "eighteen": "EY T IY N", "nineteen": "N AY N T IY N",
    "twenty": "T W EH N T IY", "thirty": "TH ER D IY", "forty": "F AO R T IY",
    "fifty": "F IH F T IY", "sixty": "S IH K S T IY", "seventy": "S EH V AH N T IY",
    "eighty": "EY T IY", "ninety": "N AY N T IY", "hundred": "HH AH N D R AH D",
    "thousand": "TH AW Z AH N D",
}


def guess_phones(text: str) -> str:
    """CMU phones for ``text`` from its spelling (digits as number words): a rough guess
    of the right length, not a pronunciation."""
    phones: list[str] = []
    for run in re.findall(r"[0-9]+|[a-z']+", text):
        if run[0].isdigit():
            phones += [_NUMBER_PHONES[w] for w in number_words(int(run[:9]))]
            continue
        letters = run.replace("'", "")
        if len(letters) > 3 and letters.endswith("e") and letters[-2] not in "aeiou":
            letters = letters[:-1]  # a silent final e
        i = 0
        previous = ""
        while i < len(letters):
            for grapheme, sound in _GRAPHEMES:
                if letters.startswith(grapheme, i):
                    if sound != previous:  # "ll", "ss": one sound
                        phones.append(sound)
                    previous = sound
                    i += len(grapheme)
                    break
            else:
                i += 1
    return " ".join(phones)
