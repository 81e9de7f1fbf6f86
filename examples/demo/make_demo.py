#!/usr/bin/env python3
"""Regenerate the canvascast demo assets in this folder, deterministically and offline.

Writes, next to this file (or into ``--out``):

* ``images/01-dawn.jpg`` ... ``images/06-confetti.jpg``: procedural 2400x1350 art, larger
  than 1080p so zooms and pans have room, with fine detail so motion is visible.
* ``script.txt``: the six-sentence narration, one sentence (= one scene) per line.
* ``narration.flac``: the script spoken by eSpeak NG (mono, 22050 Hz).
* ``words.json``: exact word timings of ``narration.flac`` in the transcript shape
  (``language``, ``duration``, ``segments``, ``words``), taken from the synthesiser
  itself, so no speech recogniser is involved.
* ``music.ogg``: a calm synthesised pad-and-pluck bed (stereo, 48 kHz Opus).
* ``scenes.json``: where each sentence is spoken, so a timeline can give every scene
  the span of its sentence. The same JSON is printed to stdout.

Needs numpy, Pillow, imageio-ffmpeg (the ``render`` extra) and libespeak-ng
(``apt-get install espeak-ng``). Run: ``python examples/demo/make_demo.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# The espeak-ng binding lives with the tests (it gives them exact word times).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import espeak

HERE = Path(__file__).resolve().parent

W, H = 2400, 1350
JPEG_QUALITY = 88

# One sentence per scene: a short story of how canvascast turns a script into a video.
# Plain words only: eSpeak expands digits and symbols into several spoken words.
SCENES: list[tuple[str, str]] = [
    ("01-dawn", "Every video begins at dawn, with a blank page and a simple script."),
    (
        "02-stars",
        "Under the stars, a narrator reads each line aloud, and every word gets its own moment.",
    ),
    ("03-waves", "Like waves reaching the shore, pictures arrive one by one, one for every scene."),
    (
        "04-city",
        "Over the city, a slow camera glides and zooms, bringing each still image to life.",
    ),
    ("05-aurora", "Captions follow the voice word by word, while gentle music plays underneath."),
    ("06-confetti", "Finally, everything is stitched together, and the story is ready to share."),
]

VOICE, RATE = "en-us", 165  # about 30 s for the 82 words above
LEAD_IN_S = 0.30  # silence before the first sentence
SENTENCE_GAP_S = 0.35  # silence added between sentences
TAIL_S = 0.50  # silence after the last one, so a video does not end mid-breath

MUSIC_RATE = 48_000  # Opus works at 48 kHz natively
MUSIC_BEAT_S = 1.0  # 60 bpm, four beats to a chord
MUSIC_BITRATE = "48k"  # constrained VBR: about 200 KB for 32 s


# --- small numeric helpers --------------------------------------------------------------

Array = np.ndarray


def grid() -> tuple[Array, Array]:
    """Pixel-centre coordinates, x in [0, 1) across and y in [0, H/W) down (square pixels)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    return (xs + 0.5) / W, (ys + 0.5) / W


def smoothstep(e0: float, e1: float, x: Array) -> Array:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def mix(a: Array, b: Array | tuple[float, ...], t: Array) -> Array:
    """Blend colour arrays/tuples: a where t=0, b where t=1 (t broadcast over channels)."""
    a_arr = np.asarray(a, dtype=np.float32)
    b_arr = np.asarray(b, dtype=np.float32)
    t = np.asarray(t, dtype=np.float32)
    if t.ndim == 2:
        t = t[..., None]
    return a_arr + (b_arr - a_arr) * t


def rgb(hex_colour: str) -> tuple[float, float, float]:
    value = int(hex_colour.lstrip("#"), 16)
    return ((value >> 16) / 255.0, ((value >> 8) & 255) / 255.0, (value & 255) / 255.0)


def gradient(y: Array, stops: list[tuple[float, str]]) -> Array:
    """Vertical (or any scalar-field) colour ramp through ``(position, colour)`` stops."""
    positions = np.array([p for p, _ in stops], dtype=np.float32)
    colours = np.array([rgb(c) for _, c in stops], dtype=np.float32)
    return np.stack([np.interp(y, positions, colours[:, k]) for k in range(3)], axis=-1)


