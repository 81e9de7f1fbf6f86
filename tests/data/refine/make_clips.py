"""Regenerate the word timing refinement test clips in this folder, offline.

Held-out material: these voices and texts were never used to tune ``refine.py`` (it was
tuned on en-us, en-gb, en-us+f2 and en-gb-x-gbclan reading other texts). Each clip is
eSpeak NG speech with exact word times from its word and phoneme events
(``tests/espeak.py``), written as 16 kHz mono Ogg Opus (24 kbit/s: small, and Opus's
encoder delay is undone by the decoder, so the times hold to the sample) and a
``<name>.json`` of the truth in the transcript shape, plus what made it.

Clips: four voices and speeds for accuracy; ``music``: speech over a music bed with a
music-only intro; ``oov``: made-up names no dictionary has; ``pause``: four seconds of
near-silence in the middle.

Needs libespeak-ng (``apt-get install espeak-ng``) and imageio-ffmpeg (the ``render``
extra). Run: ``python tests/data/refine/make_clips.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from tests import espeak  # noqa: E402

RATE = 16000
LEAD_S = 0.4  # silence before the speech and after it

# (name, voice, words per minute, sentences); sentences are joined by PAUSE_S of silence.
ACCURACY = [
    ("scotland", "en-gb-scotland", 150,
     ["Our train left the station just after nine, rolling slowly past gardens and "
      "warehouses.", "A woman across the aisle was knitting a green scarf, counting "
      "stitches under her breath."]),
    ("caribbean", "en-029", 175,
     ["The museum opens its new wing next spring.", "Visitors will walk through a "
      "forest of glass, where every tree is lit from inside, and quiet music follows "
      "them from room to room."]),
    ("nyc", "en-us-nyc", 195,
     ["Before you paint a wall, wash it with warm water and let it dry completely.",
      "Cover the floor, tape the edges, and always start at the top."]),
    ("rp-f4", "en-gb-x-rp+f4", 135,
     ["Most birds sleep with one eye open.", "Scientists think half of the brain rests "
      "while the other half keeps watch for danger."]),
]
MUSIC = ("music", "en-gb-x-gbcwmd", 160,
         ["The lighthouse keeper climbed the stairs every evening at dusk.", "From the "
          "top he could see the fishing fleet returning across the bay."])
OOV = ("oov", "en-029+m2", 160,
       ["Tomorrow the Vandrelli brothers will open a bakery called Quorbix on the corner "
        "of Maple Street."])
PAUSE = ("pause", "en-us-nyc+f3", 165,
         ["Please leave your umbrella by the door.", "Dinner will be served in the garden "
          "tonight."])
PAUSE_S = 0.35  # between sentences
LONG_PAUSE_S = 4.0  # the pause clip's silence
MUSIC_INTRO_S = 2.0
MUSIC_LEVEL_DB = -14.0  # music RMS against speech RMS


def speak(voice: str, rate: int, sentences: list[str], gap: float
          ) -> tuple[np.ndarray, list[dict[str, object]]]:
    """The sentences at ``RATE`` with ``gap`` seconds between them, and the word times."""
    pieces: list[np.ndarray] = [np.zeros(round(LEAD_S * RATE), np.float32)]
    words: list[dict[str, object]] = []
    cursor = len(pieces[0])
    for i, sentence in enumerate(sentences):
        if i:
            pieces.append(np.zeros(round(gap * RATE), np.float32))
            cursor += len(pieces[-1])
        speech = espeak.synthesize(sentence, voice=voice, rate=rate)
        samples = resample(speech.samples.astype(np.float32) / 32768, speech.sample_rate)
        offset = cursor / RATE
        words += [{"word": w.word, "start": round(offset + w.start, 4),
                   "end": round(offset + w.end, 4)} for w in speech.words]
        pieces.append(samples)
        cursor += len(samples)
    pieces.append(np.zeros(round(LEAD_S * RATE), np.float32))
    return np.concatenate(pieces), words


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Band-limited resampling to RATE (FFT), so word times stay where they were."""
    n = round(len(samples) * RATE / rate)
    spectrum = np.fft.rfft(samples)
    keep = n // 2 + 1
    out = np.fft.irfft(spectrum[:keep], n) * (n / len(samples))
    return out.astype(np.float32)


