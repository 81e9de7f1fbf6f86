"""canvascast: CanvasCast's heavy compute (render, transcribe, images) from a terminal."""

from __future__ import annotations

__version__ = "0.1.0"
