"""Caption glyphs: every character drawn by a font that has it, or exit 2 before any work.

The fonts are made here with fontTools (a Latin subset of the bundled DejaVu Sans Bold, a
tiny font of filled squares for a few CJK, Devanagari and emoji characters), and installed
fonts are switched off (no fontconfig, empty font folders): nothing depends on the fonts
or the tools of the machine.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canvascast_cli.assets import DEFAULT_FONT
from canvascast_cli.engines.render.captions import build_ass
from canvascast_cli.engines.render.fonts import discovery
from canvascast_cli.engines.render.fonts.clusters import clusters, needs_glyph
from canvascast_cli.engines.render.fonts.messages import missing_problems
from canvascast_cli.engines.render.fonts.plan import plan_fonts
from canvascast_cli.timeline import CaptionStyle, Word
from tests.helpers import Cli, decode_frames, small_output, textured_image, write_timeline

WORDS = ["Café", "日本", "مرحبا", "🚀", "नमस्ते"]
BOXED = "日本🚀नमस्ते"  # what the test font has (DejaVu Sans has Latin and Arabic)
# The names libass matches to one face: a TrueType font's full name.
LATIN, GLYPHS = "CCTest Latin Bold", "CCTest Glyphs Regular"


# ---------------------------------------------------------------------------------------
# Fonts made for the tests


def _name(font: Any, family: str, style: str, psname: str) -> None:
    table = font["name"]
    for name_id in (16, 17):
        table.removeNames(nameID=name_id)
    for name_id, text in ((1, family), (2, style), (4, f"{family} {style}"), (6, psname)):
        table.setName(text, name_id, 3, 1, 0x409)
        table.setName(text, name_id, 1, 0, 0)


def _latin_font(path: Path) -> Path:
    """The bundled font cut to Latin (ASCII, Latin-1, Latin Extended-A), renamed."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(str(DEFAULT_FONT))
    options = subset.Options()
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=range(0x20, 0x180))
    subsetter.subset(font)
    _name(font, "CCTest Latin", "Bold", "CCTestLatin-Bold")
    font.save(str(path))
    return path


def _box_font(path: Path, chars: str, *, family: str = "CCTest Glyphs",
              colour: bool = False) -> Path:
    """A font whose glyphs are filled squares (a missing glyph is a hollow box)."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def square() -> Any:
        pen = TTGlyphPen(None)
        pen.moveTo((100, -100))
        for point in ((100, 750), (900, 750), (900, -100)):
            pen.lineTo(point)
        pen.closePath()
        return pen.glyph()

    names = [".notdef", "space", *(f"u{ord(c):04X}" for c in chars)]
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({32: "space", **{ord(c): f"u{ord(c):04X}" for c in chars}})
    builder.setupGlyf({n: square() if n.startswith("u") else TTGlyphPen(None).glyph()
                       for n in names})
    builder.setupHorizontalMetrics({n: (1000 if n.startswith("u") else 300, 100)
                                    for n in names})
    builder.setupHorizontalHeader(ascent=900, descent=-200)
    builder.setupNameTable({"familyName": family, "styleName": "Regular",
                            "fullName": f"{family} Regular",
                            "psName": family.replace(" ", "") + "-Regular"})
    builder.setupOS2(sTypoAscender=900, sTypoDescender=-200, usWinAscent=900,
                     usWinDescent=200)
    if colour:
        builder.setupCOLR({names[2]: [(names[2], 0)]})
        builder.setupCPAL([[(1.0, 0.0, 0.0, 1.0)]])
    builder.setupPost()
    builder.save(str(path))
    return path


@pytest.fixture(scope="module")
def made_fonts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("made-fonts")
    _latin_font(folder / "latin.ttf")
    _box_font(folder / "glyphs.ttf", BOXED)
    _box_font(folder / "colour.ttf", "日", family="CCTest Colour", colour=True)
    return folder


@pytest.fixture(autouse=True)
def no_installed_fonts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This machine's fonts do not count: no fontconfig, empty font folders."""
    folder = tmp_path / "installed-fonts"
    folder.mkdir()
    monkeypatch.setattr(discovery, "fc_match_exe", lambda: None)
    monkeypatch.setattr(discovery, "font_dirs", lambda: [folder])
    return folder


