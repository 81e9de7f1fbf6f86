"""``canvascast images``: prompts + style -> images, with a JSON sidecar each."""

from __future__ import annotations

import enum
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from canvascast_cli.cli.output import get_output, reporting
from canvascast_cli.errors import EXIT_CODES_HELP, CanvasCastError, InvalidInput


class ProviderName(enum.StrEnum):
    gemini = "gemini"
    diffusers = "diffusers"
    placeholder = "placeholder"


IMAGES_HELP = ("Generate one image per prompt (gemini, diffusers or offline placeholder "
               f"cards), each with a JSON sidecar.\n\n{EXIT_CODES_HELP}")
DEFAULT_MODELS = {
    "gemini": "gemini-3.1-flash-image",
    "diffusers": "black-forest-labs/FLUX.1-schnell",
    "placeholder": "placeholder-card-v1",
}
LONG_SIDE = {"gemini": 1344, "diffusers": 1024, "placeholder": 1920}


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
    local: Annotated[bool, typer.Option(
        "--local", help="Run on this machine (the default until a remote is configured).")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")
                         ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")
                           ] = False,
) -> None:
    out = get_output(ctx, json_output)
    with reporting(out):
        from canvascast_cli.config import function_cost_per_second, load_config
        from canvascast_cli.engines.images import pipeline
        from canvascast_cli.engines.images.style import StyleConfig, load_style, resolve_size
        from canvascast_cli.engines.images.style import preset as builtin

        all_prompts = list(prompts or [])
        if prompts_file is not None:
            all_prompts += _read_prompts(prompts_file)
        all_prompts = pipeline.check_prompts(all_prompts)
        if style is not None and preset is not None:
            raise InvalidInput("--style and --preset: give one (a style file can name a "
                               "preset to start from)")
        chosen_style = (load_style(style) if style is not None
                        else builtin(preset) if preset is not None else StyleConfig())
        config = load_config(ctx.meta.get("config_path"))
        fn = config.settings.functions.generate_images
        per_batch = batch_size or fn.batch_size or 5
        has_key = bool(os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"))
        name = (provider.value if provider is not None
                else "gemini" if has_key else "placeholder")
        if provider is None:
            out.note(f"provider: {name}" + ("" if name == "gemini" else
                     " (set GEMINI_API_KEY or pass --provider for real images)"))
        width, height, ratio = resolve_size(chosen_style, size, aspect, LONG_SIDE[name])
        base_seed = seed if seed is not None else (
            chosen_style.seed if chosen_style.seed is not None else secrets.randbelow(2**31))
        pipeline.check_destination(output, all_prompts, overwrite)
        engine = _make_provider(name, model or DEFAULT_MODELS[name], chosen_style, out.note)
        requests = pipeline.build_requests(
            all_prompts, chosen_style, seed=base_seed, width=width, height=height,
            aspect_ratio=ratio, negative=engine.supports_negative_prompt)
        del local  # only the local backend exists so far

        per_image = [engine.cost_per_image(r) for r in requests]
        if all(c is not None for c in per_image):
            estimate = sum(c for c in per_image if c is not None)
            out.note(f"{len(requests)} images with {engine.name} ({engine.model}), "
                     f"{width}x{height} ({ratio}), seed {base_seed}, batches of {per_batch}; "
                     f"estimated cost ${estimate:.3f}")
        else:
            out.note(f"{len(requests)} images with {engine.name} ({engine.model}), "
                     f"{width}x{height} ({ratio}), seed {base_seed}, batches of {per_batch}")

        records = _generate(out, engine, requests, all_prompts, output, per_batch)
        failed = [r for r in records if not r.ok]
        cost = sum(c for r, c in zip(records, per_image, strict=True) if r.ok and c)
        # Providers billed by time (diffusers) report seconds per batch: what the same work
        # would cost on Modal with [functions.generate_images]'s GPU, for comparison.
        busy = sum(float(r.details.get("seconds", 0)) / int(r.details.get("batch_images", 1))
                   for r in records if "seconds" in r.details)
        modal_usd = busy * function_cost_per_second(config.settings, "generate_images")
        for record in failed:
            out.warn(f"image {record.index + 1} blocked: {record.safety.get('reason')}")
        billing = f"; cost ${cost:.3f}" if cost else ""
        if busy:
            billing += (f"; {busy:.1f} s of generation, about ${modal_usd:.4f} on Modal "
                        f"({fn.gpu or 'CPU'})")
        out.note(f"[green]Wrote[/green] {len(records) - len(failed)} of {len(records)} images "
                 f"to {output}/{billing}")
        out.data({"images": [r.to_dict() for r in records], "output": str(output),
                  "provider": engine.name, "model": engine.model, "seed": base_seed,
                  "failed": len(failed), "cost_usd": round(cost, 4),
                  "generation_seconds": round(busy, 3),
                  "modal_equivalent_usd": round(modal_usd, 6)},
                 text="\n".join(r.file for r in records if r.file))
        if failed:
            raise typer.Exit(1)


def _read_prompts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidInput(f"--prompts-file: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--prompts-file: {path}: cannot read ({exc})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _make_provider(name: str, model: str, style, note):  # type: ignore[no-untyped-def]
    if name == "placeholder":
        from canvascast_cli.engines.images.placeholder import PlaceholderProvider

        return PlaceholderProvider(palette=style.palette or None)
    if name == "gemini":
        from canvascast_cli.engines.images.gemini import GeminiProvider

        return GeminiProvider.from_environment(model)
    from canvascast_cli.engines.images.diffusers_provider import DiffusersProvider

    return DiffusersProvider(model, notify=note)


def _generate(out, engine, requests, prompts, folder, per_batch):  # type: ignore[no-untyped-def]
    from canvascast_cli.engines.images import pipeline

    records = []
    progress = out.progress()

    def on_split(size: int, half: int) -> None:
        out.warn(f"GPU out of memory on a batch of {size}; retrying in batches of {half}")

    def run(advance) -> None:  # type: ignore[no-untyped-def]
        for batch in pipeline.batches(requests, per_batch):
            try:
                results = pipeline.generate_batch(engine, batch, on_split)
            except CanvasCastError:
                raise
            for request, result in zip(batch, results, strict=True):
                records.append(pipeline.write_result(folder, prompts[request.index], request,
                                                     result, engine))
                advance()

    if progress is None:
        run(lambda: None)
        return records
    with progress:
        task = progress.add_task("images", total=len(requests), rate="")
        run(lambda: progress.advance(task))
    return records
