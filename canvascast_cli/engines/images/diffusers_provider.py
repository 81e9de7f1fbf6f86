"""Images from a local Hugging Face ``diffusers`` pipeline (FLUX, SDXL-Turbo, SD, ...).

``model`` is a pipeline folder (one with ``model_index.json``, as ``save_pretrained``
writes it) or a model id already in the Hugging Face cache. Nothing is ever downloaded:
the hub is put offline and every load passes ``local_files_only=True``, so a missing
model is an ``InvalidInput`` that says how to fetch it on a connected machine.

The pipeline loads lazily on the first ``generate`` (once): on the GPU in float16
(bfloat16 for FLUX, which overflows in float16), else on the CPU in float32 (slow). A
batch is one pipeline call with one ``torch.Generator`` per image, seeded with that
image's seed, so an image's starting noise never depends on its batch. (The network's
arithmetic is not bit-for-bit batch-invariant, though: BLAS picks different kernels for
different batch sizes, so an image made in another batch size can differ by one level
in a few pixels. Same batches, same seeds, same machine: identical bytes.)

Steps and guidance default per model family, read from the pipeline's class and config
files before anything heavy is imported; ``steps`` and ``guidance`` override them.

torch, diffusers and huggingface_hub are imported inside methods only, so the CLI starts
fast and works without them for every other provider.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canvascast_cli.engines.images.base import ImageRequest, ImageResult
from canvascast_cli.errors import GpuOutOfMemory, InvalidInput, JobFailed

INSTALL_HINT = "pip install 'canvascast[diffusers]'"
# The default family: classic Stable Diffusion (1.x/2.x/SDXL base, SD3) wants real
# classifier-free guidance and a few dozen steps.
DEFAULT_STEPS, DEFAULT_GUIDANCE = 25, 7.0
# UNets downsample the latent three times; below 64 px a side there is nothing left.
MIN_SIDE = 64
# Load onto the GPU whole only when the weights leave this share of free memory for
# activations; otherwise offload idle components to the CPU (slower, but it runs).
GPU_FIT_SHARE = 0.85


@dataclass(frozen=True)
class ModelSpec:
    """What is known about a pipeline from its config files alone (no weights loaded)."""

    source: str  # what from_pretrained gets: a folder path or a cached model id
    folder: Path  # the folder holding model_index.json (the cache snapshot for an id)
    class_name: str  # model_index.json's _class_name, e.g. "FluxPipeline"
    family: str  # "flux-schnell", "flux-dev", "flux2-distilled", "flux2", "turbo", "default"
    steps: int  # the family's default number of inference steps
    guidance: float  # the family's default guidance scale

    @property
    def is_flux(self) -> bool:
        return self.family.startswith("flux")


def _stderr_note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


class DiffusersProvider:
    """The ``Provider`` for local diffusers pipelines; see the module docstring."""

    name = "diffusers"

    def __init__(self, model: str, *, device: str | None = None, steps: int | None = None,
                 guidance: float | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        if steps is not None and steps < 1:
            raise InvalidInput(f"steps: {steps}; at least 1")
        if guidance is not None and guidance < 0:
            raise InvalidInput(f"guidance: {guidance}; 0 or more")
        self.model = model
        self.device = device
        self.steps_override = steps
        self.guidance_override = guidance
        self.notify = notify or _stderr_note
        self.offload: str | None = None  # "model" when components are offloaded to the CPU
        self.load_seconds: float | None = None
        self._spec: ModelSpec | None = None
        self._pipe: Any = None
        self._device: str | None = None  # as resolved at load
        self._dtype: str | None = None
        self._negative: bool | None = None

    # -- Provider protocol ------------------------------------------------------------

    @property
    def supports_negative_prompt(self) -> bool:
        """Whether a negative prompt would actually steer the image.

        True when the pipeline's ``__call__`` takes ``negative_prompt`` and the guidance
        in use makes it count: SD-style pipelines ignore it at guidance <= 1 (turbo
        models), and FLUX takes one only for "true CFG" (``true_cfg_scale``), which is
        off by default and doubles the work. Reporting those as unsupported keeps the
        sidecars from recording a negative prompt that was never used. Resolving this
        reads the model's config and imports diffusers, but loads no weights.
        """
        if self._negative is None:
            call = inspect.signature(self._pipeline_class().__call__).parameters
            self._negative = ("negative_prompt" in call and "true_cfg_scale" not in call
                              and self.guidance > 1.0)
        return self._negative

    @supports_negative_prompt.setter
    def supports_negative_prompt(self, value: bool) -> None:
        self._negative = value

    def cost_per_image(self, request: ImageRequest) -> float | None:
        # Billed by GPU time, not per image: the CLI estimates from GPU seconds.
        return None

    def generate(self, batch: list[ImageRequest]) -> list[ImageResult]:
        """One pipeline call per image size in ``batch`` (one call for a CLI batch)."""
        if not batch:
            return []
        results: dict[int, ImageResult] = {}
        by_size: dict[tuple[int, int], list[ImageRequest]] = {}
        for request in batch:
            by_size.setdefault((request.width, request.height), []).append(request)
        for group in by_size.values():
            for request, result in zip(group, self._generate_group(group), strict=True):
                results[id(request)] = result
        return [results[id(request)] for request in batch]

    # -- model resolution (config files only) -----------------------------------------

    @property
    def steps(self) -> int:
        return self.steps_override if self.steps_override is not None else self.spec().steps

    @property
    def guidance(self) -> float:
        if self.guidance_override is not None:
            return self.guidance_override
        return self.spec().guidance

    def spec(self) -> ModelSpec:
        """Locate the model and read its family from its config files (cached)."""
        if self._spec is None:
            source, folder = _locate(self.model)
            index = _read_json(folder / "model_index.json", self.model)
            class_name = index.get("_class_name")
            if isinstance(class_name, list):  # a custom pipeline: [module, class]
                class_name = class_name[-1]
            if not isinstance(class_name, str):
                raise InvalidInput(f"--model {self.model}: model_index.json names no "
                                   "pipeline class (_class_name)", details=_how_to_get(None))
            family, steps, guidance = _family(self.model, class_name, index, folder)
            self._spec = ModelSpec(source, folder, class_name, family, steps, guidance)
        return self._spec

    def _pipeline_class(self) -> Any:
        if self._pipe is not None:
            return type(self._pipe)
        spec = self.spec()  # first: a missing model fails before the slow import
        _torch, diffusers = _import_heavy()
        with _quiet_hub():  # the lazy import of the pipelines logs advisory warnings
            cls = getattr(diffusers, spec.class_name, None)
        if cls is None:
            raise InvalidInput(f"--model {self.model}: {spec.class_name} is not a "
                               f"pipeline of diffusers {diffusers.__version__}",
                               details=["upgrade diffusers, or pick a supported model"])
        return cls

    # -- loading ----------------------------------------------------------------------

    def _pipeline(self) -> Any:
        if self._pipe is None:
            self._pipe = self._load()
        return self._pipe

    def _load(self) -> Any:
        spec = self.spec()
        torch, diffusers = _import_heavy()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidInput(f"device {device}: torch sees no CUDA GPU")
        if device == "cpu":
            dtype = torch.float32  # half precision on the CPU is slower, and lossy
            self.notify(f"diffusers: no GPU; running {self.model} on the CPU in float32 "
                        "(slow: minutes per image for a real model)")
        else:
            # FLUX's activations overflow float16; everything else is made for it.
            dtype = torch.bfloat16 if spec.is_flux else torch.float16
        started = time.perf_counter()
        # diffusers 0.4x renamed torch_dtype to dtype (the old name warns until 1.0);
        # torch_dtype is the one every version since 0.30 understands.
        dtype_key = "torch_dtype" if _major(diffusers.__version__) < 1 else "dtype"
        with _quiet_hub(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.* is deprecated",
                                    category=FutureWarning)
            try:
                pipe = diffusers.DiffusionPipeline.from_pretrained(
                    spec.source, local_files_only=True, **{dtype_key: dtype})
            except ImportError as exc:  # a component needs a package (sentencepiece, ...)
                raise InvalidInput(f"--model {self.model}: a component needs a package "
                                   f"that is not installed: {exc}",
                                   details=[f"{INSTALL_HINT}, then pip install the "
                                            "package named above"]) from None
            except (OSError, ValueError, KeyError) as exc:
                raise InvalidInput(f"--model {self.model}: cannot load the pipeline: "
                                   f"{_first_line(exc)}",
                                   details=_how_to_get(None if Path(spec.source).exists()
                                                       else self.model)) from None
        if device != "cpu":
            self._place(pipe, torch, device)
        pipe.set_progress_bar_config(disable=True)  # the CLI draws its own progress
        self.load_seconds = time.perf_counter() - started
        self._device, self._dtype = device, str(dtype).removeprefix("torch.")
        return pipe

    def _place(self, pipe: Any, torch: Any, device: str) -> None:
        """Move ``pipe`` onto the GPU, offloading idle components if it does not fit."""
        weights = sum(p.numel() * p.element_size()
                      for component in pipe.components.values()
                      if isinstance(component, torch.nn.Module)
                      for p in component.parameters())
        free = torch.cuda.mem_get_info(device)[0] if device.startswith("cuda") else None
        oom = False
        try:
            if free is not None and weights > GPU_FIT_SHARE * free:
                # Only the component at work sits on the GPU (text encoders, then the
                # denoiser, then the VAE): slower, but big models run on smaller GPUs.
                pipe.enable_model_cpu_offload(device=device)
                self.offload = "model"
            else:
                pipe.to(device)
        except ImportError:
            raise InvalidInput(f"--model {self.model}: {weights / 2**30:.1f} GiB of weights "
                               f"do not fit the GPU ({(free or 0) / 2**30:.1f} GiB free) "
                               "and offloading needs accelerate",
                               details=["pip install accelerate"]) from None
        except Exception as exc:
            if not _is_oom(torch, exc):
                raise JobFailed(f"diffusers: cannot move the pipeline to {device}: "
                                f"{_first_line(exc)}") from None
            oom = True
        if oom:
            # Not GpuOutOfMemory: a smaller batch cannot make the weights fit.
            torch.cuda.empty_cache()
            raise JobFailed(f"diffusers: {self.model} ({weights / 2**30:.1f} GiB) does not "
                            f"fit in GPU memory on {device}; use a larger GPU or a smaller "
                            "model")

    # -- generation -------------------------------------------------------------------

    def _generate_group(self, group: list[ImageRequest]) -> list[ImageResult]:
        pipe = self._pipeline()
        torch, _diffusers = _import_heavy()
        spec, device = self.spec(), self._device or "cpu"
        width, height = self._pixel_size(pipe, group[0].width, group[0].height)
        params = inspect.signature(type(pipe).__call__).parameters
        steps, guidance = self.steps, self.guidance
        # Generators live where the latents are drawn; diffusers draws on the CPU for
        # Apple's mps, and a per-image generator makes image i's noise batch-independent.
        gen_device = "cpu" if device in ("cpu", "mps") else device
        kwargs: dict[str, Any] = {
            "prompt": [r.prompt for r in group],
            "width": width,
            "height": height,
            "num_inference_steps": steps,
            "generator": [torch.Generator(gen_device).manual_seed(r.seed) for r in group],
        }
        if "guidance_scale" in params:  # a few distilled pipelines take none
            kwargs["guidance_scale"] = guidance
        if self.supports_negative_prompt and any(r.negative_prompt for r in group):
            kwargs["negative_prompt"] = [r.negative_prompt or "" for r in group]
        if spec.family == "flux-schnell" and "max_sequence_length" in params:
            kwargs["max_sequence_length"] = 256  # schnell's T5 was trained on 256 tokens

        started = time.perf_counter()
        oom: str | None = None
        try:
            output = pipe(**kwargs)
        except Exception as exc:
            if not _is_oom(torch, exc):
                message = _first_line(exc)
                if isinstance(exc, ValueError) and ("height" in message or "width" in message):
                    raise InvalidInput(f"size {width}x{height}: {message}") from None
                raise JobFailed(f"diffusers: {type(exc).__name__}: {message}") from None
            oom = _first_line(exc)
        if oom is not None:
            # Outside the except block: the traceback's frames (and the activations they
            # hold) are gone, so empty_cache can actually return that memory.
            gc.collect()
            torch.cuda.empty_cache()
            raise GpuOutOfMemory(f"diffusers: out of GPU memory on a batch of {len(group)} "
                                 f"at {width}x{height}: {oom}")
        seconds = time.perf_counter() - started

        images = list(output.images)
        if len(images) != len(group):
            raise JobFailed(f"diffusers: {len(group)} prompts gave {len(images)} images")
        nsfw = getattr(output, "nsfw_content_detected", None) or [False] * len(group)
        details: dict[str, Any] = {
            "steps": steps, "guidance": guidance, "device": device, "dtype": self._dtype,
            "seconds": round(seconds, 3), "batch_images": len(group),
        }
        if self.offload:
            details["offload"] = self.offload
        if (width, height) != (group[0].width, group[0].height):
            details["generated_size"] = {"width": width, "height": height}
        results = []
        for request, image, flagged in zip(group, images, nsfw, strict=True):
            if flagged:
                # The safety checker has already blacked this image out: report a block.
                results.append(ImageResult(request.index, None, None, blocked="NSFW",
                                           details=dict(details)))
                continue
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            results.append(ImageResult(request.index, buffer.getvalue(), "image/png",
                                       details=dict(details)))
        return results

    def _pixel_size(self, pipe: Any, width: int, height: int) -> tuple[int, int]:
        """``width``x``height`` rounded down to what the pipeline takes."""
        scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        # FLUX packs 2x2 latent patches, so it needs twice the VAE's factor.
        multiple = max(8, scale * 2 if self.spec().is_flux else scale)
        w, h = width - width % multiple, height - height % multiple
        if w < MIN_SIDE or h < MIN_SIDE:
            raise InvalidInput(f"size {width}x{height}: too small for {self.model} "
                               f"(each side at least {MIN_SIDE} px, a multiple of {multiple})")
        return w, h


# -- helpers ----------------------------------------------------------------------------


def _import_heavy() -> tuple[Any, Any]:
    """(torch, diffusers), with the Hugging Face hub offline."""
    _offline()
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise InvalidInput(f"the diffusers provider needs torch and diffusers ({exc})",
                           details=[INSTALL_HINT]) from None
    return torch, diffusers


def _offline() -> Any:
    """Put the Hugging Face hub offline and return ``huggingface_hub.constants``.

    ``local_files_only=True`` is not enough: huggingface_hub 2.x builds its request
    headers (even for a cache-only lookup) with a registry it fetches from the Hub unless
    ``constants.HF_HUB_OFFLINE`` is set. That constant is read from the environment once,
    at import, so it is set in both places: the variable for a first import (and child
    processes), the attribute for a module something else imported earlier.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants
    except ImportError as exc:
        raise InvalidInput(f"the diffusers provider needs huggingface_hub ({exc})",
                           details=[INSTALL_HINT]) from None
    constants.HF_HUB_OFFLINE = True
    return constants