@pytest.fixture
def fonts(media: Path, made_fonts: Path) -> Path:
    folder = media / "fonts"
    shutil.copytree(made_fonts, folder)
    return folder


def _timeline(media: Path, font: str | list[str], words: list[str] = WORDS,
              **style: Any) -> Path:
    textured_image(media / "grey.png", color=(90, 90, 90))
    return write_timeline(media, {
        "output": small_output(), "scenes": [{"image": "grey.png", "duration": 4.5}],
        "captions": {"words": [{"word": w, "start": 0.2 + 0.8 * i, "end": 0.8 + 0.8 * i}
                               for i, w in enumerate(words)],
                     "style": {"font": font, "size": 40, "max_words_per_line": 1, **style}},
    })


def _lit(frame: np.ndarray) -> np.ndarray:
    """Highlight-yellow pixels of the caption band."""
    band = frame[90:180].astype(int)
    return (band[..., 0] > 200) & (band[..., 1] > 160) & (band[..., 2] < 90)


def _lit_per_word(video: Path) -> list[int]:
    """Yellow pixels while each word of WORDS is spoken (alone on its line)."""
    frames = decode_frames(video)
    return [int(_lit(frames[round((0.5 + 0.8 * i) * 10)]).sum()) for i in range(len(WORDS))]


# ---------------------------------------------------------------------------------------
# Characters no font has: exit 2, nothing written; allowed: rendered, with a warning


def test_missing_glyphs_name_words_and_code_points(cli: Cli, media: Path, fonts: Path) -> None:
    path = _timeline(media, "fonts/latin.ttf")
    before = set(Path.cwd().iterdir())
    result = cli("render", path, "-o", "out.mp4")
    assert result.exit_code == 2, result.stderr
    err = result.stderr
    assert "captions.words[1] ('日本'): no font here has U+65E5 日, U+672C 本" in err
    assert "captions.words[3] ('🚀'): no font here has U+1F680 🚀" in err
    assert "captions.words[4] ('नमस्ते'): no font here has U+0928 न, U+092E म" in err
    assert "U+094D ◌्" in err  # a combining mark is shown on a dotted circle
    for hint in ("fonts-noto-cjk", "fonts-symbola", "fonts-noto-core",
                 "--allow-missing-glyphs", "captions.style.font"):
        assert hint in err
    # The Latin subset has "Café"; the bundled DejaVu Sans has the Arabic.
    assert "Café" not in err and "مرحبا" not in err
    assert set(Path.cwd().iterdir()) == before  # nothing written, no temporary left

    as_json = cli("render", path, "-o", "out.mp4", "--json")
    details = as_json.json()["error"]["details"]
    assert as_json.exit_code == 2 and any("U+1F680" in d for d in details)


def test_covering_font_file_draws_every_word(cli: Cli, media: Path, fonts: Path) -> None:
    covered = _timeline(media, ["fonts/latin.ttf", "fonts/glyphs.ttf"])
    result = cli("render", covered, "-o", "covered.mp4", "--crf", "10", "--json")
    assert result.exit_code == 0, result.stdout
    body = result.json()
    assert body["missing_glyphs"] == [] and body["warnings"] == []
    drawn = _lit_per_word(Path("covered.mp4"))

    # The same words without the covering font, allowed: empty boxes and a warning.
    boxed = _timeline(media, "fonts/latin.ttf")
    result = cli("render", boxed, "-o", "boxed.mp4", "--crf", "10",
                 "--allow-missing-glyphs")
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and "U+65E5 日 (1 word)" in result.stderr
    assert "show as empty boxes" in result.stderr
    boxes = _lit_per_word(Path("boxed.mp4"))

    assert all(n > 60 for n in drawn), drawn  # every word drawn
    # The test font's glyphs are filled squares; a missing glyph is a hollow box.
    for i in (1, 3, 4):
        assert drawn[i] > 2 * boxes[i], (WORDS[i], drawn[i], boxes[i])
    # Words the fonts have are drawn the same either way.
    assert abs(drawn[0] - boxes[0]) <= 0.1 * boxes[0] and boxes[2] > 60


