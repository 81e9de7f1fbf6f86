"""``canvascast cache``: the local result cache (renders, transcripts, images)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import JsonFlag
from canvascast_cli.cli.output import reporting
from canvascast_cli.errors import InvalidInput

app = typer.Typer(
    help="The local result cache: a job done before is never done again (renders, "
    "transcripts, images; capped by modal.toml's \\[cache] max_gb).", no_args_is_help=True)

KINDS = ("render", "transcript", "images")
GB = 1024 ** 3


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"--kind: {kind!r}; allowed: {', '.join(KINDS)}")
    return kind


def _cap(max_gb: float | None, application: Any) -> int:
    if max_gb is not None:
        if not 0 <= max_gb <= 100_000:
            raise InvalidInput(f"--max-gb: {max_gb:g}; allowed: 0 to 100000")
        return int(max_gb * GB)
    return int(application.local_config().settings.cache.max_gb * GB)


KindOption = Annotated[str | None, typer.Option(
    "--kind", metavar="KIND", help="Only render, transcript or images entries.")]


@app.command("list", short_help="Entries by kind with size, age, last use and hits.")
def list_entries(ctx: typer.Context, kind: KindOption = None,
                 json_output: JsonFlag = False) -> None:
    """List the cache's entries, least recently used first (the next to go), with the
    total against the cap."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cache.store import ResultCache

        kind = _kind(kind)
        cache = ResultCache()
        cap = _cap(None, application)
        entries = cache.entries(kind)
        now = time.time()
        total = sum(e.size for e in entries)
        kinds = {k: {"entries": sum(1 for e in entries if e.kind == k),
                     "bytes": sum(e.size for e in entries if e.kind == k)}
                 for k in ([kind] if kind else KINDS)}
        rows = [{"kind": e.kind, "key": e.key, "label": e.label, "bytes": e.size,
                 "created": e.created, "last_used": e.last_used, "hits": e.hits,
                 "files": sorted(e.files)} for e in entries]
        lines = [f"{e.kind:<10} {e.short}  {_size(e.size):>9}  age {_ago(now - e.created):>4}"
                 f"  used {_ago(now - e.last_used):>4} ago  {e.hits} hits  {e.label}"
                 for e in entries]
        lines.append(f"{len(entries)} entries, {_size(total)} of {_size(cap)} "
                     f"({cache.root})")
        out.data({"path": str(cache.root), "entries": rows, "kinds": kinds,
                  "total_bytes": total, "max_bytes": cap}, text="\n".join(lines))


@app.command("prune", short_help="Evict least recently used entries down to the cap.")
def prune(
    ctx: typer.Context,
    max_gb: Annotated[float | None, typer.Option(
        "--max-gb", metavar="N", help="Keep at most N GB \\[default: \\[cache] max_gb]")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Evict the least recently used entries until the cache holds at most the cap."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cache.store import ResultCache

        cap = _cap(max_gb, application)
        done = ResultCache().prune(cap)
        out.data({"removed": done.removed, "freed_bytes": done.freed_bytes,
                  "kept_bytes": done.kept_bytes, "max_bytes": cap,
                  "removed_keys": done.removed_keys},
                 text=f"Removed {done.removed} entries ({_size(done.freed_bytes)}); "
                 f"{_size(done.kept_bytes)} kept of {_size(cap)}")


@app.command("clear", short_help="Remove every entry (or one kind's).")
def clear(ctx: typer.Context, kind: KindOption = None, json_output: JsonFlag = False) -> None:
    """Remove the cache's entries: all of them, or only those of --kind."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cache.store import ResultCache

        kind = _kind(kind)
        done = ResultCache().clear(kind)
        out.data({"removed": done.removed, "freed_bytes": done.freed_bytes,
                  "kept_bytes": done.kept_bytes, "kind": kind},
                 text=f"Removed {done.removed} {kind or 'cache'} entries "
                 f"({_size(done.freed_bytes)})")


# ---------------------------------------------------------------------------------------
# What the job commands share: --no-cache, and the cache's part of their --json

NoCacheFlag = Annotated[bool, typer.Option(
    "--no-cache", help="Neither look up nor keep the result in the result cache (local, "
    "and the job API's); `canvascast cache list` shows what is kept.")]


def results_cache(application: Any, config: Any, no_cache: bool) -> tuple[Any, str | None]:
    """(the local ResultCache, None), or (None, why not): --no-cache, or [cache] enabled
    = false."""
    if no_cache:
        return None, "--no-cache"
    if not config.settings.cache.enabled:
        return None, "[cache] enabled = false"
    from canvascast_cli.cache.store import open_cache

    return open_cache(config.settings, warn=application.out.warn), None


def cache_report(state: str, key: str | None = None, reason: str | None = None,
                 remote: str | None = None) -> dict[str, Any]:
    """The cache fields of a job command's --json."""
    doc: dict[str, Any] = {"cache": state, "cache_key": key}
    if reason is not None:
        doc["cache_reason"] = reason
    if remote is not None:
        doc["remote_cache"] = remote
    return doc


def remote_cache_flag(remote_job: Any, fetch: Any, config: Any, no_cache: bool,
                      seen: list[str | None]) -> tuple[Any, Any]:
    """The remote job with the payload's cache flag (false for --no-cache or [cache]
    enabled = false), and a fetch that notes whether the job API's host had the result
    (its JobResult.cache)."""
    use = not no_cache and config.settings.cache.enabled
    if remote_job.payload is not None and not use:
        from dataclasses import replace

        remote_job = replace(remote_job,
                             payload=remote_job.payload.model_copy(update={"cache": False}))

    def fetched(backend: Any, status: Any) -> Any:
        seen.append(status.result.cache if status.result is not None else None)
        return fetch(backend, status)

    return remote_job, fetched
