"""FLUX.1-schnell for the ``generate_images`` image, baked at build time.

``bake_flux`` runs once, as an image build step (``Image.run_function`` with the Hugging
Face token Secret), and puts the diffusers pipeline at a pinned commit into the image's
Hugging Face cache (``$HF_HUB_CACHE``). The image then turns the hub off
(``HF_HUB_OFFLINE=1``): canvascast's diffusers provider finds the model by its id in that
cache and never downloads anything on a request.

Imported by Modal's image builder on its own: standard library only at module level.
"""

from __future__ import annotations

import os
from pathlib import Path

FLUX_REPO = "black-forest-labs/FLUX.1-schnell"
FLUX_REVISION = "741f7c3ce8b383c54771c7003378a50191e9efe9"  # pinned commit of FLUX_REPO
HF_CACHE = "/models/hf"  # $HF_HUB_CACHE in the image
HF_SECRET = "huggingface-secret"  # a Modal Secret holding HF_TOKEN
# The repository also holds the single-file checkpoints for other tools (24 GB more);
# diffusers reads the per-component folders only.
FLUX_IGNORE = ("flux1-schnell.safetensors", "ae.safetensors", "*.md", "*.jpg", "*.jpeg",
               "*.png")


def bake_flux(repo: str = FLUX_REPO, revision: str = FLUX_REVISION,
              hub_cache: str = HF_CACHE, ignore: tuple[str, ...] = FLUX_IGNORE) -> None:
    """Download ``repo`` at ``revision`` into ``hub_cache`` and make it the cached "main".

    Offline lookups by id (``from_pretrained(id, local_files_only=True)``) resolve the
    ``main`` ref; a download by commit hash writes no ref, so the ref is written here,
    pointing at the pinned commit.
    """
    from huggingface_hub import snapshot_download

    token = os.environ.get("HF_TOKEN") or None
    snapshot_download(repo, revision=revision, cache_dir=hub_cache, token=token,
                      ignore_patterns=list(ignore))
    folder = Path(hub_cache) / ("models--" + repo.replace("/", "--"))
    if not (folder / "snapshots" / revision / "model_index.json").is_file():
        raise RuntimeError(f"{repo}@{revision}: no model_index.json (not a diffusers "
                           "pipeline?)")
    ref = folder / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(revision)
