"""Frames made in Python: stills prepared once as Y'CbCr planes, warped per frame with
float precision, crossfaded, written straight into the buffer piped to ffmpeg.

Why NV12 (4:2:0, chroma interleaved) rather than RGB: the encoder wants 4:2:0 anyway, so
converting each still once (BT.709, limited range) halves the bytes warped and piped per
frame and spares ffmpeg a colour conversion per frame; NV12 is what x264 works in, and
lets both chroma channels be resampled in one call. x264 is the bottleneck on this
machine: every CPU-millisecond spent here is one it does not get.

Why ``cv2.resize`` with a chosen phase instead of ``cv2.warpAffine``: a Ken Burns view is an
axis-aligned scale plus translation. ``resize`` with an exact ``fx`` implements that scale
with separable, vectorised bilinear filtering about 4x faster than ``warpAffine``, but only
from an integer crop origin. The translation's fractional part is matched by choosing the
crop origin ``c`` and an output offset ``k`` such that ``c + (k + 0.5)/z - 0.5`` lands within
1/32 pixel of the wanted origin (see ``_phase``). When no such pair exists (a zoom very
close to 1, or zooms like 1.25 whose reciprocal has a small denominator) the plane falls
back to ``warpAffine``, itself exact to 1/32 pixel. Either way the motion is sub-pixel
smooth.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from canvascast_cli.engines.render.motion import View

# BT.709 RGB -> Y'CbCr, limited ("TV") range, as a 3x4 affine matrix for cv2.transform.
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
_RGB_TO_YUV709 = np.array(
    [
        [219 / 255 * _KR, 219 / 255 * _KG, 219 / 255 * _KB, 16.0],
        [224 / 255 * -_KR / (2 * (1 - _KB)), 224 / 255 * -_KG / (2 * (1 - _KB)),
         224 / 255 * 0.5, 128.0],
        [224 / 255 * 0.5, 224 / 255 * -_KG / (2 * (1 - _KR)),
         224 / 255 * -_KB / (2 * (1 - _KR)), 128.0],
    ],
    dtype=np.float32,
)

# Largest output error (pixels) accepted from the fast resize path before falling back to
# warpAffine; warpAffine's own fixed-point grid is 1/32 px.
_PHASE_TOLERANCE = 1 / 32
_CHROMA_TOLERANCE = 1 / 16
# Output offsets tried; a zoom close to 1 needs many to reach every fractional phase.
_PHASE_CANDIDATES = 256
# Replicated border above and left of each prepared plane (even: chroma gets half).
_PAD = 256
_CHROMA_X = np.array([0.25, 0.5, 0.25], dtype=np.float32)
_CHROMA_Y = np.array([0.5, 0.5], dtype=np.float32)


def rgb_to_yuv709(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx3 uint8 Y'CbCr (BT.709, limited range), rounded."""
    return cv2.transform(rgb, _RGB_TO_YUV709)


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def load_rgb(path: Path, *, min_size: tuple[int, int] | None = None,
             background: str = "#000000") -> np.ndarray:
    """Decode an image file to HxWx3 RGB, EXIF orientation applied, alpha over background.

    ``min_size``: lets JPEG decode at a reduced scale (DCT scaling) when the file is much
    larger than needed — several times faster on camera photos.
    """
    with Image.open(path) as opened:
        if min_size is not None and opened.format == "JPEG":
            opened.draft("RGB", min_size)
        img: Image.Image = ImageOps.exif_transpose(opened)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            base = Image.new("RGBA", rgba.size, (*hex_to_rgb(background), 255))
            img = Image.alpha_composite(base, rgba)
        rgb = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class PreparedImage:
    """A still as Y and interleaved CbCr planes, scaled so its cover-fitted view is exactly
    the output size.

    The planes carry ``pad`` replicated pixels above and left of the picture (``pad/2``
    for chroma) so the resize path can start its crop before a view that touches the
    top or left edge (see ``_phase``). ``width``/``height`` are the picture's own size.
    """

    y: np.ndarray  # pad + H  x  pad + W
    uv: np.ndarray  # (pad + H)/2 x (pad + W)/2 x 2, sited at luma (2k, 2l + 0.5)
    width: int
    height: int
    pad: int


def prepare_image(rgb: np.ndarray, out_w: int, out_h: int) -> PreparedImage:
    h0, w0 = rgb.shape[:2]
    scale = max(out_w / w0, out_h / h0)  # cover: the image fills the frame
    # Even sides so the half-resolution chroma planes line up exactly with the luma.
    w = max(out_w, _even(w0 * scale))
    h = max(out_h, _even(h0 * scale))
    if (w, h) != (w0, h0):
        shrinking = w < w0
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrinking
                         else cv2.INTER_CUBIC)
    yuv = rgb_to_yuv709(rgb)
    # 4:2:0 with H.264's default ("left") siting: chroma sample (k, l) sits at luma
    # (2k, 2l + 0.5). Filter [1 2 1]/4 across, [1 1]/2 down, then keep every other sample.
    uv = cv2.sepFilter2D(yuv[:, :, 1:], -1, _CHROMA_X, _CHROMA_Y, anchor=(1, 0),
                         borderType=cv2.BORDER_REPLICATE)[::2, ::2]
    pad, half = _PAD, _PAD // 2
    return PreparedImage(
        y=cv2.copyMakeBorder(np.ascontiguousarray(yuv[:, :, 0]), pad, 0, pad, 0,
                             cv2.BORDER_REPLICATE),
        uv=cv2.copyMakeBorder(np.ascontiguousarray(uv), half, 0, half, 0,
                              cv2.BORDER_REPLICATE),
        width=w, height=h, pad=pad)


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


