"""Timeline shape: schema, shorthands, frame arithmetic, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli.errors import InvalidInput
from canvascast_cli.timeline import Timeline, parse_timeline, timeline_schema


def tl(**kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"output": {"width": 320, "height": 180, "fps": 10},
                            "scenes": [{"image": "a.jpg", "duration": 2.0}]}
    data.update(kw)
    return data


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        parse_timeline(data)
    assert info.value.exit_code == 2
    return info.value.details


def test_shorthands_and_defaults() -> None:
    t = parse_timeline(tl(scenes=[{"image": "a.jpg", "duration": 2, "motion": "zoom_in",
                                   "transition": "crossfade"},
                                  {"image": "b.jpg", "duration": 2}],
                          narration="n.wav", music="m.ogg"))
    assert t.scenes[0].motion.type == "zoom_in" and t.scenes[0].motion.amount == 0.15
    assert t.scenes[0].transition.type == "crossfade" and t.scenes[0].transition.duration == 0.5
    assert t.narration is not None and t.narration.path == "n.wav"
    assert t.music is not None and t.music.ducking
    # 20 + 20 frames minus a 5-frame crossfade
    assert t.total_frames == 35 and t.duration == pytest.approx(3.5)


def test_schema_is_json_schema_of_the_model() -> None:
    schema = timeline_schema()
    assert schema["title"] == "Timeline"
    assert "scenes" in schema["required"]
    motion = schema["$defs"]["Motion"]["properties"]["type"]
    assert set(motion["enum"]) >= {"zoom_in", "zoom_out", "pan_left", "none"}
    json.dumps(schema)


def test_empty_scene_list() -> None:
    assert any("scene list is empty" in p for p in problems(tl(scenes=[])))


@pytest.mark.parametrize("duration", [0, -1, 1e9])
def test_bad_durations(duration: float) -> None:
    found = problems(tl(scenes=[{"image": "a.jpg", "duration": duration}]))
    assert any(p.startswith("scenes[0].duration: must be more than 0") for p in found), found


def test_crossfade_longer_than_scene() -> None:
    found = problems(tl(scenes=[
        {"image": "a.jpg", "duration": 1.0, "transition": {"type": "crossfade", "duration": 1.5}},
        {"image": "b.jpg", "duration": 3.0}]))
    assert any("scenes[0].transition.duration: a 1.5 s crossfade is longer than scene 0" in p
               for p in found), found


def test_incoming_and_outgoing_crossfades_longer_than_scene() -> None:
    found = problems(tl(scenes=[
        {"image": "a.jpg", "duration": 2, "transition": {"type": "crossfade", "duration": 0.8}},
        {"image": "b.jpg", "duration": 1.5, "transition": {"type": "crossfade", "duration": 0.8}},
        {"image": "c.jpg", "duration": 2}]))
    assert any(p.startswith("scenes[1]: its incoming and outgoing crossfades") for p in found)


def test_crossfade_out_of_last_scene() -> None:
    found = problems(tl(scenes=[{"image": "a.jpg", "duration": 2, "transition": "crossfade"}]))
    assert any("the last scene has no next scene" in p for p in found)


@pytest.mark.parametrize(("width", "height", "expected"), [
    (321, 180, "output.width: 321 is not allowed: use an even number of pixels from 32 to 4096"),
    (320, 8, "output.height: 8 is not allowed"),
    (8192, 180, "output.width: 8192 is not allowed"),
    (4096, 4096, "4096x4096 is too large: at most 8,294,400 pixels"),
])
def test_bad_dimensions(width: int, height: int, expected: str) -> None:
    found = problems(tl(output={"width": width, "height": height, "fps": 10}))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("fps", [0, 0.5, 121, 1000])
def test_fps_out_of_range(fps: float) -> None:
    found = problems(tl(output={"width": 320, "height": 180, "fps": fps}))
    assert any(p.startswith("output.fps:") and "use 1 to 120" in p for p in found), found


def test_words_end_before_start_and_unknown_fields_all_reported() -> None:
    found = problems(tl(
        captions={"words": [{"word": "ok", "start": 0.1, "end": 0.2},
                            {"word": "bad", "start": 1.0, "end": 0.5}]},
        scenes=[{"image": "a.jpg", "duration": 2, "zoom": 3}],
    ))
    assert any(p.startswith("captions.words[1]: end (0.5) is before start (1)") for p in found)
    assert any(p.startswith("scenes[0].zoom: unknown field") for p in found)


def test_captions_need_exactly_one_source() -> None:
    found = problems(tl(captions={"style": {}}))
    assert any("exactly one of 'words' or 'transcript'" in p for p in found)


def test_bad_colour_and_motion() -> None:
    found = problems(tl(
        scenes=[{"image": "a.jpg", "duration": 2, "motion": "spin"}],
        captions={"words": [], "style": {"highlight_color": "yellow"}}))
    assert any(p.startswith("scenes[0].motion.type:") for p in found), found
    assert any(p.startswith("captions.style.highlight_color:") for p in found), found


def test_fractional_fps_rate() -> None:
    t = Timeline.model_validate(tl(output={"width": 320, "height": 180, "fps": 29.97}))
    assert (t.output.rate.numerator, t.output.rate.denominator) == (2997, 100)


def test_cli_reports_bad_timeline_as_json(cli, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    path = isolated_env / "t.json"
    path.write_text(json.dumps(tl(scenes=[])))
    result = cli("render", path, "-o", "out.mp4", "--json")
    assert result.exit_code == 2
    err = result.json()["error"]
    assert err["code"] == "INVALID_INPUT" and err["retryable"] is False
    assert "scene list is empty" in " ".join(err["details"])
    assert not (isolated_env / "out.mp4").exists()


def test_cli_bad_json_and_missing_file(cli, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    (isolated_env / "t.json").write_text("{ nope")
    result = cli("render", "t.json")
    assert result.exit_code == 2 and "not valid JSON (line 1, column 3" in result.stderr
    missing = cli("render", "absent.json")
    assert missing.exit_code == 2 and "timeline file not found" in missing.stderr


def test_cli_schema(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("render", "--schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "Timeline"
