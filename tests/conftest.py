"""Shared fixtures: an isolated environment, a CLI runner, a folder of tiny media."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from canvascast_cli.cli.app import app
from canvascast_cli.cli.context import Application, Services
from tests.helpers import Result, textured_image, tone_wav
from tests.storage_server import FakeStorage


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
def black_hole() -> Iterator[str]:
    """The URL of a TCP server that accepts connections and never answers: Modal's API as
    an unreachable network shows it (the SDK alone would wait about a minute)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def fake() -> Iterator[FakeStorage]:
    """A fake Supabase Storage on loopback (tests/storage_server.py)."""
    server = FakeStorage().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def media(isolated_env: Path) -> Path:
    """A folder with three textured stills and a 4 s tone, for tiny timelines."""
    folder = isolated_env / "media"
    folder.mkdir()
    for i in range(3):
        textured_image(folder / f"img{i}.jpg", seed=i)
    tone_wav(folder / "narration.wav", 4.0)
    return folder