def test_allowed_missing_glyphs_are_listed_in_json(cli: Cli, media: Path, fonts: Path) -> None:
    path = _timeline(media, "fonts/latin.ttf")
    result = cli("render", path, "-o", "allowed.mp4", "--allow-missing-glyphs", "--json")
    assert result.exit_code == 0, result.stdout
    body = result.json()
    missing = {g["codepoint"]: g for g in body["missing_glyphs"]}
    assert {"U+65E5", "U+672C", "U+1F680", "U+0928"} <= set(missing)
    assert missing["U+65E5"] == {"codepoint": "U+65E5", "char": "日", "words": 1}
    assert "U+00E9" not in missing and "U+0645" not in missing  # é, م: drawn
    assert any("empty boxes" in w for w in body["warnings"])
    assert Path("allowed.mp4").is_file()


# ---------------------------------------------------------------------------------------
# Right to left: libass shapes the Arabic, and the highlight follows the words


def test_arabic_highlight_moves_right_to_left(cli: Cli, media: Path) -> None:
    textured_image(media / "grey.png", color=(90, 90, 90))
    words = ["مرحبا", "بالعالم", "الجميل"]
    path = write_timeline(media, {
        "output": small_output(), "scenes": [{"image": "grey.png", "duration": 3.5}],
        "captions": {"words": [{"word": w, "start": 0.2 + i, "end": 0.9 + i}
                               for i, w in enumerate(words)], "style": {"size": 24}}})
    assert cli("render", path, "-o", "ar.mp4", "--crf", "10").exit_code == 0
    frames = decode_frames(Path("ar.mp4"))
    centres, extents = [], []
    for n in (5, 15, 25):  # while each word is spoken
        band = frames[n][90:180].astype(int)
        lit = _lit(frames[n])
        drawn = lit | ((band[..., 0] > 200) & (band[..., 1] > 200) & (band[..., 2] > 200))
        assert lit.sum() > 30
        centres.append(float(np.nonzero(lit)[1].mean()))
        columns = np.nonzero(drawn)[1]
        extents.append((int(columns.min()), int(columns.max())))
    # The first word is the rightmost; the line itself does not move as the highlight does.
    assert centres[0] > centres[1] + 20 > centres[2] + 40, centres
    assert max(e[0] for e in extents) - min(e[0] for e in extents) <= 3, extents
    assert max(e[1] for e in extents) - min(e[1] for e in extents) <= 3, extents


# ---------------------------------------------------------------------------------------
# The plan: clusters, routes, the ASS it writes


def test_clusters_and_characters_that_need_no_glyph() -> None:
    assert clusters("e\u0301x") == ["e\u0301", "x"]
    assert clusters("👍🏽!") == ["👍🏽", "!"]
    assert clusters("🇯🇵🇫🇷") == ["🇯🇵", "🇫🇷"]
    assert clusters("👨\u200d👩\u200d👧 a") == ["👨\u200d👩\u200d👧", " ", "a"]
    assert clusters("❤\ufe0f") == ["❤\ufe0f"]
    for char in " \t\n\u00a0\u200b\u200d\u2060\u200f\ufe0f\x00":
        assert not needs_glyph(char), repr(char)
    for char in "a日\u0301🚀\ue000":
        assert needs_glyph(char), repr(char)


