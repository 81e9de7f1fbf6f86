"""Where submitted jobs run: the job table, and `canvascast serve`'s worker processes.

``Runner`` is what the job API needs from a host: ``submit``, ``status`` (optionally
waiting for a change, so clients long-poll instead of hammering), ``cancel``, and the
blobs its live jobs use (which retention must keep). On Modal the same interface is
served by ``fn.spawn`` / ``FunctionCall`` (``modal_functions/app.py``).

``LocalRunner`` keeps N worker processes (spawned once, engines imported and models kept
loaded between jobs — the local stand-in for warm Modal containers), hands each a job at a
time, and reads their progress and results from one queue. Everything a worker writes
lives under the server's own folder (``<root>/work``: one folder per job, and the
worker's temporary files), so nothing is left in /tmp and the server sweeps it:

- a worker that dies mid-job (killed, out of memory) fails that job as CONTAINER_CRASH
  (retryable), is replaced, and its job's folder is removed;
- cancelling a running job kills its worker's whole process group (ffmpeg included),
  removes its folder and starts a fresh worker;
- workers die with their server: each holds the read end of a "lifeline" pipe whose only
  write end is the server's, and a watchdog thread kills the worker's process group when
  it reads end-of-file — however the server ended, SIGKILL included;
- at start the server removes whatever a previous one left in ``<root>/work``, and the
  half-received uploads a killed one left in its blob store's spool (``<root>/tmp``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import shutil
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from canvascast_cli.errors import CanvasCastError, ContainerCrash, JobFailed, NotFound
from canvascast_cli.protocol import (
    FINISHED,
    ErrorBody,
    JobResult,
    JobState,
    JobStatus,
    Payload,
    Progress,
    check_job_id,
    parse_ref,
    payload_refs,
)

KEEP_FINISHED = 1000  # finished jobs remembered (results are blobs; this is the index)


class Runner(Protocol):
    def submit(self, function: str, payload: Payload) -> str: ...

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus: ...

    def cancel(self, job_id: str) -> JobStatus: ...

    def live_blobs(self) -> set[str]:
        """Blobs that queued and running jobs read: never pruned."""
        ...

    def close(self) -> None: ...


@dataclass
class Job:
    id: str
    function: str
    payload: Payload
    state: JobState = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: Progress | None = None
    result: JobResult | None = None
    error: ErrorBody | None = None
    worker: int | None = None

    def status(self) -> JobStatus:
        return JobStatus(
            id=self.id, function=self.function, state=self.state, created=self.created,
            started=self.started, finished=self.finished, progress=self.progress,
            queue_seconds=self.started - self.created if self.started is not None else None,
            result=self.result if self.state == "done" else None,
            error=self.error if self.state in ("failed", "cancelled") else None)


class JobTable:
    """Jobs by id, with a condition to wait on for changes (long polling)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.finished: deque[str] = deque()
        self.changed = threading.Condition()

    def add(self, job: Job) -> None:
        with self.changed:
            self.jobs[job.id] = job
            self.changed.notify_all()

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(check_job_id(job_id))
        if job is None:
            raise NotFound(f"no job {job_id!r} (unknown, or finished long ago)")
        return job

    def update(self, job: Job, **changes: Any) -> None:
        with self.changed:
            for key, value in changes.items():
                setattr(job, key, value)
            if job.state in FINISHED and job.finished is None:
                job.finished = time.time()
                self.finished.append(job.id)
                while len(self.finished) > KEEP_FINISHED:
                    self.jobs.pop(self.finished.popleft(), None)
            self.changed.notify_all()

    def wait(self, job: Job, seconds: float) -> JobStatus:
        """The job's status once it changes (or finishes), or after ``seconds``."""
        before = (job.state, job.progress and job.progress.done)
        deadline = time.monotonic() + max(0.0, seconds)
        with self.changed:
            while job.state not in FINISHED and (
                    job.state, job.progress and job.progress.done) == before:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return job.status()

    def live_blobs(self) -> set[str]:
        with self.changed:
            live = [job for job in self.jobs.values() if job.state not in FINISHED]
        return {blob[0] for job in live for blob in map(parse_ref, payload_refs(job.payload)
                                                         .values()) if blob}


