"""The result caches: the same render, transcript or image is never made twice.

Work is counted by spies on the engines (never by timing): a hit runs nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli.cache import keys
from canvascast_cli.cache.store import ResultCache, results_dir
from canvascast_cli.cli.context import Services
from tests.helpers import Cli, small_output, textured_image, write_timeline
from tests.test_cli import job_api  # noqa: F401 - the in-process job API fixture

# ---------------------------------------------------------------------------------------
# render


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every run of the render engine (the real one, counted)."""
    from canvascast_cli.engines.render import job as render_job

    calls: list[Any] = []
    real = render_job.run_render

    def counted(job: Any, **kwargs: Any) -> Any:
        calls.append(job)
        return real(job, **kwargs)

    monkeypatch.setattr(render_job, "run_render", counted)
    return calls


def _timeline(media: Path) -> Path:
    return write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "img0.jpg", "duration": 1.0},
                   {"image": "img1.jpg", "duration": 1.0}],
        "narration": "narration.wav"})


def _render(cli: Cli, timeline: Path, out: str, *args: str) -> dict[str, Any]:
    result = cli("render", timeline, "-o", out, "--local", "--json", *args)
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = result.json()
    doc["stderr"] = result.stderr
    return doc


def test_a_second_render_is_a_hit_with_the_same_bytes(cli: Cli, media: Path,
                                                     renders: list[Any]) -> None:
    timeline = _timeline(media)
    first = _render(cli, timeline, "a.mp4")
    assert first["cache"] == "miss" and len(renders) == 1
    second = _render(cli, timeline, "b.mp4")
    assert second["cache"] == "hit" and second["cache_key"] == first["cache_key"]
    assert len(renders) == 1  # nothing rendered
    assert Path("a.mp4").read_bytes() == Path("b.mp4").read_bytes()
    assert second["sha256"] == first["sha256"] and second["backend"] == "cache"
    assert second["output"] == str(Path("b.mp4").absolute())
    # Without --json the hit is said on stderr.
    third = cli("render", timeline, "-o", "c.mp4", "--local")
    assert third.exit_code == 0 and "Cache hit" in third.stderr and len(renders) == 1


def test_what_changes_the_video_misses(cli: Cli, media: Path, renders: list[Any]) -> None:
    timeline = _timeline(media)
    base = _render(cli, timeline, "base.mp4")["cache_key"]
    seen = {base}
    for n, args in enumerate((["--preset", "ultrafast"], ["--crf", "30"],
                              ["--frames", "0:5"])):
        doc = _render(cli, timeline, f"o{n}.mp4", *args)
        assert doc["cache"] == "miss" and doc["cache_key"] not in seen, args
        seen.add(doc["cache_key"])
    assert len(renders) == 4
    textured_image(media / "img1.jpg", seed=99)  # one asset's bytes change
    doc = _render(cli, timeline, "changed.mp4")
    assert doc["cache"] == "miss" and doc["cache_key"] not in seen and len(renders) == 5
    # Moving the assets (same bytes, another folder) keeps the key.
    moved = media.parent / "moved"
    media.rename(moved)
    again = _render(cli, moved / "timeline.json", "moved.mp4")
    assert again["cache"] == "hit" and again["cache_key"] == doc["cache_key"]


def test_no_cache_renders_and_keeps_nothing(cli: Cli, media: Path,
                                            renders: list[Any]) -> None:
    timeline = _timeline(media)
    doc = _render(cli, timeline, "a.mp4", "--no-cache")
    assert doc["cache"] == "off" and doc["cache_reason"] == "--no-cache"
    assert ResultCache().entries() == []
    _render(cli, timeline, "b.mp4")
    doc = _render(cli, timeline, "c.mp4", "--no-cache")
    assert doc["cache"] == "off" and len(renders) == 3


def test_a_corrupt_entry_is_evicted_and_rendered_again(cli: Cli, media: Path,
                                                       renders: list[Any]) -> None:
    timeline = _timeline(media)
    first = _render(cli, timeline, "a.mp4")
    (entry,) = ResultCache().entries("render")
    video = entry.files["video.mp4"]
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    second = cli("render", timeline, "-o", "b.mp4", "--local")
    assert second.exit_code == 0, second.stderr
    assert "warning: cache: render entry" in second.stderr
    assert "is corrupt" in second.stderr and "evicted" in second.stderr
    assert len(renders) == 2  # rendered again
    assert Path("b.mp4").read_bytes() == Path("a.mp4").read_bytes()
    assert first["cache"] == "miss"
    assert _render(cli, timeline, "c.mp4")["cache"] == "hit"  # kept again, whole


