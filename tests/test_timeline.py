"""Timeline shape: schema, shorthands, frame arithmetic, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli.errors import InvalidInput
from canvascast_cli.timeline import Timeline, parse_timeline, timeline_schema
from tests.helpers import Cli


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


@pytest.mark.parametrize(("fps", "rate"), [
    (29.97, (30000, 1001)), (23.976, (24000, 1001)), (59.94, (60000, 1001)),
    ("30000/1001", (30000, 1001)), ("24000/1001", (24000, 1001)), (30, (30, 1)),
    (12.5, (25, 2)), ("25", (25, 1))])
def test_frame_rates_video_people_mean(fps: Any, rate: tuple[int, int]) -> None:
    t = Timeline.model_validate(tl(output={"width": 320, "height": 180, "fps": fps}))
    assert (t.output.rate.numerator, t.output.rate.denominator) == rate
    assert t.output.fps == rate[0] / rate[1]


def test_ntsc_scene_frames_follow_the_exact_rate() -> None:
    # 1001 s at 30000/1001 is exactly 30,000 frames (29.97 would give 29,999.97).
    t = Timeline.model_validate(tl(output={"width": 320, "height": 180, "fps": 29.97},
                                   scenes=[{"image": "a.jpg", "duration": 1001}]))
    assert t.total_frames == 30000


@pytest.mark.parametrize(("output", "expected"), [
    ({"width": "320"}, "output.width: Input should be a valid integer (got '320')"),
    ({"width": True}, "output.width: Input should be a valid integer (got true)"),
    ({"fps": "fast"}, "output.fps: 'fast' is not a frame rate"),
    ({"fps": "30/0"}, "output.fps: '30/0' is not a frame rate"),
])
def test_types_are_strict_and_clear(output: dict[str, Any], expected: str) -> None:
    found = problems(tl(output={"width": 320, "height": 180, **output}))
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(("data", "kind"), [([], "a list"), (None, "null"), ("x", "a string"),
                                            (3, "a number")])
def test_top_level_must_be_an_object(data: Any, kind: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_timeline(data)
    assert info.value.message == (
        f'timeline: a timeline is a JSON object ({{"scenes": [...]}}), not {kind}')


def test_semicolon_in_a_message_stays_one_problem() -> None:
    found = problems(tl(scenes=[{"image": "a.jpg", "duration": 2, "transition": "crossfade"}]))
    assert found == ["scenes[0].transition: the last scene has no next scene to crossfade "
                     "into; use 'cut'"]


def test_scene_and_duration_caps() -> None:
    from canvascast_cli.timeline import MAX_SCENES, MAX_VIDEO_SECONDS

    with pytest.raises(InvalidInput, match=f"scenes: {MAX_SCENES + 1:,} scenes; at most"):
        parse_timeline(tl(scenes=[{"image": "a.jpg", "duration": 1}] * (MAX_SCENES + 1)))
    long = [{"image": "a.jpg", "duration": 3600}] * int(MAX_VIDEO_SECONDS / 3600 + 1)
    found = problems(tl(scenes=long))
    assert any(p.startswith("scenes: the video lasts") for p in found), found


def test_bom_deep_nesting_and_folders(tmp_path: Path) -> None:
    from canvascast_cli.timeline import load_timeline_file

    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(tl()).encode())
    assert load_timeline_file(path).scenes[0].image == "a.jpg"
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidInput, match="JSON nested 100000 levels deep; at most 64"):
        load_timeline_file(deep)
    tricky = tmp_path / "tricky.json"  # brackets inside strings do not count
    tricky.write_text(json.dumps(tl(scenes=[{"image": "[" * 200 + ".jpg", "duration": 1}])))
    assert load_timeline_file(tricky).scenes[0].image.startswith("[[[")
    with pytest.raises(InvalidInput, match="is a folder"):
        load_timeline_file(tmp_path)


def test_cli_reports_bad_timeline_as_json(cli: Cli, isolated_env: Path) -> None:
    path = isolated_env / "t.json"
    path.write_text(json.dumps(tl(scenes=[])))
    result = cli("render", path, "-o", "out.mp4", "--json")
    assert result.exit_code == 2
    err = result.json()["error"]
    assert err["code"] == "INVALID_INPUT" and err["retryable"] is False
    assert "scene list is empty" in " ".join(err["details"])
    assert not (isolated_env / "out.mp4").exists()


def test_cli_bad_json_and_missing_file(cli: Cli, isolated_env: Path) -> None:
    (isolated_env / "t.json").write_text("{ nope")
    result = cli("render", "t.json")
    assert result.exit_code == 2 and "not valid JSON (line 1, column 3" in result.stderr
    missing = cli("render", "absent.json")
    assert missing.exit_code == 2 and "timeline file not found" in missing.stderr


def test_cli_schema(cli: Cli) -> None:
    result = cli("render", "--schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "Timeline"


# The JSON Schema (`render --schema`) and the model agree on what a timeline is.
SCHEMA_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "minimal": (tl(), True),
    "fps fraction": (tl(output={"width": 320, "height": 180, "fps": "30000/1001"}), True),
    "ntsc float": (tl(output={"width": 320, "height": 180, "fps": 29.97}), True),
    "shorthands": (tl(scenes=[{"image": "a.jpg", "duration": 2, "motion": "zoom_in",
                               "transition": "cut"}], narration="n.wav", music="m.ogg"), True),
    "words": (tl(captions={"words": [{"word": "a", "start": 0, "end": 0.5,
                                      "probability": 0.9}]}), True),
    "transcript": (tl(captions={"transcript": "w.json", "style": {"font": "x.ttf"}}), True),
    "font list": (tl(captions={"words": [], "style": {"font": ["DejaVu Sans", "f/jp.otf"]}}),
                  True),
    "empty font list": (tl(captions={"words": [], "style": {"font": []}}), False),
    "font list with a number": (tl(captions={"words": [], "style": {"font": ["A", 3]}}),
                                False),
    "empty font name": (tl(captions={"words": [], "style": {"font": [""]}}), False),
    "empty scenes": (tl(scenes=[]), False),
    "odd width": (tl(output={"width": 321, "height": 180}), False),
    "width as string": (tl(output={"width": "320", "height": 180}), False),
    "width as bool": (tl(output={"width": True, "height": 180}), False),
    "fps 0": (tl(output={"fps": 0}), False),
    "fps 121": (tl(output={"fps": 121}), False),
    "fps word": (tl(output={"fps": "fast"}), False),
    "fps null": (tl(output={"fps": None}), False),
    "unknown field": (tl(zoom=1), False),
    "negative duration": (tl(scenes=[{"image": "a.jpg", "duration": -1}]), False),
    "zero duration": (tl(scenes=[{"image": "a.jpg", "duration": 0}]), False),
    "too long scene": (tl(scenes=[{"image": "a.jpg", "duration": 4000}]), False),
    "bad colour": (tl(output={"background": "red"}), False),
    "bad motion": (tl(scenes=[{"image": "a.jpg", "duration": 2, "motion": "spin"}]), False),
    "focus out of range": (tl(scenes=[{"image": "a.jpg", "duration": 2,
                                       "motion": {"type": "zoom_in", "focus": [2, 0.5]}}]), False),
    "focus of three": (tl(scenes=[{"image": "a.jpg", "duration": 2,
                                   "motion": {"type": "zoom_in", "focus": [0.1, 0.2, 0.3]}}]),
                       False),
    "both caption sources": (tl(captions={"words": [], "transcript": "x.json"}), False),
    "no caption source": (tl(captions={}), False),
    "negative word time": (tl(captions={"words": [{"word": "a", "start": -1, "end": 1}]}), False),
    "probability 2": (tl(captions={"words": [{"word": "a", "start": 0, "end": 1,
                                              "probability": 2}]}), False),
    "empty image": (tl(scenes=[{"image": "", "duration": 2}]), False),
    "version 2": (tl(version=2), False),
    "loud narration": (tl(narration={"path": "n.wav", "volume": 9}), False),
}
# Rules across fields that JSON Schema cannot state (listed in the schema's $comment):
# the schema accepts these, canvascast refuses them.
CROSS_FIELD = {
    "last scene crossfades": tl(scenes=[{"image": "a.jpg", "duration": 2,
                                         "transition": "crossfade"}]),
    "word ends before it starts": tl(captions={"words": [{"word": "a", "start": 2, "end": 1}]}),
    "over 4K pixels": tl(output={"width": 4096, "height": 4096}),
}


@pytest.mark.parametrize("name", [*SCHEMA_CASES, *CROSS_FIELD])
def test_schema_and_cli_agree(name: str, cli: Cli, isolated_env: Path) -> None:
    import jsonschema

    data, valid = SCHEMA_CASES.get(name, (CROSS_FIELD.get(name), False))
    schema = json.loads(cli("render", "--schema").stdout)
    by_schema = jsonschema.Draft202012Validator(schema).is_valid(data)
    path = isolated_env / "t.json"
    path.write_text(json.dumps(data))
    # Shape only: the files named do not exist, so a valid shape fails later, on inputs.
    result = cli("--json", "render", path, "-o", "out.mp4")
    error = result.json()["error"]
    by_cli = not (error["code"] == "INVALID_INPUT" and error["message"].startswith(str(path)))
    assert by_cli == valid, error
    assert by_schema == (valid or name in CROSS_FIELD)