def test_plan_routes_each_character_to_the_first_font_that_has_it(made_fonts: Path) -> None:
    plan, problems = plan_fonts(
        ["Café", "日本", "مرحبا", "e\u0301", "a日b", "\\{x}"],
        ["latin.ttf", "glyphs.ttf"], made_fonts)
    assert problems == [] and plan.missing == ()
    assert plan.primary_name == LATIN
    assert plan.runs("Café") == [(LATIN, "Café")]
    assert plan.runs("日本") == [(GLYPHS, "日本")]
    assert plan.runs("مرحبا") == [("DejaVu Sans Bold", "مرحبا")]  # the bundled font
    assert plan.runs("a日b") == [(LATIN, "a"), (GLYPHS, "日"), (LATIN, "b")]
    assert plan.runs(" 日") == [(None, " "), (GLYPHS, "日")]  # a space keeps the font
    assert [f.ass_name for f in plan.faces] == [LATIN, GLYPHS, "DejaVu Sans Bold"]

    words = [Word(word="a日", start=0.0, end=1.0), Word(word="{b}", start=1.0, end=2.0)]
    ass = build_ass(words, CaptionStyle(), width=320, height=180,
                    font_family=plan.primary_name, font_runs=plan.runs)
    assert f"Style: Caption,{LATIN}," in ass and ass.split("\n[Events]")[0].rstrip().endswith(",-1")
    assert f"a{{\\fn{GLYPHS}}}日 {{\\fn{LATIN}}}\\{{b\\}}" in ass


def test_a_family_name_is_kept_for_the_style_and_unknown_ones_warn(made_fonts: Path) -> None:
    plan, problems = plan_fonts(["Hi"], ["DejaVu Sans"], made_fonts)
    assert problems == [] and plan.warnings == () and plan.primary_name == "DejaVu Sans"

    plan, problems = plan_fonts(["Hi"], ["No Such Family", "latin.ttf"], made_fonts)
    assert problems == [] and plan.primary_name == LATIN
    assert plan.warnings == ("captions.style.font[0]: no font family 'No Such Family' is "
                             "installed here; its place is taken by the next font (install "
                             "it, or name its file)",)


def test_font_entry_problems(made_fonts: Path) -> None:
    (made_fonts / "text.ttf").write_text("not a font")
    _plan, problems = plan_fonts(
        ["日"], ["colour.ttf", "gone.otf", "text.ttf", "A, B", "fonts"], made_fonts)
    assert problems[0].startswith("captions.style.font[0]: ")
    assert "is a colour or bitmap font" in problems[0] and "fonts-symbola" in problems[0]
    assert problems[1] == f"captions.style.font[1]: font file not found: {made_fonts / 'gone.otf'}"
    assert problems[2].startswith(f"captions.style.font[2]: {made_fonts / 'text.ttf'} is not a "
                                  "font file (")
    assert problems[3].startswith("captions.style.font[3]: 'A, B' cannot contain commas")
    assert len(problems) == 4  # "fonts" is a family name (not installed: a warning)


def test_many_words_are_summed_up(made_fonts: Path) -> None:
    texts = [f"日{i}" for i in range(30)] + ["ok"]
    plan, _ = plan_fonts(texts, ["latin.ttf"], made_fonts)
    problems = missing_problems(plan, texts, "captions.words")
    assert problems[0] == "captions.words[0] ('日0'): no font here has U+65E5 日"
    assert len(problems) == 10 + 2
    assert problems[10] == ("captions.words: 20 more words have characters no font here "
                            "has (1 character in all)")
    assert plan.missing[0].words == tuple(range(30))


# ---------------------------------------------------------------------------------------
# Installed fonts: font folders (cached) without fontconfig, or fontconfig's list