def test_local_and_host_render_keys_agree(media: Path) -> None:
    """The client's key for a local file is the host's for the same bytes uploaded."""
    from canvascast_cli.dispatch.remote_jobs import render_remote
    from canvascast_cli.engines.render.engine import RenderOptions
    from canvascast_cli.engines.render.job import RenderJob
    from canvascast_cli.timeline import load_timeline_file

    path = _timeline(media)
    job = RenderJob(timeline=load_timeline_file(path), base_dir=media,
                    output=Path("x.mp4"), options=RenderOptions(preset="fast", crf=23))
    keyed, why = keys.local_render_timeline(job.timeline, media)
    assert keyed is not None and why is None
    local = keys.render_key(keyed, {"preset": "fast", "crf": 23, "frame_range": None,
                                    "allow_missing_glyphs": False},
                            ffmpeg=keys.ffmpeg_identity(None))
    remote, _fetch = render_remote(job)
    assert keys.payload_key(remote.payload) == (local, None)
    uncached = remote.payload.model_copy(update={"cache": False})  # type: ignore[union-attr]
    assert keys.payload_key(uncached)[0] is None


# ---------------------------------------------------------------------------------------
# the store: LRU under a cap, two writers of one key


def test_lru_eviction_under_a_cap(tmp_path: Path) -> None:
    now = [1000.0]
    cache = ResultCache(tmp_path / "c", max_bytes=250, clock=lambda: now[0])
    names = ["a" * 64, "b" * 64, "c" * 64]
    for i, key in enumerate(names[:2]):
        now[0] += 10
        assert cache.store("images", key, {"image": bytes([i]) * 100})
    now[0] += 10
    assert cache.lookup("images", names[0]) is not None  # a: used after b
    now[0] += 10
    cache.store("images", names[2], {"image": b"c" * 100})  # 300 bytes > 250: b goes
    kept = [e.key for e in cache.entries()]
    assert kept == [names[0], names[2]]
    assert cache.entries()[0].hits == 1
    done = cache.prune(0)
    assert done.removed == 2 and done.kept_bytes == 0 and cache.entries() == []


def _writer(root: str, start: Any, results: Any, who: int) -> None:
    cache = ResultCache(Path(root))
    start.wait()
    for n in range(30):
        key = f"{n:064x}"
        won = cache.store("render", key, {"video.mp4": os.urandom(64 * 1024)},
                          data={"writer": who}, label=f"writer {who}")
        results.put((n, who, won))


def test_two_processes_storing_one_key_leave_one_whole_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), start, results, who))
             for who in (1, 2)]
    for proc in procs:
        proc.start()
    start.set()
    got = [results.get(timeout=120) for _ in range(60)]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    cache = ResultCache(tmp_path)
    for n in range(30):
        winners = [who for m, who, won in got if m == n and won]
        assert len(winners) == 1, (n, got)
        entry = cache.lookup("render", f"{n:064x}")  # sha256 checked
        assert entry is not None and entry.data == {"writer": winners[0]}
    assert len(cache.entries()) == 30
    assert list((tmp_path / ".tmp").iterdir()) == []


# ---------------------------------------------------------------------------------------
# transcripts: one cached transcript serves every format


