"""Where results are kept: Supabase Storage or a folder, named by content (``store``)."""

from canvascast_cli.storage.store import (
    ArtifactStore,
    LocalStore,
    StoredObject,
    check_object_path,
    object_path,
    open_store,
    safe_name,
)


def __getattr__(name: str) -> object:
    # SupabaseStore on first use: importing the package never imports supabase.
    if name == "SupabaseStore":
        from canvascast_cli.storage.supabase import SupabaseStore

        return SupabaseStore
    raise AttributeError(name)


__all__ = [
    "ArtifactStore",
    "LocalStore",
    "StoredObject",
    "SupabaseStore",
    "check_object_path",
    "object_path",
    "open_store",
    "safe_name",
]
