"""Ken Burns geometry: where the camera looks in a still at a given point of its scene.

Coordinates are continuous pixel coordinates of the *prepared* image, the still scaled so
that its cover-fitted view (zoom 1) is exactly the output size. A ``View`` is the visible
rectangle's left/top edge and its magnification; everything is float so motion is
sub-pixel smooth (integer-pixel crops jitter visibly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canvascast_cli.timeline import Motion


@dataclass(frozen=True)
class View:
    left: float  # left edge of the visible rectangle, prepared-image pixels
    top: float
    zoom: float  # output pixels per prepared-image pixel (>= 1)


def progress(frame: int, frames: int) -> float:
    """0 at a scene's first frame, 1 at its last (motion spans the whole scene)."""
    return frame / (frames - 1) if frames > 1 else 0.0


def ease(p: float, easing: str) -> float:
    if easing == "ease_in_out":
        return 0.5 - 0.5 * math.cos(math.pi * p)
    return p


def view_at(motion: Motion, p: float, img_w: int, img_h: int, out_w: int, out_h: int) -> View:
    """The view at progress ``p`` (0..1) of a scene for an ``img_w`` x ``img_h`` image.

    Zooms keep the focus point fixed on screen (a true zoom about a point, so the view
    never leaves the image and needs no clamping) and interpolate the zoom geometrically,
    so the apparent speed is constant. Pans travel the whole free margin at ``1 + amount``.
    """
    t = ease(p, motion.easing)
    fx, fy = motion.focus
    kind = motion.type
    if kind in ("zoom_in", "zoom_out"):
        z1 = 1.0 + motion.amount
        zoom = z1**t if kind == "zoom_in" else z1 ** (1.0 - t)
        # Base view (zoom 1): out_w x out_h, centred on the focus as far as the image allows.
        base_left = _clamp(fx * img_w - out_w / 2, 0.0, img_w - out_w)
        base_top = _clamp(fy * img_h - out_h / 2, 0.0, img_h - out_h)
        # The focus point F sits at screen offset S in the base view; keep it there.
        focus_x, focus_y = fx * img_w, fy * img_h
        screen_x, screen_y = focus_x - base_left, focus_y - base_top
        return View(focus_x - screen_x / zoom, focus_y - screen_y / zoom, zoom)
    if kind in ("pan_left", "pan_right", "pan_up", "pan_down"):
        zoom = 1.0 + motion.amount
        view_w, view_h = out_w / zoom, out_h / zoom
        free_x, free_y = img_w - view_w, img_h - view_h
        left = _clamp(fx * img_w - view_w / 2, 0.0, free_x)
        top = _clamp(fy * img_h - view_h / 2, 0.0, free_y)
        # "pan_right": the camera moves right, so the picture slides left.
        if kind == "pan_right":
            left = t * free_x
        elif kind == "pan_left":
            left = (1.0 - t) * free_x
        elif kind == "pan_down":
            top = t * free_y
        else:
            top = (1.0 - t) * free_y
        return View(left, top, zoom)
    # No motion: the cover-fitted view around the focus, on even pixels (nothing moves,
    # so nothing can jitter, and a plain copy of luma and 4:2:0 chroma is exact).
    left = 2 * math.floor(_clamp(fx * img_w - out_w / 2, 0.0, img_w - out_w) / 2)
    top = 2 * math.floor(_clamp(fy * img_h - out_h / 2, 0.0, img_h - out_h) / 2)
    return View(float(left), float(top), 1.0)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
