"""Shared fixtures: an isolated environment, a CLI runner, a folder of tiny media."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from canvascast_cli.cli.app import app
from canvascast_cli.cli.context import Application, Services
from tests.helpers import Result, textured_image, tone_wav


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No colour, fixed width, private state/cache, and a cwd with no modal.toml."""
    work = tmp_path / "work"
    work.mkdir()
    for name in list(os.environ):
        if name.startswith("CANVASCAST_") or name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("CANVASCAST_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    yield work


@pytest.fixture
def services() -> Services:
    """The services the ``cli`` fixture's runs use: other fixtures may change them (a
    sleep that records, an injected transport)."""
    return Services()


@pytest.fixture
def cli(services: Services) -> Callable[..., Result]:
    """Run the Typer app in-process (fast); stdout and stderr kept apart. ``services``
    replaces the ways commands reach the world (providers, transport, sleep)."""

    def run(*args: str, services: Services = services) -> Result:
        runner = CliRunner()
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False,
                               obj=Application(services=services))
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def media(isolated_env: Path) -> Path:
    """A folder with three textured stills and a 4 s tone, for tiny timelines."""
    folder = isolated_env / "media"
    folder.mkdir()
    for i in range(3):
        textured_image(folder / f"img{i}.jpg", seed=i)
    tone_wav(folder / "narration.wav", 4.0)
    return folder
