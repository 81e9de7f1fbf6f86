"""canvascast images: styles, batching, seeds, sidecars, errors — with the placeholder
provider and a scripted provider for the batch mechanics (the gemini and diffusers
providers have their own tests against a local server and a tiny real pipeline)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from canvascast_cli.cli.context import Services
from canvascast_cli.engines.images import pipeline
from canvascast_cli.engines.images.base import ImageRequest, ImageResult
from canvascast_cli.engines.images.placeholder import PlaceholderProvider
from canvascast_cli.engines.images.style import PRESETS, StyleConfig, load_style, resolve_size
from canvascast_cli.errors import GpuOutOfMemory, InvalidInput
from tests.helpers import Cli


def test_placeholder_images_and_sidecars(cli: Cli, isolated_env: Path) -> None:
    result = cli("images", "A lighthouse at dawn", "Rain over the city", "--preset", "flat",
                 "--seed", "41", "--size", "640x360", "-o", "out", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["provider"] == "placeholder" and doc["failed"] == 0
    first, second = doc["images"]
    assert Path(first["file"]).name == "001-a-lighthouse-at-dawn.png"
    assert Path(second["file"]).name == "002-rain-over-the-city.png"
    assert (first["seed"], second["seed"]) == (41, 42)
    for entry in doc["images"]:
        data = Path(entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        with Image.open(entry["file"]) as img:
            assert img.size == (640, 360)
        sidecar = json.loads(Path(entry["sidecar"]).read_text())
        assert sidecar["prompt_sent"].startswith("flat vector illustration of ")
        assert sidecar["provider"] == "placeholder" and sidecar["safety"]["blocked"] is False
        assert sidecar["size"] == {"width": 640, "height": 360}


def test_same_seed_same_card_regardless_of_batch(isolated_env: Path) -> None:
    provider = PlaceholderProvider()
    prompts = [f"scene {i}" for i in range(5)]
    requests = pipeline.build_requests(prompts, StyleConfig(), seed=100, width=160,
                                       height=90, aspect_ratio="16:9", negative=False)
    whole = provider.generate(requests)
    split = [r for batch in pipeline.batches(requests, 2) for r in provider.generate(batch)]
    assert [r.data for r in whole] == [r.data for r in split]
    assert len({r.data for r in whole}) == 5


class Scripted:
    """A provider that runs out of GPU memory above a batch size and blocks one prompt."""

    name, model, supports_negative_prompt = "scripted", "scripted-1", True

    def __init__(self, fits: int, blocked: set[int]) -> None:
        self.fits, self.blocked, self.calls = fits, blocked, []  # type: ignore[var-annotated]

    def cost_per_image(self, request: ImageRequest) -> float | None:
        return 0.01

    def generate(self, batch: list[ImageRequest]) -> list[ImageResult]:
        self.calls.append([r.index for r in batch])
        if len(batch) > self.fits:
            raise GpuOutOfMemory(f"{len(batch)} images do not fit")
        return [ImageResult(r.index, None, None, blocked="IMAGE_SAFETY")
                if r.index in self.blocked else
                ImageResult(r.index, f"img{r.index}:{r.seed}".encode(), "image/png")
                for r in batch]


def test_oom_splits_the_batch_in_halves() -> None:
    provider = Scripted(fits=2, blocked=set())
    requests = pipeline.build_requests([f"p{i}" for i in range(5)], StyleConfig(), seed=0,
                                       width=64, height=64, aspect_ratio="1:1", negative=True)
    splits: list[tuple[int, int]] = []
    results = pipeline.generate_batch(provider, requests, lambda n, h: splits.append((n, h)))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert provider.calls == [[0, 1, 2, 3, 4], [0, 1, 2], [0, 1], [2], [3, 4]]
    assert splits == [(5, 3), (3, 2)]
    one = Scripted(fits=0, blocked=set())
    with pytest.raises(GpuOutOfMemory):
        pipeline.generate_batch(one, requests[:1])


def test_a_blocked_image_keeps_the_others_and_exits_1(cli: Cli, isolated_env: Path) -> None:
    provider = Scripted(fits=5, blocked={1})
    result = cli("images", "a", "b", "c", "--provider", "placeholder", "-o", "out", "--json",
                 "--batch-size", "2", services=Services(image_provider=lambda *a, **k: provider))
    assert result.exit_code == 1
    doc = result.json()
    assert [e["status"] for e in doc["images"]] == ["ok", "blocked", "ok"]
    assert doc["images"][1]["safety"] == {"blocked": True, "reason": "IMAGE_SAFETY"}
    assert sorted(p.name for p in (isolated_env / "out").iterdir()) == [
        "001-a.json", "001-a.png", "003-c.json", "003-c.png"]
    assert provider.calls == [[0, 1], [2]]  # batches of --batch-size
    assert doc["cost_usd"] == pytest.approx(0.02)  # blocked images are not billed


def test_batch_size_from_modal_toml(cli: Cli, isolated_env: Path) -> None:
    (isolated_env / "modal.toml").write_text("[functions.generate_images]\nbatch_size = 3\n")
    provider = Scripted(fits=5, blocked=set())
    services = Services(image_provider=lambda *a, **k: provider)
    assert cli("images", *"abcdefg", "-o", "out", services=services).exit_code == 0
    assert [len(c) for c in provider.calls] == [3, 3, 1]


@pytest.mark.parametrize(("args", "expected"), [
    ([], "give at least one prompt"),
    (["   "], "prompt 1: empty"),
    (["x", "--size", "99999x10"], "--size: 99999x10 is out of range"),
    (["x", "--size", "big"], "--size: 'big' is not WxH"),
    (["x", "--aspect", "7:5"], "--aspect: '7:5'; allowed:"),
    (["x", "--preset", "vaporwave"], "unknown style 'vaporwave'; built-in:"),
    (["x", "--provider", "gemini"], "GEMINI_API_KEY"),
    (["x", "--prompts-file", "none.txt"], "--prompts-file: none.txt: file not found"),
])
def test_bad_input_exits_2_and_writes_nothing(cli, isolated_env: Path, monkeypatch, args,  # type: ignore[no-untyped-def]
                                              expected) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    result = cli("images", *args, "-o", "out")
    assert result.exit_code == 2, result.stderr
    assert expected in result.stderr
    assert not (isolated_env / "out").exists()


def test_existing_files_need_overwrite(cli: Cli, isolated_env: Path) -> None:
    assert cli("images", "one", "-o", "out", "--size", "64x64").exit_code == 0
    again = cli("images", "one", "-o", "out", "--size", "64x64")
    assert again.exit_code == 2 and "already exist; pass --overwrite" in again.stderr
    assert cli("images", "one", "-o", "out", "--size", "64x64", "--overwrite").exit_code == 0


def test_style_file_validation_and_preset_override(isolated_env: Path) -> None:
    good = isolated_env / "style.json"
    good.write_text(json.dumps({"preset": "cinematic", "suffix": "golden hour",
                                "seed": 5, "aspect_ratio": "9:16"}))
    style = load_style(good)
    assert style.prefix == PRESETS["cinematic"].prefix and style.suffix == "golden hour"
    assert style.negative_prompt == PRESETS["cinematic"].negative_prompt
    assert resolve_size(style, None, None, 1024) == (576, 1024, "9:16")
    bad = isolated_env / "bad.json"
    bad.write_text(json.dumps({"prefx": "x", "aspect_ratio": "2:1", "palette": ["red"]}))
    with pytest.raises(InvalidInput) as info:
        load_style(bad)
    text = str(info.value)
    assert f"--style: {bad}: 3 problem(s)" in text
    assert "prefx: unknown field" in text and "aspect_ratio:" in text and "'red'" in text
    (isolated_env / "broken.json").write_text("{")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_style(isolated_env / "broken.json")


def test_prompts_file_and_slugs(cli: Cli, isolated_env: Path) -> None:
    (isolated_env / "prompts.txt").write_text("# scenes\nÉté à Paris!\n\n../../etc/passwd\n")
    result = cli("images", "--prompts-file", "prompts.txt", "-o", "out", "--size", "64x64",
                 "--json")
    assert result.exit_code == 0, result.stderr
    names = [Path(e["file"]).name for e in result.json()["images"]]
    assert names == ["001-ete-a-paris.png", "002-etc-passwd.png"]
    assert all(Path(e["file"]).parent == isolated_env / "out" for e in result.json()["images"])