@pytest.fixture
def transcribes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A stand-in recogniser (fixed words), counted."""
    from canvascast_cli.engines.transcribe import job as transcribe_job
    from canvascast_cli.engines.transcribe.result import Segment, Transcript, Word

    calls: list[Any] = []

    def fake(job: Any, **_kwargs: Any) -> Any:
        calls.append(job)
        words = (Word("hello", 0.1, 0.5), Word("world", 0.6, 1.0))
        return Transcript(segments=(Segment(0, 0.1, 1.0, "hello world", words),),
                          words=words, language="en", duration=2.0, engine=job.engine,
                          model=job.model)

    monkeypatch.setattr(transcribe_job, "run_transcribe", fake)
    return calls


def test_the_same_audio_is_a_hit_in_another_format(cli: Cli, media: Path,
                                                   transcribes: list[Any]) -> None:
    audio = media / "narration.wav"
    first = cli("transcribe", audio, "-o", "a.json", "--local", "--json")
    assert first.exit_code == 0, first.stderr
    assert first.json()["cache"] == "miss" and len(transcribes) == 1
    second = cli("transcribe", audio, "-o", "a.srt", "--local", "--json")
    assert second.exit_code == 0, second.stderr
    assert second.json()["cache"] == "hit" and second.json()["backend"] == "cache"
    assert len(transcribes) == 1
    assert "hello world" in Path("a.srt").read_text()
    assert json.loads(Path("a.json").read_text())["words"][0]["word"] == "hello"
    # What changes the words misses: the beam, the language, the audio's bytes.
    for args in (["--beam-size", "1"], ["--language", "en"], ["--no-refine"]):
        doc = cli("transcribe", audio, "-o", f"b{len(transcribes)}.txt", "--local", "--json",
                  *args)
        assert doc.exit_code == 0 and doc.json()["cache"] == "miss", args
    assert len(transcribes) == 4
    off = cli("transcribe", audio, "--local", "--json", "--no-cache")
    assert off.json()["cache"] == "off" and len(transcribes) == 5


# ---------------------------------------------------------------------------------------
# images


class Counting:
    """A provider standing in for ``name``: a fixed image per seed, counted."""

    def __init__(self, name: str) -> None:
        self.name, self.model = name, {"gemini": "gemini-2.5-flash-image"}.get(
            name, "placeholder-card-v1")
        self.supports_negative_prompt = False
        self.calls: list[list[int]] = []

    def cost_per_image(self, request: Any) -> float | None:
        return 0.04

    def generate(self, batch: list[Any]) -> list[Any]:
        from canvascast_cli.engines.images.base import ImageResult

        self.calls.append([r.index for r in batch])
        return [ImageResult(r.index, _png(r.seed), "image/png") for r in batch]


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(cli: Cli, provider: Any, *args: str) -> dict[str, Any]:
    result = cli("images", "a fox", "a kite", "--provider", provider.name, "--json", *args,
                 services=Services(image_provider=lambda *a, **k: provider))
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = result.json()
    doc["stderr"] = result.stderr
    return doc


def test_placeholder_images_with_a_seed_are_hits(cli: Cli) -> None:
    first = cli("images", "a fox", "--provider", "placeholder", "--seed", "5", "-o", "one",
                "--json", "--local")
    assert first.exit_code == 0 and first.json()["cache"] == "miss"
    provider = Counting("placeholder")
    doc = _images(cli, provider, "--seed", "5", "-o", "two", "--local")
    assert provider.calls == [[1]]  # the fox was a hit; only the kite was made
    assert doc["cache"] == "miss" and doc["cache_hits"] == 1
    assert (Path("one") / "001-a-fox.png").read_bytes() == (
        Path("two") / "001-a-fox.png").read_bytes()
    doc = _images(cli, provider, "--seed", "5", "-o", "three", "--local")
    assert provider.calls == [[1]] and doc["cache"] == "hit" and doc["cache_hits"] == 2
    assert doc["cost_usd"] == 0.0  # nothing billed for a hit
    assert _images(cli, provider, "--seed", "6", "-o", "four", "--local")["cache"] == "miss"


def test_gemini_is_cached_only_with_a_seed(cli: Cli) -> None:
    provider = Counting("gemini")
    doc = _images(cli, provider, "-o", "free0", "--local")
    assert doc["cache"] == "off" and "no --seed" in doc["cache_reason"]
    again = cli("images", "a fox", "a kite", "--provider", "gemini", "-o", "free1",
                "--local", services=Services(image_provider=lambda *a, **k: provider))
    assert again.exit_code == 0 and "gemini: not cached (no --seed)" in again.stderr
    assert len(provider.calls) == 2 and ResultCache().entries() == []
    _images(cli, provider, "-o", "seeded1", "--seed", "11", "--local")
    doc = _images(cli, provider, "-o", "seeded2", "--seed", "11", "--local")
    assert doc["cache"] == "hit" and len(provider.calls) == 3


# ---------------------------------------------------------------------------------------
# canvascast cache list | prune | clear


def test_the_cache_command(cli: Cli) -> None:
    cache = ResultCache(results_dir())
    cache.store("render", "1" * 64, {"video.mp4": b"v" * 3000}, label="one.json")
    cache.store("transcript", "2" * 64, {"transcript.json": b"{}"}, label="two.wav")
    cache.store("images", "3" * 64, {"image": b"i" * 10}, label="three")
    listed = cli("cache", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    doc = listed.json()
    assert doc["total_bytes"] == 3012 and doc["max_bytes"] == 5 * 1024 ** 3
    assert doc["kinds"]["render"] == {"entries": 1, "bytes": 3000}
    assert {e["kind"] for e in doc["entries"]} == {"render", "transcript", "images"}
    text = cli("cache", "list")
    assert "one.json" in text.stdout and "3 entries" in text.stdout
    assert cli("cache", "list", "--kind", "images", "--json").json()["kinds"] == {
        "images": {"entries": 1, "bytes": 10}}
    pruned = cli("cache", "prune", "--max-gb", "0.000001", "--json").json()  # ~1 KB
    assert pruned["removed"] == 1 and pruned["kept_bytes"] == 12
    cleared = cli("cache", "clear", "--kind", "images", "--json").json()
    assert cleared["removed"] == 1 and cleared["kept_bytes"] == 2
    assert cli("cache", "clear", "--json").json()["removed"] == 1
    assert cli("cache", "list", "--json").json()["entries"] == []
    for bad in (["clear", "--kind", "videos"], ["prune", "--max-gb", "-1"],
                ["list", "--kind", "x"]):
        result = cli("cache", *bad)
        assert result.exit_code == 2, bad


def test_cache_disabled_in_modal_toml(cli: Cli, isolated_env: Path) -> None:
    (isolated_env / "modal.toml").write_text("[cache]\nenabled = false\n")
    doc = cli("images", "x", "--provider", "placeholder", "--seed", "1", "--json",
              "--local").json()
    assert doc["cache"] == "off" and "enabled = false" in doc["cache_reason"]


# ---------------------------------------------------------------------------------------
# the job API's host


@pytest.fixture
def host_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every job the host's engines really ran (server.work's, counted)."""
    from canvascast_cli.server import work

    ran: list[str] = []
    for name in ("_render", "_transcribe", "_images"):
        real = getattr(work, name)

        def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = name) -> Any:
            ran.append(_name)
            return _real(*args)

        monkeypatch.setattr(work, name, counted)
    return ran