class LocalRunner:
    """Jobs in ``workers`` long-lived processes (see the module docstring).

    ``private_urls``: let timeline image URLs reach private and loopback addresses (a
    dev loop on one machine); off, a worker fetches from public addresses only."""

    def __init__(self, root: Path, *, workers: int = 1, private_urls: bool = False) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.root = Path(root)
        self.work = self.root / "work"
        self.private_urls = private_urls
        shutil.rmtree(self.work, ignore_errors=True)  # what a killed server left behind
        self.work.mkdir(parents=True, exist_ok=True)
        _sweep_spool(self.root / "tmp")
        self.table = JobTable()
        self._ctx = multiprocessing.get_context("spawn")
        self._events: Any = self._ctx.Queue()
        self._pending: deque[Job] = deque()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._slots: list[_Slot] = [self._start(i) for i in range(workers)]
        self._monitor = threading.Thread(target=self._watch, name="job-monitor", daemon=True)
        self._monitor.start()

    # -- Runner ---------------------------------------------------------------------

    def submit(self, function: str, payload: Payload) -> str:
        job = Job(id=f"job-{uuid.uuid4().hex}", function=function, payload=payload)
        self.table.add(job)
        with self._lock:
            self._pending.append(job)
        self._dispatch()
        return job.id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        job = self.table.get(job_id)
        return self.table.wait(job, wait) if wait > 0 else job.status()

    def cancel(self, job_id: str) -> JobStatus:
        job = self.table.get(job_id)
        with self._lock:
            if job.state == "queued":
                self._pending = deque(j for j in self._pending if j.id != job_id)
            elif job.state == "running" and job.worker is not None:
                slot = self._slots[job.worker]
                slot.job = None
                self._replace(slot, job)
            else:
                return job.status()
        self.table.update(job, state="cancelled",
                          error=ErrorBody(code="CANCELLED", message="cancelled"))
        self._dispatch()
        return job.status()

    def live_blobs(self) -> set[str]:
        return self.table.live_blobs()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for slot in self._slots:
            _kill_group(slot.process)
            slot.lifeline.close()
        self._monitor.join(2.0)
        shutil.rmtree(self.work, ignore_errors=True)

    # -- workers --------------------------------------------------------------------

    def _start(self, index: int) -> _Slot:
        scratch = self.work / f"worker-{index}"
        shutil.rmtree(scratch, ignore_errors=True)  # a dead worker's temporary files
        scratch.mkdir(parents=True)
        receiver, sender = self._ctx.Pipe(duplex=False)
        alive_r, alive_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main, name=f"canvascast-worker-{index}", daemon=True,
            args=(index, receiver, self._events, alive_r, str(self.root), str(self.work),
                  str(scratch), self.private_urls))
        process.start()
        receiver.close()
        alive_r.close()
        return _Slot(index=index, process=process, inbox=sender, lifeline=alive_w)

    def _replace(self, slot: _Slot, job: Job | None) -> None:
        """Kill the slot's worker (and its ffmpeg), clear up after it, start another.
        Called with ``_lock`` held."""
        _kill_group(slot.process)
        slot.lifeline.close()
        if job is not None:
            shutil.rmtree(self.work / job.id, ignore_errors=True)
        if not self._closed.is_set():
            self._slots[slot.index] = self._start(slot.index)

    def _dispatch(self) -> None:
        with self._lock:
            for slot in self._slots:
                if slot.job is None and self._pending and not self._closed.is_set():
                    job = self._pending.popleft()
                    slot.job = job
                    self.table.update(job, state="running", started=time.time(),
                                      worker=slot.index)
                    slot.inbox.send((job.id, job.function,
                                     job.payload.model_dump(mode="json")))

    def _watch(self) -> None:
        """Read workers' events; notice workers that died. Ends when the runner closes."""
        while not self._closed.is_set():
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                self._reap()
                continue
            except (OSError, EOFError, ValueError):  # the queue went away at shutdown
                return
            self._handle(*event)

    def _handle(self, kind: str, index: int, job_id: str, body: Any) -> None:
        job = self.table.jobs.get(job_id)
        slot = self._slots[index]
        if job is None or slot.job is None or slot.job.id != job_id:
            return  # a late event of a cancelled job
        if kind == "progress":
            self.table.update(job, progress=Progress.model_validate(body))
            return
        with self._lock:
            slot.job = None
        if kind == "done":
            self.table.update(job, state="done", result=JobResult.model_validate(body))
        else:
            self.table.update(job, state="failed", error=ErrorBody.model_validate(body))
        self._dispatch()

    def _reap(self) -> None:
        with self._lock:
            for slot in list(self._slots):
                if slot.process.is_alive() or self._closed.is_set():
                    continue
                job, slot.job = slot.job, None
                code = slot.process.exitcode
                self._replace(slot, job)
                if job is not None and job.state == "running":
                    crash = ContainerCrash(f"the worker running {job.function} died (exit "
                                           f"status {code})")
                    self.table.update(job, state="failed", error=ErrorBody.of(crash))
        self._dispatch()


