"""The command line's own contract: fast start, help, version, docs that stay true."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from canvascast_cli.timeline import timeline_schema
from tests.helpers import REPO, run_subprocess

HEAVY = ("numpy", "cv2", "av", "PIL", "torch", "modal", "whisper", "faster_whisper",
         "diffusers", "imageio_ffmpeg")


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