class FrameBuffer:
    """One NV12 frame in a single contiguous array, with plane views into it."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        luma = width * height
        self.data = np.empty(luma * 3 // 2, dtype=np.uint8)
        self.y = self.data[:luma].reshape(height, width)
        self.uv = self.data[luma:].reshape(height // 2, width // 2, 2)


class Scratch:
    """A reusable work buffer: resize writes into a view of it instead of a fresh array
    (a fresh multi-megabyte array costs page faults on every frame)."""

    def __init__(self) -> None:
        self._flat = np.empty(0, dtype=np.uint8)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        size = math.prod(shape)
        if self._flat.size < size:
            self._flat = np.empty(size, dtype=np.uint8)
        return self._flat[:size].reshape(shape)


_SCRATCH = threading.local()


def _scratch() -> Scratch:
    scratch = getattr(_SCRATCH, "value", None)
    if scratch is None:
        scratch = _SCRATCH.value = Scratch()
    return scratch


def render_view(image: PreparedImage, view: View, out: FrameBuffer) -> None:
    """Sample ``image`` through ``view`` into ``out`` (bilinear, float-precision origin)."""
    z = view.zoom
    pad = image.pad
    left, top = view.left + pad, view.top + pad  # in padded-plane coordinates
    if z == 1.0 and left % 2 == 0 and top % 2 == 0:
        # Whole, even offsets: luma and chroma are plain copies.
        x, y, w, h = int(left), int(top), out.width, out.height
        out.y[:] = image.y[y: y + h, x: x + w]
        out.uv[:] = image.uv[y // 2: (y + h) // 2, x // 2: (x + w) // 2]
        return
    # Output pixel centre (u, v) samples source index (ox + u/z, oy + v/z).
    ox = left + 0.5 / z - 0.5
    oy = top + 0.5 / z - 0.5
    resample(image.y, z, ox, oy, out.y, tolerance=_PHASE_TOLERANCE)
    # Chroma, output and prepared alike, is sited at luma (2i, 2j + 0.5): output chroma
    # (i, j) samples source luma (left + (2i + 0.5)/z - 0.5, top + (2j + 1)/z - 0.5),
    # which is prepared chroma (that x / 2, (that y - 0.5) / 2).
    cox = left / 2 + 0.25 / z - 0.25
    coy = top / 2 + 0.5 / z - 0.5
    # Chroma is smooth and half resolution: an error of 1/16 chroma pixel (1/8 luma pixel)
    # is invisible, and lets nearly every frame take the fast path.
    resample(image.uv, z, cox, coy, out.uv, tolerance=_CHROMA_TOLERANCE)


def resample(src: np.ndarray, z: float, ox: float, oy: float, dst: np.ndarray, *,
             tolerance: float = _PHASE_TOLERANCE) -> None:
    """``dst[v, u] = bilinear(src, ox + u/z, oy + v/z)``, edges replicated (any channels)."""
    out_h, out_w = dst.shape[:2]
    src_h, src_w = src.shape[:2]
    px = _phase(ox, z, out_w, src_w, tolerance)
    py = _phase(oy, z, out_h, src_h, tolerance)
    if px is not None and py is not None:
        (cx, kx, nx), (cy, ky, ny) = px, py
        crop = src[cy: cy + ny, cx: cx + nx]
        # resize's own output size for fx=fy=z (it rounds); it must match dst exactly.
        scaled = _scratch().take((round(ny * z), round(nx * z), *src.shape[2:]))
        scaled = cv2.resize(crop, None, dst=scaled, fx=z, fy=z,
                            interpolation=cv2.INTER_LINEAR)
        dst[:] = scaled[ky: ky + out_h, kx: kx + out_w]
        return
    matrix = np.array([[1 / z, 0.0, ox], [0.0, 1 / z, oy]])
    cv2.warpAffine(src, matrix, (out_w, out_h), dst=dst,
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                   borderMode=cv2.BORDER_REPLICATE)


def _phase(origin: float, z: float, out_n: int, src_n: int, tolerance: float
           ) -> tuple[int, int, int] | None:
    """Crop start ``c``, output offset ``k`` and crop length for the resize path, or None.

    ``cv2.resize(crop, fx=z)`` samples crop index ``(d + 0.5)/z - 0.5`` for output ``d``; we
    read outputs ``d = u + k``, which sample ``c + (u + k + 0.5)/z - 0.5``. That equals the
    wanted ``origin + u/z`` when ``c = origin + 0.5 - (k + 0.5)/z``: take the smallest ``k``
    (least extra resizing) for which that is within ``tolerance`` output pixels of a whole
    number. A plain loop: it usually stops within a few candidates.
    """
    inverse = 1.0 / z
    start = origin + 0.5 - 0.5 * inverse
    for k in range(_PHASE_CANDIDATES):
        exact = start - k * inverse
        c = math.floor(exact + 0.5)
        if c < 0:
            return None  # further candidates only move left
        if abs(exact - c) * z <= tolerance:
            break
    else:
        return None
    # The crop must hold the last source index read (origin + (out_n - 1)/z) and its
    # bilinear neighbour, and resize to at least k + out_n samples (resize rounds n*z).
    needed = max(math.floor(origin + (out_n - 1) * inverse) + 2 - c,
                 math.ceil((k + out_n + 0.5) * inverse))
    # Past the image's edge, resize replicates the crop's last sample: exactly what
    # BORDER_REPLICATE does for the whole image, so a crop cut at the edge is still exact.
    n = min(needed, src_n - c)
    if n < 2 or round(n * z) < k + out_n:
        return None
    return c, k, n
