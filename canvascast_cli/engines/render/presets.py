"""x264's speed presets, fastest first: the one list (kept free of heavy imports so the
CLI can offer them as choices at start-up)."""

from __future__ import annotations

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
DEFAULT_PRESET = "veryfast"
DEFAULT_CRF = 20
