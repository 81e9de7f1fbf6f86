"""``canvascast images``: prompts + style -> images, with a JSON sidecar each."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from canvascast_cli.cli.cache_cmd import NoCacheFlag, cache_report, results_cache
from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import (
    BackendName,
    BackendOption,
    JsonFlag,
    LocalFlag,
    OverwriteFlag,
    RemoteFlag,
)
from canvascast_cli.cli.output import reporting
from canvascast_cli.cli.uploads import UploadFlag, open_upload_store, upload_files, wanted
from canvascast_cli.errors import EXIT_CODES_HELP, InvalidInput


class ProviderName(enum.StrEnum):
    gemini = "gemini"
    diffusers = "diffusers"
    placeholder = "placeholder"


IMAGES_HELP = ("Generate one image per prompt (gemini, diffusers or offline placeholder "
               f"cards), each with a JSON sidecar.\n\n{EXIT_CODES_HELP}")


def images_command(
    ctx: typer.Context,
    prompts: Annotated[list[str] | None, typer.Argument(
        metavar="PROMPT...", help="One image per prompt, in order.", show_default=False)
    ] = None,
    prompts_file: Annotated[Path | None, typer.Option(
        "--prompts-file", metavar="FILE", help="More prompts, one per line (# comments).")
    ] = None,
    style: Annotated[Path | None, typer.Option(
        "--style", metavar="STYLE.json", help="Style file (see docs/images.md).")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", metavar="NAME", help="Built-in style: cinematic, watercolor, flat, "
        "photo, storybook.")] = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="DIR", help="Folder for the images and sidecars.")
    ] = Path("images"),
    provider: Annotated[ProviderName | None, typer.Option(
        case_sensitive=False, help="\\[default: gemini when GEMINI_API_KEY is set, else "
        "placeholder]", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        metavar="ID_OR_PATH", help="Model id or local path \\[default: per provider]")
    ] = None,
    seed: Annotated[int | None, typer.Option(
        min=0, max=2**31 - 1, help="Base seed: image i gets seed + i \\[default: random, "
        "recorded]")] = None,
    size: Annotated[str | None, typer.Option(
        metavar="WxH", help="Pixel size (providers that take one).")] = None,
    aspect: Annotated[str | None, typer.Option(
        metavar="W:H", help="Aspect ratio, e.g. 16:9 \\[default: the style's, else 16:9]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, max=64, help="Prompts per batch \\[default: modal.toml's, 5]")] = None,
    local: LocalFlag = False,
    remote: RemoteFlag = False,
    backend: BackendOption = BackendName.auto,
    overwrite: OverwriteFlag = False,
    no_cache: NoCacheFlag = False,
    upload: UploadFlag = None,
    json_output: JsonFlag = False,
) -> None:
    application = command_app(ctx, json_output)
    out, services = application.out, application.services
    with reporting(out):
        from canvascast_cli.config import function_cost_per_second
        from canvascast_cli.engines.images.job import plan_images, run_images
        from canvascast_cli.engines.images.style import StyleConfig, load_style
        from canvascast_cli.engines.images.style import preset as builtin

        all_prompts = list(prompts or [])
        if prompts_file is not None:
            all_prompts += _read_prompts(prompts_file)
        if style is not None and preset is not None:
            raise InvalidInput("--style and --preset: give one (a style file can name a "
                               "preset to start from)")
        chosen_style = (load_style(style) if style is not None
                        else builtin(preset) if preset is not None else StyleConfig())
        from canvascast_cli.cli.remote import make_dispatcher, plan_backend

        choice, config = plan_backend(application, backend.value, local=local, remote=remote)
        store = (open_upload_store(application, config.settings)
                 if wanted(upload, config.settings) else None)  # its settings: exit 2 now
        fn = config.settings.functions.generate_images
        job = plan_images(
            all_prompts, chosen_style, output_dir=output,
            provider=provider.value if provider is not None else None, model=model,
            seed=seed, size=size, aspect=aspect,
            batch_size=batch_size or fn.batch_size or 5, overwrite=overwrite,
            environ=services.environ if services.environ is not None else os.environ)
        if provider is None:
            out.note(f"provider: {job.provider}" + ("" if job.provider == "gemini" else
                     " (set GEMINI_API_KEY or pass --provider for real images)"))

        def local_provider() -> Any:
            return services.image_provider(job.provider, job.model,
                                           palette=chosen_style.palette or None,
                                           notify=out.note, sleep=services.sleep)

        from canvascast_cli.cache.keys import DETERMINISTIC

        cache, cache_reason = results_cache(application, config, no_cache)
        seeded = seed is not None or chosen_style.seed is not None
        if cache is not None and job.provider not in DETERMINISTIC and not seeded:
            cache, cache_reason = None, f"{job.provider}: no --seed (it cannot make the " \
                "same image again from a seed; give --seed to cache)"
            out.note(f"{job.provider}: not cached (no --seed)")
        engine: Any
        if choice.name == "local":
            engine = local_provider()
        else:
            from canvascast_cli.dispatch.remote_jobs import DispatchedProvider

            dispatched = DispatchedProvider if cache is not None else _uncached
            engine = dispatched(job.provider, job.model, chosen_style.palette or None,
                                make_dispatcher(application, choice, config,
                                                remote_only=remote),
                                local_provider)
        if cache is not None:
            engine = CachedImages(engine, cache, chosen_style.palette or None)
        requests = job.requests(negative=engine.supports_negative_prompt)
        per_image = [engine.cost_per_image(r) for r in requests]
        plan = (f"{len(requests)} images with {engine.name} ({engine.model}), "
                f"{job.width}x{job.height} ({job.aspect_ratio}), seed {job.seed}, batches of "
                f"{job.batch_size}")
        if all(c is not None for c in per_image):
            plan += f"; estimated cost ${sum(c or 0.0 for c in per_image):.3f}"
        out.note(plan)

        def on_split(size: int, half: int) -> None:
            out.warn(f"GPU out of memory on a batch of {size}; retrying in batches of {half}")

        bar = out.progress()
        if bar is None:
            result = run_images(job, engine, on_split=on_split)
        else:
            with bar:
                task = bar.add_task("images", total=len(requests), rate="")
                result = run_images(job, engine, on_split=on_split,
                                    progress=lambda done, _all: bar.update(task, completed=done))

        modal_usd = result.generation_seconds * function_cost_per_second(
            config.settings, "generate_images")
        for record in result.failed:
            out.warn(f"image {record.index + 1} blocked: {record.safety.get('reason')}")
        billing = f"; cost ${result.cost_usd:.3f}" if result.cost_usd else ""
        if result.generation_seconds:
            billing += (f"; {result.generation_seconds:.1f} s of generation, about "
                        f"${modal_usd:.4f} on Modal ({fn.gpu or 'CPU'})")
        records = result.records
        out.note(f"[green]Wrote[/green] {len(records) - len(result.failed)} of {len(records)} "
                 f"images to {output}/{billing}")
        outcomes = getattr(engine, "outcomes", [])
        where = _where(outcomes, choice.name)
        if isinstance(engine, CachedImages):
            if engine.hits:
                out.note(f"{engine.hits} of {len(requests)} images from the cache "
                         "(--no-cache generates them again)")
            where.update(cache_report("hit" if engine.hits and not engine.misses else "miss"),
                         cache_hits=engine.hits)
            if not engine.misses and not outcomes:
                where["backend"] = "cache"
        else:
            where.update(cache_report("off", reason=cache_reason), cache_hits=0)
        from canvascast_cli.records import dump

        if store is not None:
            where["uploads"] = upload_files(application, store, config.settings,
                                            [Path(r.file) for r in records if r.file])
        out.data({"images": [dump(r) for r in records], "output": str(output),
                  "provider": engine.name, "model": engine.model, "seed": job.seed,
                  "failed": len(result.failed), "cost_usd": result.cost_usd,
                  "generation_seconds": result.generation_seconds,
                  "modal_equivalent_usd": modal_usd, **where},
                 text="\n".join(r.file for r in records if r.file))
        if result.failed:
            raise typer.Exit(1)


def _read_prompts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InvalidInput(f"--prompts-file: {path}: file not found") from None
    except IsADirectoryError:
        raise InvalidInput(f"--prompts-file: {path}: is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--prompts-file: {path}: cannot read ({exc})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _where(outcomes: list[Any], chosen: str) -> dict[str, Any]:
    """Where the batches ran, for --json: the backend, and any fallback."""
    if not outcomes:
        return {"backend": chosen, "fallback": None}
    backends = sorted({o.backend for o in outcomes})
    fallback = next((o.fallback for o in outcomes if o.fallback), None)
    return {"backend": backends[0] if len(backends) == 1 else backends, "fallback": fallback,
            "job_ids": [o.job_id for o in outcomes if o.job_id],
            "remote_usd": sum(o.actual_usd or 0.0 for o in outcomes)}


class CachedImages:
    """An images provider with the local result cache in front: each image is looked up
    by its key (``cache.keys.image_key``) before the batch goes to ``inner``, and each one
    made is kept. A hit's sidecar details say ``"cache": "hit"``; a hit costs nothing."""

    def __init__(self, inner: Any, cache: Any, palette: list[str] | None) -> None:
        self.inner, self._cache, self._palette = inner, cache, palette
        self.name, self.model = inner.name, inner.model
        self.supports_negative_prompt = inner.supports_negative_prompt
        self.hits = self.misses = 0

    @property
    def outcomes(self) -> list[Any]:
        return list(getattr(self.inner, "outcomes", []))

    def key(self, request: Any) -> str:
        from canvascast_cli.cache.keys import request_key

        return request_key(self.name, self.model, self._palette, request)

    def cost_per_image(self, request: Any) -> float | None:
        if self._cache.contains("images", self.key(request)):
            return 0.0
        return self.inner.cost_per_image(request)

    def generate(self, batch: list[Any]) -> list[Any]:
        from canvascast_cli.engines.images.base import ImageResult

        found: dict[int, Any] = {}
        todo = []
        for request in batch:
            entry = self._cache.lookup("images", self.key(request))
            if entry is None:
                todo.append(request)
                continue
            self.hits += 1
            found[request.index] = ImageResult(
                request.index, entry.files["image"].read_bytes(), entry.data.get("mime_type"),
                details={**entry.data.get("details", {}), "cache": "hit"})
        if todo:
            for request, result in zip(todo, self.inner.generate(todo), strict=True):
                self.misses += 1
                found[request.index] = result
                if result.data is not None:
                    details = {k: v for k, v in result.details.items()
                               if k not in ("seconds", "batch_images")}  # this run's time
                    self._cache.store("images", self.key(request), {"image": result.data},
                                      data={"mime_type": result.mime_type,
                                            "details": details},
                                      label=f"{self.name}: {request.prompt[:60]}")
        return [found[r.index] for r in batch]


def _uncached_dispatched() -> Any:
    from dataclasses import replace

    from canvascast_cli.dispatch.remote_jobs import DispatchedProvider, images_remote

    class Uncached(DispatchedProvider):
        """Batches sent with ``cache: false``: the job API's host neither looks up nor
        keeps them (--no-cache, or a provider whose images a seed does not fix)."""

        def generate(self, batch: list[Any]) -> list[Any]:
            remote, fetch = images_remote(batch, self.name, self.model, self._palette)
            assert remote.payload is not None
            remote = replace(remote, payload=remote.payload.model_copy(update={"cache": False}))
            outcome = self._dispatcher.run(remote, local=lambda: self._local_provider(
                ).generate(batch), fetch=fetch)
            self.outcomes.append(outcome)
            return list(outcome.value)

    return Uncached


def _uncached(*args: Any) -> Any:
    return _uncached_dispatched()(*args)
