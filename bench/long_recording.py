"""Long test recordings for the transcription benches, made at bench time (never committed).

Sentences read by several eSpeak NG voices at several speeds, one after another, with
pauses between sentences (0.3-0.7 s) and paragraphs (1.2 s), written block by block to a
16-bit WAV at espeak's own rate (the decoder resamples), with each word's exact time
(``tests/espeak.py``). Nothing but the current sentence is held, so 60 min costs no more
memory than 1 min to build.
"""

from __future__ import annotations

import itertools
import json
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Voices the refinement was tuned on and others (the held-out clips in tests/data/refine
# read other texts); (voice, words per minute).
VOICES = [("en-us", 160), ("en-gb", 150), ("en-us+f2", 170), ("en-gb-scotland", 150),
          ("en-029", 175), ("en-us-nyc", 185), ("en-gb-x-rp+f4", 140), ("en-gb-x-gbclan", 160)]

PARAGRAPHS = [
    "Every morning the studio wakes before the city does. The first job is the script: a "
    "few short paragraphs that explain one idea clearly. A narrator records it in a quiet "
    "room, and the recording is sent to the machines that do the heavy work.",
    "One of them listens to the voice and writes down every word with the moment it was "
    "spoken. Another paints a picture for each scene, following the style the team chose "
    "for the series.",
    "A third machine builds the video: it moves slowly across each picture, fades from one "
    "scene to the next, and places the captions so that each word lights up as the "
    "narrator says it. Music plays softly underneath and dips whenever the voice speaks.",
    "When everything is ready, the video is checked by a person, who watches it from start "
    "to finish and writes notes. Small fixes go back into the timeline, and the render runs "
    "again in a few seconds.",
    "Our train left the station just after nine, rolling slowly past gardens and "
    "warehouses. A woman across the aisle was knitting a green scarf, counting stitches "
    "under her breath.",
    "The museum opens its new wing next spring. Visitors will walk through a forest of "
    "glass, where every tree is lit from inside, and quiet music follows them from room to "
    "room.",
    "Before you paint a wall, wash it with warm water and let it dry completely. Cover the "
    "floor, tape the edges, and always start at the top.",
    "Most birds sleep with one eye open. Scientists think half of the brain rests while the "
    "other half keeps watch for danger.",
    "The lighthouse keeper climbed the stairs every evening at dusk. From the top he could "
    "see the fishing fleet returning across the bay.",
    "By lunch time the finished video is on its way to the viewers, and the team starts on "
    "the next script. Nobody remembers the machines, only the story they helped to tell.",
]
SENTENCE_PAUSES = (0.3, 0.45, 0.6, 0.7)
PARAGRAPH_PAUSE = 1.2


def sentences(paragraph: str) -> list[str]:
    out, current = [], []
    for token in paragraph.split():
        current.append(token)
        if token.endswith((".", "?", "!")):
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def build(path: Path, seconds: float, *, seed: int = 0) -> tuple[Path, list[dict[str, Any]]]:
    """A recording of about ``seconds`` (whole sentences: it stops after the sentence that
    passes ``seconds``), and its words with exact times. Cached beside ``path`` (a
    ``.json`` of the words), so a repeated bench does not synthesise again."""
    from tests import espeak

    truth_path = path.with_suffix(".json")
    if path.exists() and truth_path.exists():
        made = json.loads(truth_path.read_text())
        if made.get("seconds") == seconds and made.get("seed") == seed:
            return path, made["words"]
    if not espeak.available():
        sys.exit("libespeak-ng is needed to make the recordings: apt-get install espeak-ng")
    rate = espeak.synthesize("Hello.").sample_rate
    words: list[dict[str, Any]] = []
    written = 0
    rng = np.random.default_rng(seed)
    order = itertools.cycle(range(len(PARAGRAPHS)))
    voices = itertools.cycle(range(len(VOICES)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)

        def silence(s: float) -> None:
            nonlocal written
            n = round(s * rate)
            out.writeframes(np.zeros(n, "<i2").tobytes())
            written += n

        silence(0.5)
        while written / rate < seconds:
            voice, wpm = VOICES[next(voices)]
            for k, sentence in enumerate(sentences(PARAGRAPHS[next(order)])):
                if k:
                    silence(float(rng.choice(SENTENCE_PAUSES)))
                speech = espeak.synthesize(sentence, voice=voice, rate=wpm)
                at = written / rate
                words += [{"word": w.word, "start": round(at + w.start, 4),
                           "end": round(at + w.end, 4)} for w in speech.words]
                out.writeframes(np.asarray(speech.samples, "<i2").tobytes())
                written += len(speech.samples)
            silence(PARAGRAPH_PAUSE)
    truth_path.write_text(json.dumps({"seconds": seconds, "seed": seed,
                                      "duration": written / rate, "words": words}))
    return path, words
