"""The command line's own contract: fast start, help, version, docs that stay true."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli.cli.context import Services
from canvascast_cli.timeline import timeline_schema
from tests.helpers import REPO, run_subprocess

HEAVY = ("numpy", "cv2", "av", "PIL", "torch", "modal", "whisper", "faster_whisper",
         "diffusers", "imageio_ffmpeg", "pydantic", "httpx", "tenacity", "fastapi", "uvicorn",
         "sqlite3")


def test_cli_start_imports_nothing_heavy() -> None:
    code = ("import sys, canvascast_cli.cli.app; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_help_version_and_exit_codes_documented() -> None:
    result = run_subprocess("--help")
    assert result.exit_code == 0
    assert "Exit codes: 0 ok, 1 job failed, 2 usage or invalid input" in result.stdout
    assert "CANVASCAST_JSON" in result.stdout
    render_help = run_subprocess("render", "--help")
    assert "Exit codes:" in render_help.stdout and "--overwrite" in render_help.stdout
    version = run_subprocess("--version")
    assert version.exit_code == 0 and version.stdout.startswith("canvascast ")


def test_usage_error_exit_code_2() -> None:
    result = run_subprocess("render", "x.json", "--crf", "99")
    assert result.exit_code == 2


def test_docs_schema_matches_the_model() -> None:
    text = (REPO / "docs" / "timeline.md").read_text()
    block = re.search(r"<!-- schema:start -->\n```json\n(.*?)\n```", text, re.S)
    assert block, "docs/timeline.md lost its schema block"
    assert json.loads(block.group(1)) == timeline_schema(), (
        "docs/timeline.md's schema is stale: regenerate it from `canvascast render --schema`")


def test_demo_timeline_is_valid() -> None:
    from canvascast_cli.engines.render.inputs import resolve_timeline
    from canvascast_cli.timeline import load_timeline_file

    path = REPO / "examples" / "demo" / "timeline.json"
    timeline = load_timeline_file(path)
    resolved = resolve_timeline(timeline, path.parent)
    assert timeline.total_frames == 930 and len(resolved.words) > 50


# --- every way a run ends: one document under --json, a documented exit code ----------


@pytest.mark.parametrize("args", [["render", "x.json", "--crf", "99"],
                                  ["render", "x.json", "--preset", "bogus"],
                                  ["transcribe", "a.wav", "--offset", "-1"],
                                  ["no-such-command"]])
def test_usage_errors_under_json_are_one_document(args: list[str]) -> None:
    result = run_subprocess("--json", *args)
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "INVALID_INPUT" and error["retryable"] is False
    assert "Value error" not in error["message"]
    plain = run_subprocess(*args)
    assert plain.exit_code == 2 and plain.stdout == "" and "Usage:" in plain.stderr


def test_unexpected_failure_is_one_line_traceback_only_verbose(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom\nsecond line")

    services = Services(image_provider=broken)
    result = cli("--json", "images", "a cat", "-o", tmp_path / "out", services=services)
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "JOB_FAILED" and error["message"].startswith(
        "internal error: RuntimeError: boom (run with --verbose")
    assert "Traceback" not in result.stderr
    verbose = cli("--verbose", "images", "a cat", "-o", tmp_path / "out", services=services)
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr
    assert "error: internal error: RuntimeError: boom" in verbose.stderr


UNWRITABLE = [("/proc", "No such file or directory"), ("/sys", "Permission denied")]


@pytest.mark.parametrize(("folder", "reason"), UNWRITABLE)
def test_unwritable_outputs_are_refused_before_any_work(cli, folder: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    # The inputs do not exist either: the destination is checked first, so the job never
    # starts (for transcribe: no model is loaded, no audio decoded).
    cases = [("render", "missing.json", "-o", f"{folder}/x.mp4"),
             ("transcribe", "missing.wav", "-o", f"{folder}/x.json"),
             ("images", "a cat", "--provider", "placeholder", "-o", f"{folder}/cc-images")]
    for args in cases:
        if args[0] == "render":
            (Path.cwd() / "missing.json").write_text(json.dumps(
                {"output": {"width": 320, "height": 180, "fps": 10},
                 "scenes": [{"image": "nope.jpg", "duration": 1}]}))
        result = cli("--json", *args)
        assert result.exit_code == 2, (args, result.stdout)
        error = json.loads(result.stdout)["error"]
        assert error["message"].startswith("-o: cannot write in"), error
        assert reason in error["message"]


def test_read_only_and_full_filesystems(cli, tmp_path: Path, media: Path) -> None:  # type: ignore[no-untyped-def]
    """Real mounts where this machine allows them (root in a sandbox): a read-only
    filesystem is refused up front; a full one fails the job (exit 1), leaving nothing."""
    from tests.helpers import write_timeline

    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    mounted = []
    for folder, options in ((ro, "ro,size=1m"), (full, "size=16k")):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            for m in mounted:
                subprocess.run(["umount", str(m)])
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(folder)
    try:
        timeline = write_timeline(media, {"output": {"width": 320, "height": 180, "fps": 10},
                                          "scenes": [{"image": "img0.jpg", "duration": 3}],
                                          "narration": "narration.wav"})
        result = cli("--json", "render", timeline, "-o", ro / "x.mp4")
        assert result.exit_code == 2
        assert "Read-only file system" in json.loads(result.stdout)["error"]["message"]
        result = cli("--json", "render", timeline, "-o", full / "x.mp4")
        assert result.exit_code == 1, result.stdout
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "FFMPEG_FAILED" and "No space left" in str(error)
        assert list(full.iterdir()) == []
    finally:
        for m in mounted:
            subprocess.run(["umount", str(m)])


@pytest.mark.parametrize(("output", "message"), [
    ("x.mkv", "-o: x.mkv must end in .mp4 or .m4v"),
    ("-", "-o: '-' (stdout) is not supported"),
])
def test_render_outputs_it_cannot_write_properly(cli, output: str, message: str) -> None:  # type: ignore[no-untyped-def]
    (Path.cwd() / "t.json").write_text(json.dumps(
        {"output": {"width": 320, "height": 180, "fps": 10},
         "scenes": [{"image": "nope.jpg", "duration": 1}]}))
    result = cli("--json", "render", "t.json", "-o", output)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["message"].startswith(message)
    assert not Path(output).exists() or (output == "-" and not Path("-").exists())


def test_render_refuses_to_overwrite_its_own_input(cli, media: Path) -> None:  # type: ignore[no-untyped-def]
    import imageio_ffmpeg

    from tests.helpers import write_timeline

    voice = media / "voice.mp4"  # narration in an MP4 file: a name -o could be given
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i",
                    str(media / "narration.wav"), "-c:a", "aac", str(voice)], check=True)
    before = voice.read_bytes()
    timeline = write_timeline(media, {"output": {"width": 320, "height": 180, "fps": 10},
                                      "scenes": [{"image": "img0.jpg", "duration": 2}],
                                      "narration": "voice.mp4"})
    result = cli("--json", "render", timeline, "-o", voice, "--overwrite")
    assert result.exit_code == 2
    assert "is one of the render's own inputs" in json.loads(result.stdout)["error"]["message"]
    assert voice.read_bytes() == before


def test_images_seeds_always_fit(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from canvascast_cli.engines.images.job import MAX_SEED, plan_images
    from canvascast_cli.engines.images.style import StyleConfig

    result = cli("--json", "images", "a", "b", "--provider", "placeholder",
                 "--seed", str(MAX_SEED), "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "--seed: 2147483647 + 1 (one seed per image) passes" in result.stdout
    for _ in range(200):  # random base seeds leave room for every image's seed
        job = plan_images(["p"] * 50, StyleConfig(), output_dir=tmp_path / "o",
                          provider="placeholder", environ={})
        assert job.seed >= 0 and job.seed + 49 <= MAX_SEED


def test_transcribe_output_format_and_stdout(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("--json", "transcribe", "missing.wav", "-o", tmp_path / "out.docx")
    assert result.exit_code == 2
    assert "cannot tell the format from 'out.docx'" in result.json()["error"]["message"]
    assert not (tmp_path / "out.docx").exists()
    dash = cli("--json", "transcribe", "missing.wav", "-o", "-")
    assert dash.exit_code == 2 and "missing.wav" in dash.json()["error"]["message"]
    assert not Path("-").exists()
