"""The diffusers provider against a tiny random Stable Diffusion pipeline built in code.

The pipeline (a few hundred KB of random weights) is saved to a folder once per module
and loaded back the way users load theirs: ``DiffusersProvider(folder)`` and
``canvascast images --provider diffusers --model FOLDER``. Everything runs on the CPU
with one thread and never touches the network; Hugging Face is never contacted.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from canvascast_cli.engines.images import diffusers_provider as dp
from canvascast_cli.engines.images import pipeline
from canvascast_cli.engines.images.base import ImageRequest
from canvascast_cli.errors import GpuOutOfMemory, InvalidInput, JobFailed
from tests.helpers import Cli

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is not installed (pip install 'canvascast[diffusers]')")
torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

SD = diffusers.StableDiffusionPipeline


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One CPU thread: light on a shared machine, and the same arithmetic every run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def restore_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider puts the hub offline for the process; undo that after each test."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE",
                        huggingface_hub.constants.HF_HUB_OFFLINE)
    # setenv then delenv: monkeypatch records the original either way (unset included),
    # so the variable the provider sets is undone too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random StableDiffusionPipeline saved with save_pretrained (built once)."""
    folder = tmp_path_factory.mktemp("tiny-sd")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        norm_num_groups=8, attention_head_dim=4)
    vae = diffusers.AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=60, max_position_embeddings=77))
    # A character-level vocabulary: enough for CLIP's BPE with no merges.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    words = tmp_path_factory.mktemp("vocab")
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")
    # model_max_length matters: without it generation crashes on the padding length.
    tokenizer = transformers.CLIPTokenizer(str(words / "vocab.json"),
                                           str(words / "merges.txt"), model_max_length=77)
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1)
    SD(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
       scheduler=scheduler, safety_checker=None, feature_extractor=None,
       requires_safety_checker=False).save_pretrained(folder)
    return folder


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two steps instead of the SD family's 25 for runs that go through the CLI (which
    builds ``DiffusersProvider(model)`` with the defaults)."""
    monkeypatch.setattr(dp, "DEFAULT_STEPS", 2)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every pipeline call's kwargs; the real pipeline still runs."""
    seen: list[dict[str, Any]] = []
    real = SD.__call__

    @functools.wraps(real)  # keeps the signature the provider inspects
    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SD, "__call__", recording)
    return seen


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Any attempt to resolve or connect is recorded and refused."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[1:] or args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def requests(prompts: list[str], seed: int, size: tuple[int, int] = (64, 64),
             negative: str | None = None) -> list[ImageRequest]:
    return [ImageRequest(index=i, prompt=p, negative_prompt=negative, width=size[0],
                         height=size[1], aspect_ratio="1:1", seed=seed + i)
            for i, p in enumerate(prompts)]


def pixels(data: bytes | None) -> np.ndarray:
    assert data is not None
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


# ---------------------------------------------------------------------------------------