@dataclass
class _Slot:
    index: int
    process: Any
    inbox: Any
    lifeline: Any  # the write end of the worker's lifeline: closing it ends the worker
    job: Job | None = None


def _sweep_spool(spool: Path) -> None:
    """Remove the partial files a killed server left in its blob store's spool (uploads
    cut off, results being stored): never blobs, and nothing any live writer holds — a
    server starts before it takes a request."""
    from canvascast_cli.server.blobs import PARTIAL_PATTERNS

    for pattern in PARTIAL_PATTERNS:
        for partial in spool.glob(pattern):
            with contextlib.suppress(OSError):
                partial.unlink()


def _kill_group(process: Any) -> None:
    if process.pid is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the worker leads its own group
    except (ProcessLookupError, PermissionError):
        if process.is_alive():
            process.kill()
    process.join(5)


def _watch_lifeline(lifeline: Any) -> None:
    """In a worker: block on the lifeline; end-of-file means the server is gone, and
    this worker's whole process group (ffmpeg included) goes with it."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _worker_main(index: int, inbox: Any, events: Any, lifeline: Any, store_root: str,
                 work_root: str, scratch: str, private_urls: bool) -> None:
    """A worker process: its own process group (so a cancel takes ffmpeg too) tied to the
    server's life, temporary files in its own folder, engines imported and models kept
    loaded between jobs, then one job at a time until the inbox closes."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `serve` is the parent's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_watch_lifeline, args=(lifeline,), daemon=True,
                     name="lifeline").start()
    import tempfile

    os.environ["TMPDIR"] = scratch  # ffmpeg and the engines' temporary folders
    tempfile.tempdir = scratch
    from canvascast_cli.engines.cache import ModelCache
    from canvascast_cli.server.blobs import BlobStore
    from canvascast_cli.server.work import execute

    store = BlobStore(Path(store_root))
    models = ModelCache()
    while True:
        try:
            job_id, function, payload = inbox.recv()
        except (EOFError, OSError):
            return

        def progress(done: float, total: float, unit: str, job_id: str = job_id) -> None:
            events.put(("progress", index, job_id, {"done": done, "total": total,
                                                    "unit": unit}))

        try:
            result = execute(function, payload, store, progress,
                             workdir=Path(work_root) / job_id, models=models,
                             private_urls=private_urls)
        except CanvasCastError as exc:
            events.put(("failed", index, job_id, exc.to_dict()))
        except Exception as exc:
            error = JobFailed(f"{function} failed: {type(exc).__name__}: {exc}")
            events.put(("failed", index, job_id, error.to_dict()))
        else:
            events.put(("done", index, job_id, result.model_dump(mode="json")))