def test_installed_fonts_from_folders_are_cached(made_fonts: Path, no_installed_fonts: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(made_fonts / "glyphs.ttf", no_installed_fonts / "glyphs.ttf")
    shutil.copy(made_fonts / "colour.ttf", no_installed_fonts / "colour.ttf")
    plan, _ = plan_fonts(["日本"], ["DejaVu Sans"], made_fonts)
    assert plan.missing == () and plan.runs("日本") == [(GLYPHS, "日本")]
    assert plan.faces[1].path == no_installed_fonts / "glyphs.ttf"
    assert plan.installed.source == "font folders"

    # A second process reads the cache, not the fonts ...
    def unread(path: Path, *, all_faces: bool) -> list[dict[str, Any]]:
        raise AssertionError(f"read {path} again")

    monkeypatch.setattr(discovery, "read_records", unread)
    again, _ = plan_fonts(["日本"], ["DejaVu Sans"], made_fonts)
    assert again.runs("日本") == [(GLYPHS, "日本")]
    # ... until a font changes.
    shutil.copy(made_fonts / "latin.ttf", no_installed_fonts / "glyphs.ttf")
    with pytest.raises(AssertionError, match=r"read .*glyphs\.ttf again"):
        plan_fonts(["日本"], ["DejaVu Sans"], made_fonts)


def test_installed_fonts_from_fontconfig(made_fonts: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """fc-match -a's list, in its order; fonts libass cannot draw are skipped."""
    box = made_fonts / "glyphs.ttf"
    lines = [
        f"{made_fonts / 'colour.ttf'}\t0\tCCTest Colour\tCCTest Colour\tCCTestColour\t"
        "TrueType\t0\tFalse\tTrue\t20 65e5",
        "/fonts/x.pcf.gz\t0\tFixed\tFixed\tFixed\tPCF\t0\tFalse\tFalse\t20-7e 65e5",
        f"{box}\t0\tCCTest Glyphs,CCTest Other\t{GLYPHS}\tCCTestGlyphs-Regular\tTrueType\t"
        "0\tTrue\tFalse\t20 65e5 672c",
    ]
    listing = tmp_path / "listing.txt"
    listing.write_text("".join(line + "\n" for line in lines))
    script = tmp_path / "fc-match"
    script.write_text("#!/bin/sh\n"  # shell builtins only: no PATH needed
                      f"while IFS= read -r line; do printf '%s\\n' \"$line\"; done < '{listing}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(discovery, "fc_match_exe", lambda: str(script))

    plan, problems = plan_fonts(["日本"], ["DejaVu Sans"], made_fonts)
    assert plan.installed.source == "fontconfig" and problems == []
    assert plan.runs("日本") == [(GLYPHS, "日本")] and plan.faces[1].path == box
    named, _ = plan_fonts(["日"], ["ccTEST other"], made_fonts)
    assert named.primary_name == "ccTEST other" and named.faces[0].path == box


# ---------------------------------------------------------------------------------------
# Remote renders upload every font file of the list


def test_remote_refs_cover_a_font_list() -> None:
    from canvascast_cli.protocol import rewrite_refs, timeline_refs

    timeline = {"scenes": [], "captions": {"words": [], "style": {
        "font": ["DejaVu Sans", "fonts/a.ttf", "b.otf"]}}}
    refs = timeline_refs(timeline)
    assert refs == {"captions.style.font[1]": "fonts/a.ttf", "captions.style.font[2]": "b.otf"}
    out = rewrite_refs(timeline, {"fonts/a.ttf": "blob:1.ttf", "b.otf": "blob:2.otf"})
    assert out["captions"]["style"]["font"] == ["DejaVu Sans", "blob:1.ttf", "blob:2.otf"]
    assert timeline["captions"]["style"]["font"][1] == "fonts/a.ttf"  # type: ignore[index]


def test_remote_options_carry_the_flag() -> None:
    from canvascast_cli.errors import InvalidInput
    from canvascast_cli.protocol import RenderPayload
    from canvascast_cli.server.work import check_inputs

    timeline = {"scenes": [{"image": "https://example.com/a.jpg", "duration": 1}]}
    payload = check_inputs("render_video", {"timeline": timeline,
                                            "options": {"allow_missing_glyphs": True}}, None)
    assert isinstance(payload, RenderPayload) and payload.options.allow_missing_glyphs
    with pytest.raises(InvalidInput, match=r"options\.allow_missing_glyphs: Input should be "
                       "a valid boolean"):
        check_inputs("render_video", {"timeline": timeline,
                                      "options": {"allow_missing_glyphs": "yes"}}, None)