def test_cli_writes_images_and_sidecars(cli, isolated_env: Path, tiny_pipeline: Path,  # type: ignore[no-untyped-def]
                                        fast: None, no_network: list[Any]) -> None:
    result = cli("images", "a", "b", "--provider", "diffusers", "--model", str(tiny_pipeline),
                 "--size", "64x64", "--seed", "3", "-o", "out", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["provider"] == "diffusers" and doc["model"] == str(tiny_pipeline)
    assert doc["failed"] == 0 and doc["cost_usd"] == 0
    # Billed by time: GPU seconds and what they would cost on Modal (by default an L40S,
    # Modal's minimum 0.125 core and 40 GiB of memory).
    assert doc["generation_seconds"] > 0
    assert doc["modal_equivalent_usd"] == pytest.approx(
        doc["generation_seconds"] * (0.000542 + 0.125 * 0.0000131 + 40 * 0.00000222),
        rel=0.01)
    assert sorted(p.name for p in (isolated_env / "out").iterdir()) == [
        "001-a.json", "001-a.png", "002-b.json", "002-b.png"]
    for entry, seed in zip(doc["images"], (3, 4), strict=True):
        data = Path(entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        with Image.open(entry["file"]) as img:
            assert (img.format, img.size) == ("PNG", (64, 64))
        sidecar = json.loads(Path(entry["sidecar"]).read_text())
        assert sidecar["provider"] == "diffusers" and sidecar["model"] == str(tiny_pipeline)
        assert sidecar["seed"] == seed and sidecar["safety"]["blocked"] is False
        assert (sidecar["steps"], sidecar["guidance"]) == (2, 7.0)
        assert (sidecar["device"], sidecar["dtype"]) == ("cpu", "float32")
        assert sidecar["seconds"] > 0 and sidecar["batch_images"] == 2
    assert result.stderr == ""  # --json: one document on stdout, no notes
    assert no_network == []
    plain = cli("images", "c", "--provider", "diffusers", "--model", str(tiny_pipeline),
                "--size", "64x64", "--seed", "3", "-o", "plain")
    assert plain.exit_code == 0, plain.stderr
    assert plain.stderr.count("on the CPU in float32 (slow") == 1  # said once, on stderr


def test_negative_prompt_reaches_the_pipeline(cli, isolated_env: Path, tiny_pipeline: Path,  # type: ignore[no-untyped-def]
                                              fast: None, calls: list[dict[str, Any]]) -> None:
    result = cli("images", "a", "b", "--provider", "diffusers", "--model", str(tiny_pipeline),
                 "--preset", "cinematic", "--size", "64x64", "--seed", "3", "-o", "out",
                 "--json")
    assert result.exit_code == 0, result.stderr
    negative = result.json()["images"][0]["negative_prompt"]
    assert negative and negative.startswith("text, watermark")
    assert len(calls) == 1  # one pipeline call for the whole batch
    call = calls[0]
    assert call["negative_prompt"] == [negative, negative]
    assert call["prompt"][0].startswith("cinematic film still of a")
    assert (call["width"], call["height"], call["num_inference_steps"]) == (64, 64, 2)
    assert call["guidance_scale"] == 7.0
    assert [g.initial_seed() for g in call["generator"]] == [3, 4]


def test_same_seed_same_image_across_runs_and_batches(tiny_pipeline: Path) -> None:
    batch = requests(["a red fox", "b blue sky", "c tree"], seed=10)
    first = dp.DiffusersProvider(str(tiny_pipeline), steps=2, notify=lambda _: None)
    whole = first.generate(batch)
    assert [r.index for r in whole] == [0, 1, 2] and all(r.mime_type == "image/png"
                                                         for r in whole)
    # A fresh load, the same batch: byte-identical files.
    again = dp.DiffusersProvider(str(tiny_pipeline), steps=2, notify=lambda _: None)
    assert [r.data for r in again.generate(batch)] == [r.data for r in whole]
    singles = [again.generate([r])[0] for r in batch]
    assert [r.data for r in singles] == [r.data for r in first.generate(batch[:1])
                                         + first.generate(batch[1:2])
                                         + first.generate(batch[2:])]
    # Across batch sizes the starting noise is the same (one generator per image), but
    # CPU BLAS kernels differ by batch size (GEMM vs GEMV blocking): a few pixels may
    # differ by one level. Different seeds give different images altogether.
    for w, s in zip(whole, singles, strict=True):
        diff = np.abs(pixels(w.data) - pixels(s.data))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert np.abs(pixels(whole[0].data) - pixels(whole[1].data)).mean() > 5


def test_oom_splits_the_batch_and_the_cli_writes_every_image(  # type: ignore[no-untyped-def]
        cli, isolated_env: Path, tiny_pipeline: Path, fast: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = SD.__call__

    @functools.wraps(real)
    def small_gpu(self: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SD, "__call__", small_gpu)
    result = cli("images", "a", "b", "c", "--provider", "diffusers", "--model",
                 str(tiny_pipeline), "--size", "64x64", "--seed", "3", "--batch-size", "3",
                 "-o", "out")
    assert result.exit_code == 0, result.stderr
    assert sizes == [3, 2, 1, 1, 1]
    assert "GPU out of memory on a batch of 3; retrying in batches of 2" in result.stderr
    assert "GPU out of memory on a batch of 2; retrying in batches of 1" in result.stderr
    assert sorted(p.name for p in (isolated_env / "out").glob("*.png")) == [
        "001-a.png", "002-b.png", "003-c.png"]


def test_pipeline_errors_are_translated(tiny_pipeline: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    provider = dp.DiffusersProvider(str(tiny_pipeline), steps=2, notify=lambda _: None)
    provider.generate(requests(["warm"], seed=0))  # load before patching
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    failure: list[BaseException] = [RuntimeError("HIP out of memory; tried 1 GiB")]

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise failure[0]

    monkeypatch.setattr(SD, "__call__", broken)
    with pytest.raises(GpuOutOfMemory, match="batch of 2 at 64x64"):
        provider.generate(requests(["a", "b"], seed=0))
    assert emptied == [True]
    # The split in halves, down to one image, which is re-raised.
    with pytest.raises(GpuOutOfMemory):
        pipeline.generate_batch(provider, requests(["a", "b"], seed=0))
    failure[0] = RuntimeError("expected scalar type Half but found Float")
    with pytest.raises(JobFailed, match="RuntimeError: expected scalar type Half"):
        provider.generate(requests(["a"], seed=0))


def test_nsfw_flag_blocks_that_image_only(tiny_pipeline: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = SD.__call__
    output_type = diffusers.pipelines.stable_diffusion.StableDiffusionPipelineOutput

    @functools.wraps(real)
    def flagging(self: Any, *args: Any, **kwargs: Any) -> Any:
        images = real(self, *args, **kwargs).images
        return output_type(images=images, nsfw_content_detected=[False, True, False])

    monkeypatch.setattr(SD, "__call__", flagging)
    provider = dp.DiffusersProvider(str(tiny_pipeline), steps=1, notify=lambda _: None)
    results = provider.generate(requests(["a", "b", "c"], seed=0))
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].blocked == "NSFW" and results[1].data is None


def test_sizes_round_down_and_too_small_is_invalid(tiny_pipeline: Path) -> None:
    provider = dp.DiffusersProvider(str(tiny_pipeline), steps=1, notify=lambda _: None)
    (result,) = provider.generate(requests(["a"], seed=0, size=(71, 66)))
    with Image.open(io.BytesIO(result.data or b"")) as img:
        assert img.size == (64, 64)
    assert result.details["generated_size"] == {"width": 64, "height": 64}
    with pytest.raises(InvalidInput, match="too small"):
        provider.generate(requests(["a"], seed=0, size=(40, 64)))


@pytest.mark.parametrize(("model", "expected"), [
    ("canvascast-test/no-such-model", "not downloaded"),
    ("not a model id!", "nor a model id"),
    ("./missing-folder", "no such folder"),
])
def test_unknown_model_exits_2_without_network(cli, isolated_env: Path, no_network: list[Any],  # type: ignore[no-untyped-def]
                                               monkeypatch: pytest.MonkeyPatch, model: str,
                                               expected: str) -> None:
    import huggingface_hub.constants

    cache = isolated_env / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    result = cli("images", "a", "--provider", "diffusers", "--model", model, "-o", "out",
                 "--json")
    assert result.exit_code == 2, result.stdout
    error = result.json()["error"]
    assert error["code"] == "INVALID_INPUT" and model in error["message"]
    assert expected in error["message"]
    how = " ".join(error["details"])
    assert "download" in how and "save_pretrained" in how
    if model.startswith("canvascast-test"):
        assert str(cache) in error["message"]
        assert f"huggingface-cli download {model}" in how and f"hf download {model}" in how
    assert no_network == []
    assert not (isolated_env / "out").exists()


def test_a_folder_that_is_not_a_pipeline_exits_2(cli: Cli, isolated_env: Path) -> None:
    (isolated_env / "weights").mkdir()
    (isolated_env / "weights" / "model.safetensors").write_bytes(b"\0" * 16)
    result = cli("images", "a", "--provider", "diffusers", "--model", "weights", "-o", "out")
    assert result.exit_code == 2
    assert "weights: not a diffusers pipeline folder (no model_index.json)" in result.stderr
    one_file = cli("images", "a", "--provider", "diffusers", "--model",
                   "weights/model.safetensors", "-o", "out")
    assert one_file.exit_code == 2 and "a file; pass a diffusers pipeline folder" in (
        one_file.stderr)
    # model_index.json present but the components missing: from_pretrained's error, exit 2.
    (isolated_env / "weights" / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers",
                                                            "UNet2DConditionModel"]}))
    broken = cli("images", "a", "--provider", "diffusers", "--model", "weights", "-o", "out")
    assert broken.exit_code == 2 and "cannot load the pipeline" in broken.stderr


def test_a_cached_model_id_loads_offline(tiny_pipeline: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         no_network: list[Any]) -> None:
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--canvascast-test--tiny-sd"
    shutil.copytree(tiny_pipeline, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    provider = dp.DiffusersProvider("canvascast-test/tiny-sd", steps=1, notify=lambda _: None)
    (result,) = provider.generate(requests(["a"], seed=0))
    assert result.ok and provider.spec().folder == repo / "snapshots" / commit
    assert no_network == []


def write_config(folder: Path, class_name: str, **files: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    index = {"_class_name": class_name, **files.pop("index", {})}
    (folder / "model_index.json").write_text(json.dumps(index))
    for name, config in files.items():
        sub = folder / name
        sub.mkdir()
        filename = "scheduler_config.json" if name == "scheduler" else "config.json"
        (sub / filename).write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("name", "class_name", "files", "expected"), [
    ("flux1-schnell", "FluxPipeline", {"transformer": {"guidance_embeds": False}},
     ("flux-schnell", 4, 0.0, False)),
    ("my-flux", "FluxPipeline", {"transformer": {"guidance_embeds": True}},
     ("flux-dev", 28, 3.5, False)),
    ("klein", "Flux2KleinPipeline", {"index": {"is_distilled": True}},
     ("flux2-distilled", 4, 1.0, False)),
    ("sdxl-turbo", "StableDiffusionXLPipeline", {}, ("turbo", 4, 0.0, False)),
    ("fast-xl", "StableDiffusionXLPipeline", {"scheduler": {
        "_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"}},
     ("turbo", 4, 0.0, False)),
    ("sdxl-base", "StableDiffusionXLPipeline", {"scheduler": {
        "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading"}},
     ("default", 25, 7.0, True)),
])
def test_family_defaults_from_config_files(tmp_path: Path, name: str, class_name: str,
                                           files: dict[str, Any],
                                           expected: tuple[str, int, float, bool]) -> None:
    folder = write_config(tmp_path / name, class_name, **files)
    provider = dp.DiffusersProvider(str(folder))
    spec = provider.spec()
    assert (spec.family, provider.steps, provider.guidance,
            provider.supports_negative_prompt) == expected
    # Overrides win; real guidance makes a turbo model's negative prompt count.
    custom = dp.DiffusersProvider(str(folder), steps=8, guidance=5.0)
    assert (custom.steps, custom.guidance) == (8, 5.0)
    assert custom.supports_negative_prompt is (class_name.startswith("StableDiffusion"))


def test_missing_packages_say_how_to_install(tiny_pipeline: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)
    provider = dp.DiffusersProvider(str(tiny_pipeline))
    with pytest.raises(InvalidInput) as info:
        provider.generate(requests(["a"], seed=0))
    assert "pip install 'canvascast[diffusers]'" in str(info.value)
    with pytest.raises(InvalidInput, match="steps: 0"):
        dp.DiffusersProvider(str(tiny_pipeline), steps=0)


def test_cost_is_by_gpu_time_not_per_image(tiny_pipeline: Path) -> None:
    provider = dp.DiffusersProvider(str(tiny_pipeline))
    assert provider.name == "diffusers" and provider.model == str(tiny_pipeline)
    assert provider.cost_per_image(requests(["a"], seed=0)[0]) is None