def test_the_host_keeps_results_through_the_job_api(cli: Cli, job_api: Any,  # noqa: F811
                                                    host_runs: list[str]) -> None:
    args = ("images", "a red kite", "--provider", "placeholder", "--size", "320x180",
            "--seed", "7", "--remote", "--json")
    first = cli(*args, "-o", "one")
    assert first.exit_code == 0, first.stderr
    assert first.json()["cache"] == "miss" and host_runs == ["_images"]
    assert cli("cache", "clear").exit_code == 0  # the client forgets; the host does not
    second = cli(*args, "-o", "two")
    assert second.exit_code == 0, second.stderr
    assert host_runs == ["_images"]  # answered from the host's result cache
    status = job_api.runner.jobs[second.json()["job_ids"][0]]
    assert status.result.cache == "hit"
    assert Path("one/001-a-red-kite.png").read_bytes() == Path(
        "two/001-a-red-kite.png").read_bytes()
    third = cli(*args, "-o", "three", "--no-cache")  # neither side's cache
    assert third.exit_code == 0 and host_runs == ["_images", "_images"]
    assert job_api.runner.jobs[third.json()["job_ids"][0]].result.cache == "off"


def test_the_host_result_cache_in_execute(tmp_path: Path, media: Path,
                                          host_runs: list[str]) -> None:
    """A render and a transcription the host has done come back without running; an
    entry whose blobs were pruned runs again."""
    from canvascast_cli.server.blobs import BlobStore
    from canvascast_cli.server.work import execute

    store = BlobStore(tmp_path / "store")
    image, _ = store.put_file(media / "img0.jpg")
    payload = {"timeline": {"output": small_output(),
                            "scenes": [{"image": f"blob:{image}.jpg", "duration": 0.5}]}}
    first = execute("render_video", payload, store)
    assert first.cache == "miss" and host_runs == ["_render"]
    second = execute("render_video", payload, store)
    assert second.cache == "hit" and host_runs == ["_render"]
    assert second.artifacts == first.artifacts and second.summary == first.summary
    off = execute("render_video", {**payload, "cache": False}, store)
    assert off.cache == "off" and host_runs == ["_render", "_render"]
    store.path(first.artifacts[0].sha256).unlink()  # pruned: the entry is stale
    third = execute("render_video", payload, store)
    assert third.cache == "miss" and host_runs == ["_render"] * 3
    assert store.has(third.artifacts[0].sha256)



def test_an_unusable_cache_folder_never_fails_the_job(cli: Cli, isolated_env: Path) -> None:
    """The cache is bookkeeping: a cache folder that cannot be used (here a file where the
    folder belongs) is warned about, and the job runs and writes its output."""
    import os

    home = Path(os.environ["CANVASCAST_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "cache").write_text("not a folder")
    result = cli("images", "a kite", "--provider", "placeholder", "--seed", "1",
                 "--size", "320x180", "-o", "out")
    assert result.exit_code == 0, result.stderr
    assert "cannot be used" in result.stderr and "was not kept" in result.stderr
    assert len(list(Path("out").glob("*.png"))) == 1
