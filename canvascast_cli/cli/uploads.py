"""``--upload``: each result of a job into the artifact store, with a signed URL.

The store is ``[storage]``'s (``canvascast_cli.storage``): Supabase Storage, or a folder.
It is opened before the job runs, so a missing key or bucket setting is exit 2 at once,
not after a long render. Objects are named by content, so uploading the same result
again is one existence check. An upload runs after the result is written, and a failed
one never touches it: the error says the file is there and only the upload failed.

A remote job may have uploaded its result from its container already (the job API's
host has its own credentials): then nothing is sent from here, and the object the job
reports is signed and shown like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from canvascast_cli.cli.context import Application

if TYPE_CHECKING:
    from canvascast_cli.config import Settings
    from canvascast_cli.storage import ArtifactStore

UploadFlag = Annotated[bool | None, typer.Option(
    "--upload/--no-upload", show_default=False,
    help="Upload each result to the artifact store (\\[storage] in modal.toml: Supabase "
    "Storage or a folder) and print its object path and a signed URL. \\[default: "
    "\\[storage] upload]")]


def wanted(flag: bool | None, settings: Settings) -> bool:
    """``--upload``/``--no-upload``, else modal.toml's ``[storage] upload``."""
    return settings.storage.upload if flag is None else flag


def open_upload_store(application: Application, settings: Settings) -> ArtifactStore:
    """The store uploads go to, opened (and its settings checked) before any work."""
    from canvascast_cli.cli.remote import environ_of
    from canvascast_cli.retry import RetryPolicy
    from canvascast_cli.storage import open_store

    return open_store(settings, environ_of(application),
                      retry=RetryPolicy(sleep=application.services.sleep))


def upload_files(application: Application, store: ArtifactStore, settings: Settings,
                 files: Iterable[Path], *, reported: dict[str, Any] | None = None,
                 ) -> list[dict[str, Any]]:
    """Upload ``files`` (written already) and sign each: the records ``--json`` shows.
    ``reported``: objects a remote job uploaded itself, by sha256 (not sent again)."""
    from canvascast_cli.errors import CanvasCastError
    from canvascast_cli.protocol import sha256_file

    out = application.out
    expiry = settings.storage.signed_url_expiry
    records: list[dict[str, Any]] = []
    for path in files:
        try:
            sha, _size = sha256_file(path)
            known = (reported or {}).get(sha)
            if known is not None:
                object_path, location, size, uploaded = (
                    known["object_path"], known["location"], known["size"], False)
                by = "by the remote job"
            else:
                stored = store.put(path, sha256=sha, name=path.name)
                object_path, location, size, uploaded = (
                    stored.object_path, stored.location, stored.size, stored.uploaded)
                by = "" if stored.uploaded else "(already there)"
            url = store.signed_url(object_path, expiry)
        except CanvasCastError as exc:
            raise exc.rewritten(_written(path)) from None
        records.append({"file": str(path), "provider": store.provider, "location": location,
                        "object_path": object_path, "sha256": sha, "size": size,
                        "uploaded": uploaded, "signed_url": url,
                        "expires_at": round(time.time() + expiry)})
        out.note(f"[green]Uploaded[/green] {path.name} -> {store.provider}:{location}/"
                 f"{object_path} {by}".rstrip())
        if store.provider == "local":
            out.note(f"  URL: {url}")
        else:
            out.note(f"  signed URL (valid {_duration(expiry)}): {url}")
    return records


def remote_upload(remote_job: Any, fetch: Any, store: ArtifactStore | None,
                  reported: dict[str, Any]) -> tuple[Any, Any]:
    """The remote job asking its host to upload the artifacts itself (a Supabase bucket
    only: a folder store is this machine's), and a fetch that notes which it uploaded
    into ``reported`` (by sha256), so ``upload_files`` sends none of them again. A host
    without credentials, or with another bucket, uploads nothing: this client does."""
    if store is None or store.provider != "supabase" or remote_job.payload is None:
        return remote_job, fetch
    from dataclasses import replace

    bucket = getattr(store, "bucket", None)
    remote_job = replace(remote_job,
                         payload=remote_job.payload.model_copy(update={"upload": True}))

    def fetched(backend: Any, status: Any) -> Any:
        for artifact in status.result.artifacts if status.result is not None else []:
            stored = artifact.stored
            if stored is not None and (stored.provider, stored.location) == ("supabase",
                                                                              bucket):
                reported[artifact.sha256] = {"object_path": stored.object_path,
                                             "location": stored.location,
                                             "size": artifact.size}
        return fetch(backend, status)

    return remote_job, fetched


def _written(path: Path) -> Callable[[str], str]:
    return lambda text: f"{path} is written; uploading it failed: {text}"


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