def _locate(model: str) -> tuple[str, Path]:
    """(what to pass from_pretrained, the folder with model_index.json), or InvalidInput."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InvalidInput(f"--model {model}: a file; pass a diffusers pipeline folder "
                               "(one with model_index.json)", details=_how_to_get(None))
        if not (path / "model_index.json").is_file():
            raise InvalidInput(f"--model {model}: not a diffusers pipeline folder (no "
                               "model_index.json)", details=_how_to_get(None))
        return str(path), path
    if _looks_like_path(model):
        raise InvalidInput(f"--model {model}: no such folder", details=_how_to_get(None))
    constants = _offline()
    from huggingface_hub import try_to_load_from_cache

    try:
        index = try_to_load_from_cache(model, "model_index.json")
    except ValueError as exc:  # HFValidationError: not a valid id
        raise InvalidInput(f"--model {model}: not a folder here, nor a model id "
                           f"({_first_line(exc)})", details=_how_to_get(None)) from None
    if not isinstance(index, str):  # None, or the "known not to exist" sentinel
        raise InvalidInput(f"--model {model}: not downloaded (no such folder here, and not in "
                           f"the Hugging Face cache {constants.HF_HUB_CACHE}); canvascast "
                           "never downloads models", details=_how_to_get(model))
    return model, Path(index).parent


def _looks_like_path(model: str) -> bool:
    # A model id is "name" or "owner/name"; anything else the user typed is a path.
    return (model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1
            or model.endswith((".safetensors", ".ckpt")))


def _how_to_get(model_id: str | None) -> list[str]:
    model_id = model_id or "<model-id>"
    return [
        f"on a machine with internet: hf download {model_id} (huggingface_hub < 1.0: "
        f"huggingface-cli download {model_id}); then copy its Hugging Face cache "
        "(~/.cache/huggingface, or $HF_HOME) here",
        "or save a folder there: python -c \"from diffusers import DiffusionPipeline; "
        f"DiffusionPipeline.from_pretrained('{model_id}').save_pretrained('DIR')\"; then "
        "copy DIR here and pass --model DIR",
    ]


def _read_json(path: Path, model: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"--model {model}: cannot read {path.name}: "
                           f"{_first_line(exc)}") from None
    return data if isinstance(data, dict) else {}


def _family(model: str, class_name: str, index: dict[str, Any],
            folder: Path) -> tuple[str, int, float]:
    """(family, default steps, default guidance) from the class and config files."""
    name = model.lower()
    if class_name.startswith("Flux2"):
        # FLUX.2 klein ships step-distilled (4 steps; guidance is ignored there).
        return ("flux2-distilled", 4, 1.0) if index.get("is_distilled") else ("flux2", 50, 4.0)
    if class_name.startswith("Flux"):
        # schnell is timestep-distilled without a guidance embedding; dev has one.
        transformer = _read_json(folder / "transformer" / "config.json", model)
        if "schnell" in name or transformer.get("guidance_embeds") is False:
            return "flux-schnell", 4, 0.0
        return "flux-dev", 28, 3.5
    # SD(XL)-Turbo: adversarially distilled, no classifier-free guidance; its scheduler
    # (Euler ancestral, trailing timesteps) identifies it when the name does not.
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", model)
    if "turbo" in name or (scheduler.get("_class_name") == "EulerAncestralDiscreteScheduler"
                           and scheduler.get("timestep_spacing") == "trailing"):
        return "turbo", 4, 0.0
    return "default", DEFAULT_STEPS, DEFAULT_GUIDANCE


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def _is_oom(torch: Any, exc: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    # Older torch, mps and some kernels raise a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """No progress bars or advisory warnings from diffusers/transformers while loading
    (stdout/stderr belong to the CLI); settings restored afterwards."""
    modules = []
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    saved = [(m, m.get_verbosity(), m.is_progress_bar_enabled()) for m in modules]
    for module in modules:
        module.set_verbosity_error()
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()
