"""Which scenes make frame ``n``, and the frame itself.

``FramePlan`` maps a global frame number to one scene (or two, blended, inside a
crossfade). ``Compositor`` turns that into pixels, preparing each still once, one scene
ahead, on a background thread: the stills are decoded here, not up front (the input
checks read a JPEG's or PNG's header only), and at most the stills of the scenes on screen
and of the next one are held. Any frame can be made independently of the others, so any
range ``[start, end)`` renders the same frames as the whole video does.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from canvascast_cli.engines.render.frames import (
    FrameBuffer,
    PreparedImage,
    load_rgb,
    prepare_image,
    render_view,
)
from canvascast_cli.engines.render.inputs import image_decode_failed
from canvascast_cli.engines.render.motion import progress, view_at
from canvascast_cli.timeline import Motion, Timeline, crossfade_frames, scene_frames


@dataclass(frozen=True)
class SceneSpan:
    index: int
    start: int  # first global frame
    frames: int  # frames on screen, overlaps included
    fade_in: int  # frames of crossfade from the previous scene
    motion: Motion

    @property
    def end(self) -> int:
        return self.start + self.frames


class FramePlan:
    def __init__(self, timeline: Timeline) -> None:
        fps = timeline.output.fps
        fades = [0, *crossfade_frames(timeline)]
        spans, start = [], 0
        for i, scene in enumerate(timeline.scenes):
            start -= fades[i]
            n = scene_frames(scene.duration, fps)
            spans.append(SceneSpan(i, start, n, fades[i], scene.motion))
            start += n
        self.spans = spans
        self.total_frames = start

    def layers(self, n: int) -> list[tuple[SceneSpan, float]]:
        """The scenes visible at frame ``n`` with their weights (sum 1), incoming last."""
        visible = [s for s in self.spans if s.start <= n < s.end]
        if len(visible) == 1:
            return [(visible[0], 1.0)]
        outgoing, incoming = visible[-2], visible[-1]
        # (j + 1) / (X + 1): neither end of a crossfade shows a pure frame of one scene,
        # so the blend starts right after the cut point and ends right before full.
        alpha = (n - incoming.start + 1) / (incoming.fade_in + 1)
        return [(outgoing, 1.0 - alpha), (incoming, alpha)]


class Compositor:
    """Makes frames. One caller thread (stills are prepared on a helper thread, at
    ``niceness``: Linux sets it per thread); frames in increasing order are fastest."""

    def __init__(self, timeline: Timeline, images: list[Path], *, prefetch: bool = True,
                 niceness: int = 0) -> None:
        self.timeline = timeline
        self.plan = FramePlan(timeline)
        out = timeline.output
        self.width, self.height = out.width, out.height
        self._images = images
        self._prepared: dict[int, Future[PreparedImage]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare",
                                        initializer=_be_nice, initargs=(niceness,))
        self._prefetch = prefetch
        self._static: dict[int, np.ndarray] = {}
        self._scratch = [FrameBuffer(out.width, out.height) for _ in range(2)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._prepared.clear()
        self._static.clear()

    def prepare_ahead(self, n: int) -> None:
        """Start preparing the stills frame ``n`` shows (before its frames are asked for)."""
        for span, _ in self.plan.layers(n):
            self._future(span.index)

    def _prepare(self, index: int) -> PreparedImage:
        path = self._images[index]
        try:
            rgb = load_rgb(path, min_size=(self.width, self.height),
                           background=self.timeline.output.background)
        except (OSError, SyntaxError, ValueError) as exc:
            raise image_decode_failed(self._images, path, exc) from None
        return prepare_image(rgb, self.width, self.height)

    def _future(self, index: int) -> Future[PreparedImage]:
        future = self._prepared.get(index)
        if future is None:
            future = self._prepared[index] = self._pool.submit(self._prepare, index)
        return future

    def _image(self, index: int) -> PreparedImage:
        return self._future(index).result()

    def _housekeep(self, n: int) -> None:
        """Drop stills whose scenes are over; start preparing the next one."""
        for span in self.plan.spans:
            if span.end <= n:
                self._prepared.pop(span.index, None)
                self._static.pop(span.index, None)
        if self._prefetch:
            for span in [s for s in self.plan.spans if s.start > n][:1]:
                self._future(span.index)

    def _scene_frame(self, span: SceneSpan, n: int, out: FrameBuffer) -> np.ndarray:
        if span.motion.type == "none":
            cached = self._static.get(span.index)
            if cached is None:
                buf = FrameBuffer(self.width, self.height)
                image = self._image(span.index)
                render_view(image, view_at(span.motion, 0.0, image.width, image.height,
                                           self.width, self.height), buf)
                cached = self._static[span.index] = buf.data
            return cached
        image = self._image(span.index)
        p = progress(n - span.start, span.frames)
        render_view(image, view_at(span.motion, p, image.width, image.height,
                                   self.width, self.height), out)
        return out.data

    def frame(self, n: int, out: FrameBuffer) -> np.ndarray:
        """Frame ``n`` as I420 bytes: ``out.data`` or a cached array (do not modify it)."""
        self._housekeep(n)
        layers = self.plan.layers(n)
        if len(layers) == 1:
            return self._scene_frame(layers[0][0], n, out)
        (a, wa), (b, wb) = layers
        first = self._scene_frame(a, n, self._scratch[0])
        second = self._scene_frame(b, n, self._scratch[1])
        cv2.addWeighted(first, wa, second, wb, 0.0, dst=out.data)
        return out.data


def _be_nice(niceness: int) -> None:
    if niceness:
        with contextlib.suppress(OSError):
            os.nice(niceness)
