"""Helpers for tests and benches: tiny media, a subprocess runner, probing with PyAV.

Plain functions (no fixtures): import them from here, never from ``conftest``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Cli = Callable[..., Result]  # the ``cli`` fixture: canvascast's arguments -> Result


def run_subprocess(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                   timeout: float = 120) -> Result:
    """The real entry point, in a child process (``python -m canvascast_cli``)."""
    done = subprocess.run([sys.executable, "-m", "canvascast_cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


# ---------------------------------------------------------------------------------------
# Media


def textured_image(path: Path, width: int = 480, height: int = 270, *, seed: int = 0,
                   color: tuple[int, int, int] | None = None) -> Path:
    """A detailed still (smooth noise + gradient) so motion shows, or a flat colour."""
    if color is not None:
        arr = np.empty((height, width, 3), np.uint8)
        arr[:] = color
    else:
        rng = np.random.default_rng(seed)
        small = rng.random((height // 8 + 1, width // 8 + 1, 3))
        img = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height),
                                                                     Image.BICUBIC)
        arr = np.asarray(img).astype(np.float32)
        fine = rng.random((height, width, 1)) * 60
        _yy, xx = np.mgrid[0:height, 0:width]
        grad = (xx / width * 80)[..., None]
        arr = np.clip(arr * 0.6 + fine + grad, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=92)
    return path


def tone_wav(path: Path, seconds: float, *, rate: int = 16000, freq: float = 440.0,
             clicks: tuple[float, ...] = ()) -> Path:
    """A quiet tone, or silence with loud clicks at given times (for sync checks)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    if clicks:
        samples = np.zeros(n)
        for c in clicks:
            i = int(c * rate)
            samples[i: i + rate // 100] = 0.9
    else:
        samples = 0.3 * np.sin(2 * np.pi * freq * t)
    pcm = (samples * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def write_timeline(folder: Path, data: dict[str, Any], name: str = "timeline.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(data, indent=1))
    return path


def small_output(**extra: Any) -> dict[str, Any]:
    return {"width": 320, "height": 180, "fps": 10, **extra}


# ---------------------------------------------------------------------------------------
# Probing with PyAV (imageio-ffmpeg ships no ffprobe)


@dataclass
class Probe:
    video_frames: int
    video_duration: float
    audio_duration: float
    width: int
    height: int
    has_audio: bool
    has_video: bool
    pix_fmt: str | None


def probe(path: Path) -> Probe:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0] if c.streams.video else None
        aus = c.streams.audio[0] if c.streams.audio else None
        frames = 0
        if vs is not None:
            frames = sum(1 for _ in c.demux(vs) if _.size)
        vdur = float(vs.duration * vs.time_base) if vs is not None and vs.duration else 0.0
        adur = float(aus.duration * aus.time_base) if aus is not None and aus.duration else 0.0
        return Probe(frames, vdur, adur, vs.width if vs else 0, vs.height if vs else 0,
                     aus is not None, vs is not None,
                     vs.codec_context.pix_fmt if vs is not None else None)


def decode_frames(path: Path, fmt: str = "rgb24") -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(video=0)]


def decode_audio(path: Path, rate: int = 48000) -> np.ndarray:
    """Mono float samples of the first audio stream."""
    import av

    out = []
    with av.open(str(path)) as c:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in c.decode(audio=0):
            for res in resampler.resample(frame):
                out.append(res.to_ndarray().reshape(-1))
        for res in resampler.resample(None):
            out.append(res.to_ndarray().reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# ---------------------------------------------------------------------------------------
# An ASGI app as a synchronous httpx transport (the job API in-process)


class ASGIBridge:
    """``httpx.ASGITransport`` (async only) behind the synchronous transport interface, so
    a synchronous client — the HTTP backend — talks to the job API in-process: each
    request runs the app on a private event loop and reads the whole response."""

    def __init__(self, app: Any) -> None:
        import asyncio

        import httpx

        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()

    def handle_request(self, request: Any) -> Any:
        import httpx

        async def send() -> Any:
            body = b"".join([chunk for chunk in request.stream])
            copy = httpx.Request(request.method, request.url, headers=request.headers,
                                 content=body, extensions=request.extensions)
            response = await self._asgi.handle_async_request(copy)
            content = b"".join([chunk async for chunk in response.stream])
            return httpx.Response(response.status_code, headers=response.headers,
                                  content=content, extensions=response.extensions)

        return self._loop.run_until_complete(send())

    def close(self) -> None:
        self._loop.close()

    def __enter__(self) -> ASGIBridge:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
