"""Result caches: the same job is never done twice.

``keys``: what a result depends on, hashed (one module, imported by the client and by
the job API's hosts, so the same job has the same key on both sides). ``store``: the
local cache under ``paths.cache_dir()/results`` (``canvascast cache list|prune|clear``).
The job API's host keeps its own entries beside its blobs (``server.work``).
"""