def fbm(
    rng: np.random.Generator, cells: int, octaves: int, gain: float = 0.5, stretch: float = 1.0
) -> Array:
    """Fractal value noise over the image, about -1..1: bicubic-upscaled random grids.

    Upscaling small random grids with Pillow is far cheaper than per-pixel Perlin noise
    and is exactly reproducible from the seed. ``stretch`` > 1 makes features wider than
    tall (cloud bands), < 1 taller than wide (aurora rays).
    """
    out = np.zeros((H, W), dtype=np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        gx = cells * 2**octave + 3
        gy = max(3, round(gx * H / W * stretch))
        small = rng.standard_normal((gy, gx)).astype(np.float32)
        out += amplitude * np.asarray(
            Image.fromarray(small, mode="F").resize((W, H), Image.Resampling.BICUBIC)
        )
        total += amplitude
        amplitude *= gain
    return out / total


def relief(height: Array, light: tuple[float, float] = (1.0, -0.6)) -> Array:
    """Emboss shading of a height field, unit variance: > 0 on slopes facing ``light``."""
    dx = np.zeros_like(height)
    dy = np.zeros_like(height)
    dx[:, 1:-1] = height[:, 2:] - height[:, :-2]
    dy[1:-1, :] = height[2:, :] - height[:-2, :]
    shade = dx * light[0] + dy * light[1]
    return shade / (float(shade.std()) + 1e-6)


def fbm1d(rng: np.random.Generator, cells: int, octaves: int, gain: float = 0.5) -> Array:
    """One row of fractal noise across the width (ridge lines, curtains), about -1..1."""
    out = np.zeros(W, dtype=np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        n = cells * 2**octave + 3
        small = rng.standard_normal((1, n)).astype(np.float32)
        row = Image.fromarray(small, mode="F").resize((W, 1), Image.Resampling.BICUBIC)
        out += amplitude * np.asarray(row)[0]
        total += amplitude
        amplitude *= gain
    return out / total


def blur(img: Array, radius: float) -> Array:
    """Gaussian blur of a float HxW or HxWx3 array in 0..1 (via Pillow, 8-bit is enough)."""
    if img.ndim == 2:
        pil = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    else:
        pil = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def smear_x(img: Array, width: int) -> Array:
    """Horizontal box blur (motion-blur-like streaks) of an HxWx3 array."""
    pad = width // 2
    padded = np.pad(img, ((0, 0), (pad + 1, pad), (0, 0)), mode="edge")
    sums = np.cumsum(padded, axis=1)
    return (sums[:, width:] - sums[:, :-width])[:, :W] / width


def add_stars(
    img: Array, rng: np.random.Generator, count: int, mask: Array, glow: int = 0
) -> Array:
    """Sprinkle stars (brightness falls off as a power law) where ``mask`` is high."""
    layer = np.zeros((H, W), dtype=np.float32)
    xs = rng.integers(0, W, count)
    ys = rng.integers(0, H, count)
    brightness = rng.random(count).astype(np.float32) ** 3.0
    np.maximum.at(layer, (ys, xs), brightness)
    stars = layer + 1.6 * blur(layer, 1.2)  # soften single pixels a little
    if glow:
        big = layer * (layer > 0.55)
        stars += 6.0 * blur(big, glow)
    tint = mix(np.full((H, W, 3), rgb("#cfe0ff"), np.float32), rgb("#ffe6c4"), rng.random((H, W)))
    return img + (stars * mask)[..., None] * tint


def save_jpeg(img: Array, path: Path) -> None:
    data = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(data, "RGB").save(path, quality=JPEG_QUALITY, optimize=True)


# --- the six scenes -----------------------------------------------------------------------


def scene_dawn(rng: np.random.Generator) -> Array:
    """Sunrise over layered, misty mountain ranges."""
    x, y = grid()
    sky = gradient(
        y,
        [
            (0.0, "#1d2b5a"),
            (0.12, "#4a4a8a"),
            (0.22, "#c0708a"),
            (0.3, "#f59a6a"),
            (0.36, "#ffe0a0"),
        ],
    )
    sun_x, sun_y = 0.62, 0.33
    d = np.sqrt((x - sun_x) ** 2 + (y - sun_y) ** 2)
    sky = mix(sky, rgb("#fff2d0"), np.exp(-d / 0.06) * 0.7)
    sky = mix(sky, rgb("#fffbef"), smoothstep(0.034, 0.031, d))
    # Thin cloud bands, purple-grey above and lit gold from below near the sun.
    bands = fbm(rng, 4, 6, gain=0.55, stretch=5.0)
    cloud = smoothstep(0.05, 0.45, bands) * smoothstep(0.03, 0.1, y) * smoothstep(0.3, 0.18, y)
    lit = np.exp(-np.abs(x - sun_x) / 0.3) * smoothstep(0.1, 0.28, y)
    cloud_colour = mix(np.full_like(sky, rgb("#6a4f86")), rgb("#ffc08a"), lit)
    sky = mix(sky, cloud_colour, cloud * 0.75)
    img = sky
    rock_height = fbm(rng, 10, 7, gain=0.55)
    shade = relief(rock_height, light=(1.0, -0.4))
    fine = fbm(rng, 150, 2)
    layers = [
        # (base line, amplitude, colour, haze)
        (0.33, 0.035, "#c790a0", 0.75),
        (0.36, 0.05, "#9a7096", 0.6),
        (0.40, 0.06, "#6e5488", 0.45),
        (0.45, 0.07, "#4a3c6e", 0.3),
        (0.50, 0.075, "#2c2a4e", 0.16),
        (0.555, 0.06, "#171a30", 0.04),
    ]
    mist_colour = rgb("#f6cfb0")
    for index, (base, amp, colour, haze) in enumerate(layers):
        ridge = base - amp * (0.45 + 0.55 * fbm1d(rng, 3 + index, 8, gain=0.55))
        below = y - ridge[None, :]
        inside = smoothstep(-0.0006, 0.0006, below)
        # Each range gets its own slice of the relief map, so no two look alike.
        offset = 350 * index
        layer_shade = np.roll(shade, offset, axis=1) + 0.5 * np.roll(fine, offset, axis=1)
        rock = np.asarray(rgb(colour), np.float32) * (
            1.0 + (0.16 * (1 - haze)) * layer_shade[..., None]
        )
        # Mist pools in the valleys: the lower part of each range fades into the haze.
        wisps = 0.75 + 0.25 * np.roll(bands, offset, axis=0)
        mist = haze * 0.35 + 0.6 * smoothstep(0.0, 0.09, below) * wisps
        layer = mix(rock, mist_colour, np.clip(mist, 0.0, 0.9))
        img = mix(img, layer, inside)
    # A few birds crossing the sky.
    canvas = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(9):
        bx, by = float(rng.uniform(700, 1300)), float(rng.uniform(250, 450))
        span = float(rng.uniform(10, 18))
        draw.line(
            [(bx - span, by - span * 0.4), (bx, by), (bx + span, by - span * 0.45)],
            fill=(60, 40, 70),
            width=3,
        )
    return np.asarray(canvas, np.float32) / 255.0


def scene_stars(rng: np.random.Generator) -> Array:
    """A Milky Way night over a hill of pine trees."""
    x, y = grid()
    img = gradient(y, [(0.0, "#02030a"), (0.35, "#0a1030"), (0.56, "#1b2450")])
    # The galactic band: a tilted strip whose brightness and dust are fractal.
    across = (y - (0.05 + 0.42 * x)) / 0.09
    band = np.exp(-(across**2))
    clouds = 0.5 + 0.5 * fbm(rng, 6, 7, gain=0.6)
    dust = smoothstep(0.1, 0.6, 0.5 + 0.5 * fbm(rng, 10, 6, gain=0.6))
    glow = band * clouds * (1.0 - 0.75 * dust * np.exp(-(across**2) * 3))
    colour = mix(
        np.full((H, W, 3), rgb("#6a5ad0"), np.float32), rgb("#ffd9a8"), np.exp(-(across**2) * 4)
    )
    img = img + colour * glow[..., None] * 0.55
    nebula = smoothstep(0.2, 0.9, 0.5 + 0.5 * fbm(rng, 3, 6))
    img = img + np.asarray(rgb("#c04a8a"), np.float32) * (nebula * 0.12 * band)[..., None]
    img = add_stars(img, rng, 9000, 0.6 + 0.8 * band, glow=3)
    # Hill and pine trees as a silhouette with a faint rim of sky light, drawn at twice
    # the size and scaled down for antialiased edges.
    hill = 0.47 + 0.04 * fbm1d(rng, 2, 5) + 0.05 * (x[0] - 0.5) ** 2
    k = 2
    silhouette = Image.new("L", (W * k, H * k), 0)
    draw = ImageDraw.Draw(silhouette)
    outline = [(i * k, float(hill[i]) * W * k) for i in range(0, W, 4)]
    draw.polygon([(0, H * k), *outline, (W * k, H * k)], fill=255)
    for _ in range(70):
        tx = float(rng.uniform(0, W))
        base = float(hill[min(int(tx), W - 1)]) * W + 8
        height = float(rng.uniform(50, 190))
        width = height * float(rng.uniform(0.28, 0.4))
        tiers = int(rng.integers(4, 7))
        for tier in range(tiers):
            top = base - height * (1 - tier / tiers) - 10
            bottom = base - height * (1 - (tier + 1.6) / tiers)
            half = width * (tier + 1) / tiers / 2
            triangle = [(tx, top), (tx - half, bottom), (tx + half, bottom)]
            draw.polygon([(px * k, py * k) for px, py in triangle], fill=255)
        draw.line(
            [(tx * k, (base - height * 0.2) * k), (tx * k, (base + 6) * k)], fill=255, width=8
        )
    silhouette = silhouette.resize((W, H), Image.Resampling.BOX)
    ground = np.asarray(silhouette, np.float32) / 255.0
    rim = np.clip(blur(ground, 3) - ground, 0, 1)
    land = gradient(y, [(0.4, "#0b0f1e"), (0.56, "#05070e")]) * (
        1.0 + 0.3 * fbm(rng, 50, 3)[..., None]
    )
    img = mix(img, land, ground) + rim[..., None] * np.asarray(rgb("#6070b0"), np.float32) * 0.8
    return img


def scene_waves(rng: np.random.Generator) -> Array:
    """Sunset over a rolling sea, with a glittering sun path."""
    x, y = grid()
    horizon = 0.25
    sky = gradient(
        y,
        [
            (0.0, "#2b1e4e"),
            (0.1, "#7b3f6e"),
            (0.18, "#e0685a"),
            (0.23, "#ffb066"),
            (horizon, "#ffd690"),
        ],
    )
    sun_x, sun_y = 0.42, horizon - 0.01
    d = np.sqrt((x - sun_x) ** 2 + ((y - sun_y) * 1.1) ** 2)
    sky = mix(sky, rgb("#fff0c0"), np.exp(-d / 0.045) * 0.8)
    sky = mix(sky, rgb("#fffbe8"), smoothstep(0.027, 0.024, d) * (y < horizon))
    bands = fbm(rng, 3, 6, gain=0.55, stretch=6.0)
    cloud = smoothstep(0.05, 0.45, bands) * smoothstep(0.02, 0.08, y) * smoothstep(0.22, 0.12, y)
    glow = np.exp(-np.abs(x - sun_x) / 0.18) * smoothstep(0.05, 0.2, y)
    sky = mix(sky, mix(np.full_like(sky, rgb("#5a2d5c")), rgb("#ffa070"), glow), cloud * 0.8)

    # Sea: travelling waves on a plane seen in perspective. Distance grows as 1/(y - horizon),
    # so waves crowd towards the horizon; each fades out before its wavelength on screen
    # drops under a few pixels, which would only add moire and JPEG noise.
    below = np.maximum(y - horizon, 1e-3)
    depth = 1.0 / below
    u = (x - 0.5) * depth
    depth_per_px = depth / below / W  # how fast distance changes per pixel row
    height = np.zeros_like(x)
    slope = np.zeros_like(x)  # d(height)/d(distance): positive faces the viewer
    slope_u = np.zeros_like(x)
    freq = 4.0
    for _ in range(10):
        angle = float(rng.uniform(-0.6, 0.6))
        du, dv = math.sin(angle) * freq, math.cos(angle) * freq
        phase = float(rng.uniform(0, 2 * math.pi))
        arg = du * u + dv * depth + phase
        cycles_per_px = np.abs(dv) * depth_per_px / (2 * math.pi)
        fade = smoothstep(0.2, 0.07, cycles_per_px)
        amp = 0.5 / freq
        height += amp * np.sin(arg) * fade
        slope += amp * dv * np.cos(arg) * fade
        slope_u += amp * du * np.cos(arg) * fade
        freq *= 1.42
    slope = slope / (float(slope.std()) + 1e-6)
    slope_u = slope_u / (float(slope_u.std()) + 1e-6)
    # Facets tilted towards the viewer mirror the bright low sky, the others the dark zenith.
    facing = 1.0 / (1.0 + np.exp(-1.6 * slope))
    deep = gradient(y, [(horizon, "#4a4a78"), (0.36, "#203e60"), (0.5625, "#0b2238")])
    bright = gradient(y, [(horizon, "#ffc890"), (0.32, "#e07a6a"), (0.5625, "#5a6a8a")])
    far = smoothstep(0.34, horizon, y)  # grazing view: the far sea mirrors the sky more
    water = mix(deep, bright, facing * (0.35 + 0.3 * far) + 0.3 * far)
    # Beyond the resolvable waves, fine horizontal streaks keep the far sea alive.
    streaks = fbm(rng, 12, 5, gain=0.6, stretch=14.0)
    water = water * (1.0 + 0.12 * streaks * smoothstep(0.36, 0.27, y))[..., None]
    water = mix(water, rgb("#ffd8a0"), smoothstep(horizon + 0.015, horizon, y) * 0.7)
    # The sun's path: a widening column of glints on facets that catch it.
    path = np.exp(-(((x - sun_x) / (0.012 + 0.3 * (below - 0.0))) ** 2))
    glint = smoothstep(0.8, 2.2, slope + 0.3 * np.abs(slope_u)) * path
    water = water + np.asarray(rgb("#fff2c8"), np.float32) * (glint * 0.9 + path * 0.1)[..., None]
    # Foam on the steepest crests close to the viewer.
    foam = smoothstep(1.6, 2.6, slope) * smoothstep(0.42, 0.54, y) * (0.6 + 0.4 * fbm(rng, 90, 2))
    water = mix(water, rgb("#dde8f2"), np.clip(foam, 0, 1) * 0.7)
    sea = smoothstep(horizon - 0.0005, horizon + 0.0005, y)
    return mix(sky, water, sea)


def scene_city(rng: np.random.Generator) -> Array:
    """A dusk skyline with lit windows, mirrored in a rippling river."""
    x, y = grid()
    waterline = 0.42
    img = gradient(
        y,
        [
            (0.0, "#0c1838"),
            (0.14, "#23356a"),
            (0.28, "#8a5a8a"),
            (0.36, "#f08a5a"),
            (waterline, "#ffc27a"),
        ],
    )
    img = add_stars(img, rng, 2500, smoothstep(0.22, 0.02, y) * 0.8)
    moon_d = np.sqrt((x - 0.82) ** 2 + (y - 0.08) ** 2)
    img = mix(img, rgb("#f6efd8"), smoothstep(0.021, 0.019, moon_d))
    img = mix(img, rgb("#fff6e0"), np.exp(-moon_d / 0.03) * 0.25)
    crater = 0.5 + 0.5 * fbm(rng, 120, 2)
    img = img - (smoothstep(0.021, 0.019, moon_d) * crater * 0.12)[..., None]

    canvas = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    base_y = int(waterline * W)
    rows = [
        # (count, min h, max h, min w, max w, colour, window chance, window brightness)
        (38, 120, 380, 60, 160, (96, 86, 132), 0.0, 0.0),
        (30, 180, 560, 70, 180, (58, 52, 92), 0.25, 0.45),
        (22, 220, 720, 90, 220, (24, 24, 44), 0.45, 1.0),
    ]
    for count, min_h, max_h, min_w, max_w, colour, chance, bright in rows:
        for _ in range(count):
            bw = int(rng.integers(min_w, max_w))
            bh = int(rng.integers(min_h, max_h))
            bx = int(rng.integers(-bw // 2, W))
            top = base_y - bh
            draw.rectangle([bx, top, bx + bw, base_y], fill=colour)
            style = int(rng.integers(0, 4))
            if style == 0:  # stepped crown
                draw.rectangle([bx + bw // 5, top - bh // 10, bx + 4 * bw // 5, top], fill=colour)
                draw.line(
                    [(bx + bw // 2, top - bh // 10), (bx + bw // 2, top - bh // 10 - 60)],
                    fill=colour,
                    width=4,
                )
            elif style == 1:  # spire
                spire = [(bx, top), (bx + bw, top), (bx + bw // 2, top - int(bw * 0.6))]
                draw.polygon(spire, fill=colour)
            if chance <= 0:
                continue
            for wy in range(top + 14, base_y - 10, 22):
                for wx in range(bx + 10, bx + bw - 12, 18):
                    if rng.random() < chance:
                        warm = rng.random()
                        level = bright * float(rng.uniform(0.55, 1.0))
                        c = (
                            int(255 * level),
                            int((200 + 50 * warm) * level),
                            int((120 + 110 * (1 - warm)) * level),
                        )
                        draw.rectangle([wx, wy, wx + 8, wy + 11], fill=c)
    city = np.asarray(canvas, np.float32) / 255.0
    # Warm haze at street level.
    city = mix(city, rgb("#ff9a60"), smoothstep(waterline - 0.06, waterline, y) * 0.25)

    # River: the city flipped about the waterline, displaced by ripples and darkened.
    reflect_rows = np.clip(2 * base_y - np.arange(H), 0, H - 1)
    # Each row of the reflection is displaced sideways on its own (the look of small
    # wind ripples), then smeared horizontally into streaks.
    ripple = (6 * rng.standard_normal(H))[:, None] * smoothstep(waterline - 0.01, 0.5, y)
    cols = np.clip(np.arange(W)[None, :] + ripple, 0, W - 1).astype(np.int32)
    reflection = smear_x(city[reflect_rows[:, None], cols], 17)
    reflection = mix(reflection * 0.6, rgb("#13203a"), smoothstep(waterline, 0.56, y) * 0.55)
    return mix(city, reflection, (y > waterline).astype(np.float32))


def scene_aurora(rng: np.random.Generator) -> Array:
    """Aurora curtains over snowy peaks and a still lake."""
    x, y = grid()
    lake = 0.42
    img = gradient(y, [(0.0, "#02040c"), (0.22, "#061428"), (lake, "#0c2634")])
    img = add_stars(img, rng, 6000, smoothstep(lake, 0.05, y), glow=2)
    # Each curtain: a bright, sharp-ish lower edge that wanders across the sky, fading
    # upwards through green into violet, combed into vertical rays.
    # Each curtain is a ribbon: brightest along a wandering lower edge, combed into
    # vertical rays that fade out upwards, with dark sky and stars above and below it.
    for lower, spread, strength, top_colour in (
        (0.2, 0.045, 1.0, "#8a4aff"),
        (0.3, 0.035, 0.75, "#ff4aa8"),
    ):
        edge = (
            lower
            + 0.04 * fbm1d(rng, 3, 6)
            + 0.02 * np.sin(x[0] * float(rng.uniform(8, 12)) + float(rng.uniform(0, 6)))
        )
        above = edge[None, :] - y
        rays = 0.25 + 0.75 * smoothstep(-0.6, 0.8, fbm(rng, 30, 4, gain=0.6, stretch=0.06))
        body = np.where(above > 0, np.exp(-above / spread), np.exp(above / 0.012))
        # Along its length the ribbon brightens and thins out, so it never reads as a
        # continuous backlit horizon.
        along = 0.15 + 0.85 * smoothstep(-0.5, 0.4, fbm1d(rng, 4, 3))[None, :]
        curtain = body * rays * along * smoothstep(0.0, 0.1, y)
        colour = gradient(
            above / spread,
            [
                (-0.5, "#60e0b0"),
                (0.0, "#70ffb0"),
                (0.8, "#30e890"),
                (1.6, "#20b0a0"),
                (3.0, top_colour),
            ],
        )
        img = img + colour * (curtain * strength)[..., None]
    # Peaks: relief-shaded rock with snow settling on the tops and gentle slopes.
    # Ridged noise (1 - |n|) makes sharp summits where the noise crosses zero.
    ridge = (
        lake
        - 0.012
        - 0.08 * np.clip(1.0 - np.abs(fbm1d(rng, 3, 8, gain=0.55)), 0.0, 1.0) ** 1.8
        - 0.006 * fbm1d(rng, 30, 4)
    )
    mountain = smoothstep(-0.0006, 0.0006, y - ridge[None, :]) * (y < lake)
    height = fbm(rng, 14, 7, gain=0.55)
    shade = relief(height, light=(-1.0, -0.5))
    snow = smoothstep(
        0.3, 0.9, 0.4 * height + 0.25 * shade + 1.2 * smoothstep(0.06, 0.0, y - ridge[None, :])
    )
    rock = mix(
        np.full((H, W, 3), rgb("#0a1018"), np.float32), rgb("#1c2a34"), smoothstep(-1.5, 1.5, shade)
    )
    snowy = mix(
        np.full((H, W, 3), rgb("#4a7a80"), np.float32), rgb("#a8f0d8"), smoothstep(-1.0, 2.0, shade)
    )
    img = mix(img, mix(rock, snowy, snow * 0.85), mountain)
    # The lake mirrors everything above it, broken by faint horizontal ripples.
    lake_px = int(lake * W)
    rows = np.clip(2 * lake_px - np.arange(H), 0, H - 1)
    shift = np.round(2.5 * fbm(rng, 40, 2, stretch=8.0)).astype(np.int32)
    cols = np.clip(np.arange(W)[None, :] + shift, 0, W - 1)
    mirrored = img[rows[:, None], cols] * 0.6
    mirrored = mirrored * (1.0 + 0.15 * fbm(rng, 20, 4, stretch=10.0)[..., None])
    shore = smoothstep(0.003, 0.0, np.abs(y - lake)) * 0.25  # a faint dark shoreline
    return mix(img, mirrored, (y >= lake).astype(np.float32)) * (1.0 - shore)[..., None]


def scene_confetti(rng: np.random.Generator) -> Array:
    """Abstract celebration: soft bokeh discs, rings, stripes and confetti."""
    x, y = grid()
    diagonal = (x + y * 1.3) / 1.7
    img = gradient(
        diagonal, [(0.0, "#2a1450"), (0.35, "#a02a7a"), (0.65, "#ff7a50"), (1.0, "#ffd26a")]
    )
    img = img * (1.0 + 0.08 * fbm(rng, 6, 5)[..., None])
    # Fine diagonal line texture, the kind of detail that shows every pan.
    img = img * (1.0 - 0.07 * ((0.5 + 0.5 * np.sin((x - y) * W * 0.35)) ** 4))[..., None]
    palette = [rgb(c) for c in ("#ffe08a", "#7ae0ff", "#ff8ad0", "#b08aff", "#ffffff", "#8affc0")]

    def disc(
        cx: float,
        cy: float,
        r: float,
        colour: tuple[float, float, float],
        alpha: float,
        soft: float,
        ring: float = 0.0,
    ) -> None:
        """Blend a soft disc (or a ring of width ``ring``) into ``img`` in place."""
        x0, x1 = max(0, int((cx - r - soft) * W)), min(W, int((cx + r + soft) * W) + 1)
        y0, y1 = max(0, int((cy - r - soft) * W)), min(H, int((cy + r + soft) * W) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        dx = x[y0:y1, x0:x1] - cx
        dy = y[y0:y1, x0:x1] - cy
        d = np.sqrt(dx * dx + dy * dy)
        shape = smoothstep(r + soft, r - soft, d)
        if ring:
            shape *= smoothstep(r - ring - soft, r - ring + soft, d)
        else:
            shape *= 0.75 + 0.25 * smoothstep(0, r, d)  # bokeh discs are brighter at the rim
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = mix(patch, colour, shape * alpha)

    for _ in range(60):  # bokeh
        disc(
            cx=float(rng.uniform(0, 1)),
            cy=float(rng.uniform(0, 0.56)),
            r=float(rng.uniform(0.01, 0.08)),
            colour=palette[int(rng.integers(len(palette)))],
            alpha=float(rng.uniform(0.12, 0.35)),
            soft=0.003,
        )
    for _ in range(14):  # thin rings
        disc(
            cx=float(rng.uniform(0, 1)),
            cy=float(rng.uniform(0, 0.56)),
            r=float(rng.uniform(0.03, 0.14)),
            colour=palette[int(rng.integers(len(palette)))],
            alpha=0.6,
            soft=0.0006,
            ring=float(rng.uniform(0.002, 0.006)),
        )
    # Confetti: small rotated rectangles, drawn at twice the size and scaled down so
    # their edges are antialiased (a zoom would magnify jaggies).
    scale = 2
    confetti = Image.new("RGBA", (W * scale, H * scale), (0, 0, 0, 0))
    draw = ImageDraw.Draw(confetti)
    for _ in range(650):
        cx, cy = float(rng.uniform(0, W)) * scale, float(rng.uniform(0, H)) * scale
        length = float(rng.uniform(8, 26)) * scale
        width = float(rng.uniform(4, 9)) * scale
        angle = float(rng.uniform(0, math.pi))
        c, s = math.cos(angle), math.sin(angle)
        corners = [
            (cx + c * a * length - s * b * width, cy + s * a * length + c * b * width)
            for a, b in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))
        ]
        colour = palette[int(rng.integers(len(palette)))]
        draw.polygon(corners, fill=(*(int(255 * v) for v in colour), 255))
    canvas = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    canvas = canvas.convert("RGBA")
    canvas.alpha_composite(confetti.resize((W, H), Image.Resampling.BOX))
    return np.asarray(canvas.convert("RGB"), np.float32) / 255.0


SCENE_PAINTERS: dict[str, Callable[[np.random.Generator], Array]] = {
    "01-dawn": scene_dawn,
    "02-stars": scene_stars,
    "03-waves": scene_waves,
    "04-city": scene_city,
    "05-aurora": scene_aurora,
    "06-confetti": scene_confetti,
}


def make_images(out: Path) -> list[Path]:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, _) in enumerate(SCENES):
        rng = np.random.default_rng(1000 + index)  # fixed seed per scene
        path = images / f"{name}.jpg"
        save_jpeg(SCENE_PAINTERS[name](rng), path)
        paths.append(path)
    return paths


# --- narration ------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    # -bitexact keeps encoder version strings and random Ogg serials out of the files,
    # so reruns produce identical bytes.
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True)


def write_wav(path: Path, samples: Array, rate: int) -> None:
    """16-bit PCM WAV from int16 samples shaped (n,) or (n, channels)."""
    samples = np.asarray(samples, dtype="<i2")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def make_narration(out: Path, tmp: Path) -> tuple[dict, list[dict]]:
    """Speak each sentence, join them with fixed silences, and keep every word's time."""
    pieces: list[Array] = []
    words: list[dict] = []
    segments: list[dict] = []
    rate = 0
    cursor = 0  # in samples, so offsets are exact

    def silence(seconds: float) -> None:
        nonlocal cursor
        n = round(seconds * rate)
        pieces.append(np.zeros(n, np.int16))
        cursor += n

    for index, (_, sentence) in enumerate(SCENES):
        speech = espeak.synthesize(sentence, voice=VOICE, rate=RATE)
        if rate == 0:
            rate = speech.sample_rate
            silence(LEAD_IN_S)
        elif index:
            silence(SENTENCE_GAP_S)
        offset = cursor / rate
        for w in speech.words:
            words.append(
                {
                    "word": w.word,
                    "start": round(offset + w.start, 3),
                    "end": round(offset + w.end, 3),
                }
            )
        segments.append(
            {
                "start": round(offset + speech.words[0].start, 3),
                "end": round(offset + speech.words[-1].end, 3),
                "text": sentence,
            }
        )
        pieces.append(speech.samples)
        cursor += len(speech.samples)
    silence(TAIL_S)

    audio = np.concatenate(pieces)
    wav = tmp / "narration.wav"
    write_wav(wav, audio, rate)
    ffmpeg(
        "-i", str(wav), "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
        "-c:a", "flac", "-compression_level", "8", str(out / "narration.flac"),
    )  # fmt: skip
    transcript = {
        "language": "en",
        "duration": round(len(audio) / rate, 3),
        "segments": segments,
        "words": words,
    }
    return transcript, segments


def transcript_json(transcript: dict) -> str:
    """The transcript as JSON with one segment or word per line: small, and easy to diff."""

    def rows(items: list[dict]) -> str:
        return ",\n".join("    " + json.dumps(item, ensure_ascii=False) for item in items)

    return (
        "{\n"
        f'  "language": {json.dumps(transcript["language"])},\n'
        f'  "duration": {json.dumps(transcript["duration"])},\n'
        f'  "segments": [\n{rows(transcript["segments"])}\n  ],\n'
        f'  "words": [\n{rows(transcript["words"])}\n  ]\n'
        "}\n"
    )


# --- music ------------------------------------------------------------------------------

# I - vi - IV - V, twice, in D major; open voicings in the middle register so the pad
# sits under a voice instead of competing with it. MIDI note numbers.
CHORDS: list[list[int]] = [
    [50, 57, 62, 66, 69],  # D
    [47, 54, 62, 66, 69],  # Bm7
    [43, 50, 59, 62, 66],  # Gmaj7
    [45, 52, 57, 61, 64],  # A
    [50, 57, 62, 66, 71],  # D6
    [42, 49, 57, 61, 64],  # F#m7
    [43, 50, 57, 59, 62],  # G add9
    [50, 57, 62, 64, 66],  # D add9, to end on
]
PENTATONIC = [74, 76, 78, 81, 83, 86, 88]  # D major pentatonic, D5..E6


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def make_music(out: Path, tmp: Path) -> float:
    """Render the music bed and encode it; return its duration in seconds."""
    rng = np.random.default_rng(7)
    sr = MUSIC_RATE
    bar = 4 * MUSIC_BEAT_S
    duration = bar * len(CHORDS)
    n = int(duration * sr)
    mixbus = np.zeros((n + 3 * sr, 2), np.float32)  # room for the last release

    # Pad: each chord swells in and overlaps the next. Two voices per note, 12 cents
    # apart, beat slowly against each other (a chorus).
    attack, release = 1.4, 2.2
    for index, chord in enumerate(CHORDS):
        start = int(index * bar * sr)
        length = int((bar + release) * sr)
        t = np.arange(length, dtype=np.float32) / sr
        envelope = np.minimum(1.0, t / attack) * np.clip((bar + release - t) / release, 0, 1)
        envelope = envelope**1.5
        phases = rng.uniform(0, 2 * math.pi, (len(chord), 2))
        voices = np.zeros((2, length), np.float32)
        for note, note_phases in zip(chord, phases, strict=True):
            for which, (cents, phase) in enumerate(zip((-6.0, 6.0), note_phases, strict=True)):
                f = midi_hz(note + cents / 100)
                for harmonic in range(1, 6):
                    amp = 1.0 / harmonic**1.8
                    voices[which] += amp * np.sin(2 * math.pi * f * harmonic * t + phase * harmonic)
        # A slow swell makes the pad breathe.
        voices *= 0.85 + 0.15 * np.sin(2 * math.pi * 0.11 * t)
        # The flat voice leans left and the sharp one right: width that still sums to mono.
        left, right = 0.7 * voices[0] + 0.3 * voices[1], 0.3 * voices[0] + 0.7 * voices[1]
        mixbus[start : start + length, 0] += 0.045 * left * envelope
        mixbus[start : start + length, 1] += 0.045 * right * envelope

    # Plucked melody: decaying harmonics, higher ones dying first (a soft guitar/harp).
    pluck_t = np.arange(int(2.5 * sr), dtype=np.float32) / sr
    eighths = 8
    for index, chord in enumerate(CHORDS[:-1]):
        chord_classes = {note % 12 for note in chord}
        choices = [p for p in PENTATONIC if p % 12 in chord_classes] or PENTATONIC
        for step in range(eighths):
            if step % 2 and rng.random() < 0.55:
                continue  # off-beats mostly rest: keep it light
            if not step % 2 and rng.random() < 0.2:
                continue
            note = choices[int(rng.integers(len(choices)))]
            f = midi_hz(note)
            tone = np.zeros_like(pluck_t)
            for harmonic in range(1, 7):
                decay = 1.8 + 1.4 * harmonic
                tone += (
                    (0.6**harmonic)
                    * np.sin(2 * math.pi * f * harmonic * pluck_t)
                    * np.exp(-decay * pluck_t)
                )
            tone *= np.minimum(1.0, pluck_t / 0.004)  # no click at the onset
            velocity = float(rng.uniform(0.6, 1.0))
            pan = float(rng.uniform(0.3, 0.7))
            at = int((index * bar + step * bar / eighths) * sr)
            end = min(at + len(tone), len(mixbus))
            mixbus[at:end, 0] += 0.11 * velocity * (1 - pan) * tone[: end - at]
            mixbus[at:end, 1] += 0.11 * velocity * pan * tone[: end - at]

    # Room: convolve with two decorrelated, exponentially decaying noise tails.
    ir_t = np.arange(int(1.8 * sr), dtype=np.float32) / sr
    fft_n = 1 << math.ceil(math.log2(len(mixbus) + len(ir_t)))
    wet = np.zeros_like(mixbus)
    for channel in range(2):
        noise = rng.standard_normal(len(ir_t)).astype(np.float32) * np.exp(-ir_t / 0.45)
        ir = np.convolve(noise, np.ones(6, np.float32) / 6, mode="same")  # darker tail
        ir /= np.sqrt(np.sum(ir**2))
        spectrum = np.fft.rfft(mixbus[:, channel], fft_n) * np.fft.rfft(ir, fft_n)
        wet[:, channel] = np.fft.irfft(spectrum, fft_n)[: len(mixbus)]
    music = 0.78 * mixbus + 0.35 * wet
    music = music[:n]
    # Fade in, fade out, then normalise the peak to -1 dBFS.
    t = np.arange(n, dtype=np.float32) / sr
    music *= (np.minimum(1.0, t / 1.5) * np.clip((duration - t) / 3.0, 0, 1))[:, None]
    music *= 10 ** (-1 / 20) / float(np.abs(music).max())

    wav = tmp / "music.wav"
    write_wav(wav, np.round(music * 32767).astype(np.int16), sr)
    ffmpeg(
        "-i", str(wav), "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
        "-c:a", "libopus", "-b:a", MUSIC_BITRATE, "-vbr", "constrained", str(out / "music.ogg"),
    )  # fmt: skip
    return duration


# --- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not espeak.available():
        print("libespeak-ng is needed: apt-get install espeak-ng", file=sys.stderr)
        return 1

    began = time.perf_counter()
    (out / "script.txt").write_text("\n".join(sentence for _, sentence in SCENES) + "\n")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        transcript, segments = make_narration(out, tmp)
        music_duration = make_music(out, tmp)
    (out / "words.json").write_text(transcript_json(transcript))
    images = make_images(out)

    summary = {
        "narration": "narration.flac",
        "narration_duration": transcript["duration"],
        "music": "music.ogg",
        "music_duration": music_duration,
        "scenes": [
            {
                "image": str(path.relative_to(out)),
                "start": segment["start"],
                "end": segment["end"],
                "text": segment["text"],
            }
            for path, segment in zip(images, segments, strict=True)
        ],
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    (out / "scenes.json").write_text(text + "\n")
    print(text)
    print(f"generated in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
