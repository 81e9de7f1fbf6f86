"""What a render does before its first frame, and what it leaves for later: stills are
decoded scene by scene during the render, not all up front, and only those the frames in
flight need are held; the bundled caption font is described without fontTools."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import weakref
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from canvascast_cli.engines.render import compose
from canvascast_cli.engines.render.engine import RenderOptions, render
from canvascast_cli.engines.render.fonts import faces
from canvascast_cli.engines.render.frames import PreparedImage
from canvascast_cli.engines.render.inputs import (
    image_problem,
    quick_image_problem,
    resolve_timeline,
)
from canvascast_cli.timeline import parse_timeline
from tests.helpers import Cli, small_output, write_timeline

SCENES = 200


def _many_scenes(folder: Path) -> dict[str, object]:
    """A timeline of ``SCENES`` short scenes, each its own tiny still (JPEG and PNG in
    turn), joined by one-frame crossfades."""
    rng = np.random.default_rng(0)
    scenes = []
    for i in range(SCENES):
        name = f"still{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8)).save(folder / name)
        scenes.append({"image": name, "duration": 0.3, "motion": "zoom_in",
                       "transition": {"type": "crossfade", "duration": 0.1}})
    del scenes[-1]["transition"]
    return {"output": {"width": 64, "height": 36, "fps": 10}, "scenes": scenes}


def test_the_input_checks_decode_no_pixels(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    timeline = parse_timeline(_many_scenes(tmp_path))
    loads: list[str] = []
    original = ImageFile.ImageFile.load

    def counting(self):  # type: ignore[no-untyped-def]
        loads.append(str(self.filename))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    resolved = resolve_timeline(timeline, tmp_path)
    assert len(resolved.images) == SCENES
    assert loads == []  # headers read, pixels left to the render


def test_the_render_decodes_each_still_once_and_holds_few(tmp_path: Path,
                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    timeline = parse_timeline(_many_scenes(tmp_path))
    resolved = resolve_timeline(timeline, tmp_path)
    decoded: Counter[Path] = Counter()
    live, most_live = [0], [0]  # prepared stills not yet freed; the most at once
    lock = threading.RLock()
    load_rgb, prepare_image = compose.load_rgb, compose.prepare_image

    def counting_load(path: Path, **kw):  # type: ignore[no-untyped-def]
        with lock:
            decoded[path] += 1
        return load_rgb(path, **kw)

    def freed() -> None:
        with lock:
            live[0] -= 1

    def tracked_prepare(rgb, width, height) -> PreparedImage:  # type: ignore[no-untyped-def]
        image = prepare_image(rgb, width, height)
        with lock:
            live[0] += 1
            most_live[0] = max(most_live[0], live[0])
        weakref.finalize(image, freed)
        return image

    monkeypatch.setattr(compose, "load_rgb", counting_load)
    monkeypatch.setattr(compose, "prepare_image", tracked_prepare)
    result = render(resolved, tmp_path / "many.mp4", options=RenderOptions(preset="ultrafast"))
    assert result.frames == timeline.total_frames
    assert sorted(decoded) == sorted(resolved.images)
    assert set(decoded.values()) == {1}  # each still decoded once
    # The two scenes of a crossfade and the next one, prepared ahead: never all 200.
    assert 2 <= most_live[0] <= 3
    assert result.first_frame_seconds is not None
    assert 0 < result.first_frame_seconds <= result.render_seconds


def _png_with_bad_pixels(path: Path) -> Path:
    """A PNG whose header and end are whole but whose pixel data is not."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT") + 104
    data[at: at + 50] = bytes(50)
    path.write_bytes(bytes(data))
    return path


def test_a_still_that_fails_to_decode_in_the_render(cli: Cli, media: Path) -> None:
    bad = _png_with_bad_pixels(media / "bad.png")
    assert quick_image_problem(bad) is None  # it passes the checks up front
    path = write_timeline(media, {"output": small_output(), "scenes": [
        {"image": "img0.jpg", "duration": 1}, {"image": "bad.png", "duration": 1},
        {"image": "bad.png", "duration": 1}]}, name="bad.json")
    before = {p.name for p in Path.cwd().iterdir()}
    result = cli("render", path, "-o", "bad.mp4")
    assert result.exit_code == 2, result.stderr
    for scene in (1, 2):
        assert f"scenes[{scene}].image: {bad} is corrupt or truncated" in result.stderr
    assert {p.name for p in Path.cwd().iterdir()} == before  # nothing written


@pytest.mark.parametrize("cut", ["end", "middle"])
def test_the_quick_check_finds_a_cut_jpeg_as_the_full_decode_does(media: Path,
                                                                   cut: str) -> None:
    data = (media / "img0.jpg").read_bytes()
    half = data[: len(data) // 2]
    # Cut at the end: no end marker, so it is decoded in full (and found cut). Cut in the
    # middle, end marker kept: Pillow decodes it (grey where data is missing) either way.
    (media / "cut.jpg").write_bytes(half if cut == "end" else half + data[-2:])
    assert quick_image_problem(media / "cut.jpg") == image_problem(media / "cut.jpg")
    if cut == "end":
        assert str(image_problem(media / "cut.jpg")).startswith("is corrupt or truncated")


# ---------------------------------------------------------------------------------------
# The bundled font, described without fontTools


def test_the_shipped_bundled_face_is_the_bundled_font() -> None:
    shipped = json.loads(faces.BUNDLED_RECORD.read_text(encoding="utf-8"))
    read = faces.read_records(faces.DEFAULT_FONT, all_faces=False)[0]
    del read["path"]
    assert shipped["face"] == read, (
        "the bundled font changed: python -c 'from canvascast_cli.engines.render.fonts."
        "faces import write_bundled_record; write_bundled_record()'")
    assert faces._bundled_record() is not None  # and it is used


def test_caption_fonts_are_planned_without_fonttools(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from canvascast_cli.engines.render.fonts.plan import plan_fonts\n"
            "plan, problems = plan_fonts(['Hello', 'world!'], (), Path('.'))\n"
            "assert not plan.missing and not problems\n"
            "print(plan.primary_name, 'fontTools' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    assert done.stdout.split("\n")[0] == "DejaVu Sans Bold False"


def test_a_changed_bundled_font_is_read_with_fonttools(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "bundled_face.json"
    shipped = json.loads(faces.BUNDLED_RECORD.read_text(encoding="utf-8"))
    stale.write_text(json.dumps({**shipped, "sha256": "0" * 64}))
    monkeypatch.setattr(faces, "BUNDLED_RECORD", stale)
    faces._bundled_record.cache_clear()
    try:
        assert faces._bundled_record() is None
        face = faces.bundled_face()
    finally:
        faces._bundled_record.cache_clear()
    assert (face.fullname, face.ass_name, face.origin) == (
        "DejaVu Sans Bold", "DejaVu Sans Bold", "bundled")
    assert face.covers("é") and not face.covers("\u4e2d")