def music_bed(seconds: float, seed: int = 7) -> np.ndarray:
    """Soft chords with a plucked melody: something a narration might sit on."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    out = np.zeros_like(t)
    chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6),
              (196.0, 246.9, 329.6)]
    for i, chord in enumerate(chords * int(seconds // 8 + 1)):
        a, b = i * 2.0, (i + 1) * 2.0
        mask = (t >= a) & (t < b)
        env = np.clip((t[mask] - a) / 0.05, 0, 1) * np.clip((b - t[mask]) / 0.3, 0, 1)
        for f in chord:
            out[mask] += env * np.sin(2 * np.pi * f * t[mask])
    for start in np.arange(0.0, seconds, 0.5):
        f = rng.choice([440.0, 493.9, 554.4, 659.3, 740.0])
        mask = (t >= start) & (t < start + 0.5)
        out[mask] += 1.5 * np.exp(-(t[mask] - start) * 6) * np.sin(2 * np.pi * f * t[mask])
    return (out / np.sqrt(np.mean(out ** 2))).astype(np.float32)


def write(name: str, samples: np.ndarray, words: list[dict[str, object]],
          made: dict[str, object]) -> None:
    peak = float(np.max(np.abs(samples)))
    samples = samples * (0.7 / peak)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        with wave.open(str(wav), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes((samples * 32767).astype("<i2").tobytes())
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                        "-y", "-i", str(wav), "-map_metadata", "-1", "-fflags", "+bitexact",
                        "-flags:a", "+bitexact", "-c:a", "libopus", "-b:a", "24k",
                        str(HERE / f"{name}.ogg")], check=True)
    text = " ".join(str(w["word"]) for w in words)
    (HERE / f"{name}.json").write_text(json.dumps(
        {**made, "text": text, "duration": round(len(samples) / RATE, 4), "words": words},
        indent=1) + "\n")


def main() -> int:
    if not espeak.available():
        print("libespeak-ng is needed: apt-get install espeak-ng", file=sys.stderr)
        return 1
    for name, voice, rate, sentences in ACCURACY:
        samples, words = speak(voice, rate, sentences, PAUSE_S)
        write(name, samples, words, {"voice": voice, "rate": rate})
    name, voice, rate, sentences = MUSIC
    speech, words = speak(voice, rate, sentences, PAUSE_S)
    intro = round(MUSIC_INTRO_S * RATE)
    speech = np.concatenate([np.zeros(intro, np.float32), speech])
    words = [{**w, "start": round(float(w["start"]) + MUSIC_INTRO_S, 4),  # type: ignore[arg-type]
              "end": round(float(w["end"]) + MUSIC_INTRO_S, 4)} for w in words]  # type: ignore[arg-type]
    voiced = speech[np.abs(speech) > 1e-4]
    level = np.sqrt(np.mean(voiced ** 2)) * 10 ** (MUSIC_LEVEL_DB / 20)
    mixed = speech + level * music_bed(len(speech) / RATE)
    write(name, mixed, words, {"voice": voice, "rate": rate, "music_db": MUSIC_LEVEL_DB,
                               "music_only_until": MUSIC_INTRO_S})
    for clip, gap in ((OOV, PAUSE_S), (PAUSE, LONG_PAUSE_S)):
        name, voice, rate, sentences = clip
        samples, words = speak(voice, rate, sentences, gap)
        noise = np.random.default_rng(3).standard_normal(len(samples)).astype(np.float32)
        samples = samples + 3e-4 * noise  # room tone, not digital silence
        write(name, samples, words, {"voice": voice, "rate": rate, "gap": gap})
    sizes = sum(p.stat().st_size for p in HERE.glob("*.ogg"))
    print(f"wrote {len(list(HERE.glob('*.ogg')))} clips, {sizes / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
