"""Where submitted jobs run: the job table, and `canvascast serve`'s worker processes.

``Runner`` is what the job API needs from a host: ``submit``, ``status`` (optionally
waiting for a change, so clients long-poll instead of hammering), ``cancel``.
``LocalRunner`` keeps N worker processes (spawned once, engines imported once — the
local stand-in for warm Modal containers), hands each a job at a time, and reads their
progress and results from one queue. A worker that dies mid-job (killed, out of memory)
fails that job as CONTAINER_CRASH (retryable) and is replaced; cancelling a running job
kills its worker's whole process group (ffmpeg included) and starts a fresh one.
On Modal the same interface is served by ``fn.spawn`` / ``FunctionCall`` (see
``modal_functions/app.py``).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from canvascast_cli.errors import CanvasCastError, ContainerCrash, JobFailed, NotFound

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
KEEP_FINISHED = 1000  # finished jobs remembered (results are blobs; this is the index)


class Runner(Protocol):
    def submit(self, function: str, payload: dict[str, Any]) -> str: ...

    def status(self, job_id: str, wait: float = 0.0) -> dict[str, Any]: ...

    def cancel(self, job_id: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class Job:
    id: str
    function: str
    payload: dict[str, Any]
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    worker: int | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "function": self.function, "state": self.state,
                                "created": self.created, "started": self.started,
                                "finished": self.finished, "progress": self.progress}
        if self.started is not None:
            body["queue_seconds"] = self.started - self.created
        if self.state == "done":
            body["result"] = self.result
        if self.state in ("failed", "cancelled"):
            body["error"] = self.error
        return body


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
        job = self.jobs.get(job_id)
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

    def wait(self, job: Job, seconds: float) -> dict[str, Any]:
        """The job's status once it changes (or finishes), or after ``seconds``."""
        before = (job.state, job.progress and job.progress.get("done"))
        deadline = time.monotonic() + max(0.0, seconds)
        with self.changed:
            while job.state not in FINISHED and (
                    job.state, job.progress and job.progress.get("done")) == before:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return job.to_dict()


class LocalRunner:
    """Jobs in ``workers`` long-lived processes (see the module docstring)."""

    def __init__(self, store_root: Path, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.store_root = Path(store_root)
        self.table = JobTable()
        self._ctx = multiprocessing.get_context("spawn")
        self._events: Any = self._ctx.Queue()
        self._pending: deque[Job] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._slots: list[_Slot] = [self._start(i) for i in range(workers)]
        self._monitor = threading.Thread(target=self._watch, name="job-monitor", daemon=True)
        self._monitor.start()

    # -- Runner ---------------------------------------------------------------------

    def submit(self, function: str, payload: dict[str, Any]) -> str:
        job = Job(id=f"job-{uuid.uuid4().hex}", function=function, payload=payload)
        self.table.add(job)
        with self._lock:
            self._pending.append(job)
        self._dispatch()
        return job.id

    def status(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        job = self.table.get(job_id)
        return self.table.wait(job, wait) if wait > 0 else job.to_dict()

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.table.get(job_id)
        with self._lock:
            if job.state == "queued":
                self._pending = deque(j for j in self._pending if j.id != job_id)
            elif job.state == "running" and job.worker is not None:
                slot = self._slots[job.worker]
                slot.job = None
                _kill_group(slot.process)
                self._slots[job.worker] = self._start(job.worker)
            else:
                return job.to_dict()
        self.table.update(job, state="cancelled",
                          error={"code": "CANCELLED", "message": "cancelled", "retryable": False})
        self._dispatch()
        return job.to_dict()

    def close(self) -> None:
        self._closed = True
        for slot in self._slots:
            if slot.process.is_alive():
                _kill_group(slot.process)
        self._events.put(None)

    # -- workers --------------------------------------------------------------------

    def _start(self, index: int) -> _Slot:
        receiver, sender = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_worker_main,
                                    args=(index, receiver, self._events, str(self.store_root)),
                                    name=f"canvascast-worker-{index}", daemon=True)
        process.start()
        receiver.close()
        return _Slot(index=index, process=process, inbox=sender)

    def _dispatch(self) -> None:
        with self._lock:
            for slot in self._slots:
                if slot.job is None and self._pending:
                    job = self._pending.popleft()
                    slot.job = job
                    self.table.update(job, state="running", started=time.time(),
                                      worker=slot.index)
                    slot.inbox.send((job.id, job.function, job.payload))

    def _watch(self) -> None:
        """Read workers' events; notice workers that died."""
        while not self._closed:
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                self._reap()
                continue
            if event is None:
                return
            kind, index, job_id, body = event
            job = self.table.jobs.get(job_id)
            slot = self._slots[index]
            if job is None or slot.job is None or slot.job.id != job_id:
                continue  # a late event of a cancelled job
            if kind == "progress":
                self.table.update(job, progress=body)
                continue
            with self._lock:
                slot.job = None
            if kind == "done":
                self.table.update(job, state="done", result=body)
            else:
                self.table.update(job, state="failed", error=body)
            self._dispatch()

    def _reap(self) -> None:
        with self._lock:
            for slot in list(self._slots):
                if slot.process.is_alive():
                    continue
                job, slot.job = slot.job, None
                self._slots[slot.index] = self._start(slot.index)
                if job is not None and job.state == "running":
                    crash = ContainerCrash(f"the worker running {job.function} died (exit "
                                           f"status {slot.process.exitcode})")
                    self.table.update(job, state="failed", error=crash.to_dict())
        self._dispatch()


@dataclass
class _Slot:
    index: int
    process: Any
    inbox: Any
    job: Job | None = None


def _kill_group(process: Any) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the worker leads its own group
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.join(5)


def _worker_main(index: int, inbox: Any, events: Any, store_root: str) -> None:
    """A worker process: its own process group (so a cancel takes ffmpeg too), engines
    imported once, then one job at a time until the inbox closes."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `serve` is the parent's
    from canvascast_cli.server.blobs import BlobStore
    from canvascast_cli.server.work import execute

    store = BlobStore(Path(store_root))
    while True:
        try:
            job_id, function, payload = inbox.recv()
        except (EOFError, OSError):
            return

        def progress(done: float, total: float, unit: str, job_id: str = job_id) -> None:
            events.put(("progress", index, job_id, {"done": done, "total": total,
                                                    "unit": unit}))

        try:
            result = execute(function, payload, store, progress)
        except CanvasCastError as exc:
            events.put(("failed", index, job_id, exc.to_dict()))
        except Exception as exc:
            error = JobFailed(f"{function} failed: {type(exc).__name__}: {exc}")
            events.put(("failed", index, job_id, error.to_dict()))
        else:
            events.put(("done", index, job_id, result))
