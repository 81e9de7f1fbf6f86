"""The artifact store's interface, its object names, the folder store and ``open_store``.

An artifact is a result file (a video, an image, a transcript) kept where it can be
fetched later. Every store names objects by content::

    <prefix><sha256[:2]>/<sha256>/<name>

the sha256 makes a name mean one set of bytes (so storing the same file twice is one
cheap existence check, never a second upload), the file's own name (made safe) makes a
download land under a friendly name. Two stores share this interface:

- ``LocalStore``: a folder (``[storage] provider = "local"``); objects are copied in
  through a temporary name and a rename, so a reader never sees half a file; its
  "signed" URL is a ``file://`` URI, which needs no signature and never expires.
- ``SupabaseStore`` (``storage/supabase.py``): a Supabase Storage bucket.

``open_store`` builds the one the settings ask for. A leaf above the leaves: it imports
config, errors, paths, atomic, retry and the sha256 helpers of ``protocol``, nothing of
the CLI, the dispatcher, the server, the engines or ops.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from canvascast_cli import paths
from canvascast_cli.atomic import staged
from canvascast_cli.config import Settings, StorageConfig
from canvascast_cli.errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    from_os_error,
)
from canvascast_cli.protocol import CHUNK, check_sha256

if TYPE_CHECKING:
    from canvascast_cli.retry import RetryPolicy

Provider = Literal["local", "supabase"]

CACHE_SECONDS = 31_536_000  # a content-addressed object never changes: a year of caching
MAX_NAME = 200  # characters of the user's file name kept in an object's name
DASHBOARD_API = "Supabase dashboard -> Project Settings -> API"


@dataclass(frozen=True)
class StoredObject:
    """One artifact in a store.

    ``location``: the bucket (supabase) or the folder (local) it is in; ``object_path``:
    its name there; ``uploaded``: False when the object was there already (nothing was
    sent or copied)."""

    provider: Provider
    location: str
    object_path: str
    sha256: str
    size: int
    uploaded: bool


@runtime_checkable
class ArtifactStore(Protocol):
    """Where results are kept: put a file, get a link to it, fetch it back."""

    provider: Provider

    def put(self, path: Path, *, sha256: str, name: str,
            content_type: str | None = None) -> StoredObject:
        """Store the file at ``path`` (whose sha256 is ``sha256``) as ``name``; nothing is
        sent when the object is there already. The local file is never changed."""
        ...

    def signed_url(self, object_path: str, expires_in: int) -> str:
        """A URL anyone holding it can fetch the object from, for ``expires_in`` s."""
        ...

    def download(self, object_path: str, into: Path, *, sha256: str) -> None:
        """Fetch the object into the file ``into``; IntegrityError (and no file) when its
        bytes do not have ``sha256``."""
        ...

    def exists(self, object_path: str) -> bool:
        ...

    def close(self) -> None:
        ...


# ---------------------------------------------------------------------------------------
# Object names

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PREFIX = re.compile(r"^([A-Za-z0-9._-]+/)*$")


def safe_name(name: str) -> str:
    """``name``'s last part with anything but letters, digits, ``.``, ``_`` and ``-``
    turned into ``_`` (keys every store accepts, no folders, no dot segments)."""
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")
    if len(base) > MAX_NAME:
        stem, dot, suffix = base.rpartition(".")
        keep = f".{suffix}" if dot and stem and len(suffix) <= 16 else ""
        base = base[:MAX_NAME - len(keep)] + keep
    return base or "file"


def check_prefix(prefix: str, *, source: str = "[storage] prefix") -> str:
    """A folder inside the store: empty, or segments each ending in ``/`` (no ``.`` or
    ``..`` segment)."""
    segments = prefix.split("/")[:-1]
    if not _PREFIX.fullmatch(prefix) or any(s in (".", "..") for s in segments):
        raise InvalidInput(f"{source}: {prefix!r} must be empty or folder names ending in "
                           "'/' (letters, digits, '.', '_', '-'; no '.' or '..' folder), "
                           "e.g. 'renders/'")
    return prefix


def object_path(prefix: str, sha256: str, name: str) -> str:
    """``<prefix><sha256[:2]>/<sha256>/<name>``: where the bytes with ``sha256`` are kept."""
    sha = check_sha256(sha256)
    return f"{check_prefix(prefix)}{sha[:2]}/{sha}/{safe_name(name)}"


def check_object_path(key: str) -> str:
    """An object name a caller gives back (from a record): relative, no empty, ``.`` or
    ``..`` segment, no backslash."""
    parts = key.split("/")
    if (not key or key.startswith("/") or "\\" in key
            or any(p in ("", ".", "..") for p in parts)):
        raise InvalidInput(f"{key!r} is not an object path (like 'ab/<sha256>/video.mp4')")
    return key


def content_type_of(name: str, given: str | None = None) -> str:
    return given or mimetypes.guess_type(name)[0] or "application/octet-stream"


def local_size(path: Path) -> int:
    try:
        if not path.is_file():
            raise InvalidInput(f"{path}: not a file; nothing to store")
        return path.stat().st_size
    except OSError as exc:
        raise from_os_error(exc, "reading the file to store") from None


def copy_checked(source: Path, dest: Path, sha256: str, *, what: str) -> int:
    """Copy ``source`` to ``dest`` through a staged file, checking the sha256 on the way;
    IntegrityError (and nothing at ``dest``) when it differs. The size copied."""
    digest, size = hashlib.sha256(), 0
    try:
        with staged(dest) as tmp, source.open("rb") as src, tmp.open("wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            if digest.hexdigest() != sha256:
                raise IntegrityError(f"{what}: sha256 is {digest.hexdigest()}, not the "
                                     f"expected {sha256}; nothing was written")
    except OSError as exc:
        raise from_os_error(exc, what) from None
    return size


# ---------------------------------------------------------------------------------------
# A folder


class LocalStore:
    """The store on a folder: the same names, copies through a temporary name + rename.

    ``signed_url`` gives a ``file://`` URI: it works only on this machine, carries no
    signature and does not expire (``expires_in`` is checked, then ignored)."""

    provider: Provider = "local"

    def __init__(self, folder: Path, *, prefix: str = "") -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.folder)!r}, prefix={self.prefix!r})"

    def _path(self, key: str) -> Path:
        return self.folder / check_object_path(key)

    def put(self, path: Path, *, sha256: str, name: str,
            content_type: str | None = None) -> StoredObject:
        key = object_path(self.prefix, sha256, name)
        size = local_size(path)
        dest = self._path(key)
        found = self._stored(key, sha256, size)
        if found is None:
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise from_os_error(exc, "creating the artifact folder") from None
            size = copy_checked(path, dest, sha256, what=f"storing {path}")
        return StoredObject("local", str(self.folder), key, sha256, size,
                            uploaded=found is None)

    def _stored(self, key: str, sha256: str, size: int) -> StoredObject | None:
        dest = self._path(key)
        try:
            if dest.is_file() and dest.stat().st_size == size:
                return StoredObject("local", str(self.folder), key, sha256, size, False)
        except OSError:
            return None
        return None

    def signed_url(self, object_path: str, expires_in: int) -> str:
        check_expiry(expires_in)
        found = self._path(object_path)
        if not found.is_file():
            raise NotFound(f"{object_path}: not in the artifact folder {self.folder}")
        return found.as_uri()

    def download(self, object_path: str, into: Path, *, sha256: str) -> None:
        check_sha256(sha256)
        source = self._path(object_path)
        if not source.is_file():
            raise NotFound(f"{object_path}: not in the artifact folder {self.folder}")
        into = check_into(into)
        copy_checked(source, into, sha256, what=f"fetching {object_path}")

    def exists(self, object_path: str) -> bool:
        return self._path(object_path).is_file()

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_expiry(expires_in: int) -> int:
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in < 1:
        raise InvalidInput(f"a signed URL's expiry must be a whole number of seconds >= 1; "
                           f"got {expires_in!r}")
    return expires_in


def check_into(into: Path) -> Path:
    into = Path(into).expanduser().absolute()
    if into.is_dir():
        raise InvalidInput(f"{into} is a folder; give a file name to download into")
    if not into.parent.is_dir():
        raise InvalidInput(f"download folder {into.parent} does not exist")
    return into


# ---------------------------------------------------------------------------------------
# From the settings


def open_store(settings: Settings | StorageConfig, environ: Mapping[str, str], *,
               retry: RetryPolicy | None = None) -> ArtifactStore:
    """The store ``[storage]`` describes.

    supabase: the project's URL and key come from the variables ``url_env`` and
    ``key_env`` name (SUPABASE_URL, SUPABASE_SERVICE_KEY by default); a missing one is
    InvalidInput (exit 2) naming both. local: ``local_dir``, else the state folder's
    ``artifacts/``."""
    config = settings.storage if isinstance(settings, Settings) else settings
    if config.provider == "local":
        folder = (Path(config.local_dir).expanduser() if config.local_dir
                  else paths.state_dir() / "artifacts")
        return LocalStore(folder, prefix=config.prefix)
    url = (environ.get(config.url_env) or "").strip()
    key = (environ.get(config.key_env) or "").strip()
    missing = [name for name, value in ((config.url_env, url), (config.key_env, key))
               if not value]
    if missing:
        raise InvalidInput(
            f"[storage] provider = \"supabase\" needs {' and '.join(missing)} set: the "
            f"project's URL in {config.url_env} (https://<project-ref>.supabase.co) and "
            f"its service_role (secret) key in {config.key_env}, both from "
            f"{DASHBOARD_API}; or set [storage] provider = \"local\"")
    from canvascast_cli.storage.supabase import SupabaseStore, check_project_url

    return SupabaseStore(check_project_url(url, source=config.url_env), key,
                         config.bucket, config.prefix, retry=retry,
                         key_env=config.key_env, url_env=config.url_env)


__all__ = [
    "ArtifactStore",
    "LocalStore",
    "StoredObject",
    "check_object_path",
    "check_prefix",
    "object_path",
    "open_store",
    "safe_name",
]

