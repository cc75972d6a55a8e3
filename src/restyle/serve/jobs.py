"""One worker thread, a bounded queue and job records.

Image work is serialised on one thread: the models are not thread-safe and one GPU runs one pipeline at
a time anyway. The queue is bounded so an overloaded server answers "busy, retry later" at once instead of
piling up work it cannot finish. Every job's record is written to disk when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restyle.errors import RestyleError
from restyle.files import atomic_write
from restyle.inpaint.pipeline import CancelledError
from restyle.serve.handler import as_error

log = logging.getLogger("restyle.serve")

TERMINAL = ("done", "failed", "cancelled")


class QueueFullError(RestyleError):
    """The worker queue is at its limit: retry later."""

    status_code = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDownError(RestyleError):
    status_code = 503


class TooManyStreamsError(RestyleError):
    """More event streams than the server keeps open at once."""

    status_code = 503
    kind = "too_many_streams"


class NotReadyError(RestyleError):
    """Models are still loading (or failed to load)."""

    status_code = 503


class TimeoutExceededError(RestyleError):
    status_code = 504
    kind = "timeout"


Progress = Callable[[int, int], None]


@dataclass
class Batchable:
    """Image work in three parts, so one denoising run can serve several queued jobs of one shape.

    `prepare` decodes, masks and crops (its answer has `.key` and `.num_images`); `run` denoises the
    prepared parts of jobs with equal keys together, one result each; `finish` turns a job's result into
    its answer (saving its files).
    """

    prepare: Callable[[Job], Any]
    run: Callable[[list[Any], Progress, Callable[[], bool]], list[Any]]
    finish: Callable[[Job, Any, Any], Any]


class Changes:
    """Wakes waiting event streams when any job changes (progress, start, end, queue moves), instead of
    each stream polling; `notify` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def notify(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)

    async def wait(self, timeout: float) -> bool:
        """True when something changed within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)


@dataclass
class Job:
    """One unit of image work and what happened to it."""

    run: Callable[[Job], Any] | None  # the work (gets the job for progress/cancel); dropped when it ends
    kind: str = "style"
    batch: Batchable | None = None  # set instead of `run` for work that may share a denoising batch
    timeout_s: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = "queued"
    step: int = 0
    total: int = 0
    error: dict[str, Any] | None = None
    result: Any = None  # the run's return value (kept in memory for the request that waits on it)
    summary: dict[str, Any] | None = None  # JSON-ready result description, written to disk
    created: float = field(default_factory=time.time)
    started: float | None = None
    _part: Any = field(default=None, repr=False)  # the prepared work, while it waits for its batch
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _claimed: bool = field(default=False, repr=False)  # one thread has begun ending it (see Worker._end)
    _timed_out: bool = field(default=False, repr=False)  # the waiting request gave up: end as a timeout
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _changed: Callable[[], None] | None = field(default=None, repr=False)  # the worker's Changes.notify

    def progress(self, done: int, total: int) -> None:
        self.step, self.total = done, total
        if self._changed:
            self._changed()

    def should_stop(self) -> bool:
        """Polled by the pipeline every step: cancelled, or past its deadline."""
        if self._cancel.is_set():
            return True
        return bool(self.timeout_s and self.started and time.monotonic() - self.started > self.timeout_s)

    def cancel(self) -> None:
        self._cancel.set()

    def expire(self) -> None:
        """Stop it because its request ran out of time (recorded as a timeout, not a cancel)."""
        self._timed_out = True
        self._cancel.set()

    def stop_reason(self) -> tuple[str, dict[str, Any]]:
        """(state, error) for a job stopped by cancel or deadline."""
        if self._cancel.is_set() and not self._timed_out:
            return "cancelled", _error("cancelled", "cancelled", 409)
        return "failed", _error("timeout", f"timed out after {self.timeout_s:g} s", 504)

    @property
    def ended(self) -> bool:
        return self._done.is_set()

    def _finish(self, state: str, error: dict[str, Any] | None, finished: float) -> None:
        self.state, self.error, self.finished = state, error, finished
        with self._lock:
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)
        if self._changed:
            self._changed()  # its end, and every queued job's new position

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait (without blocking the event loop) until the job ends; False on timeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return True
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False

    def status(self, position: int | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "step": self.step,
            "total": self.total,
            "position": position if self.state == "queued" else None,
            "error": self.error,
            "result": self.summary,
            "created": self.created,
            "finished": self.finished,
        }


def _error(kind: str, message: str, status: int) -> dict[str, Any]:
    return {"error": kind, "field": None, "message": message, "status": status}


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def error_dict(err: BaseException) -> dict[str, Any]:
    if isinstance(err, RestyleError):
        return {**as_error(err), "status": err.status_code}
    return {
        "error": "internal",
        "field": None,
        "message": f"internal error: {type(err).__name__}: {err}",
        "status": 500,
    }


class Worker:
    """A single thread running jobs from a bounded FIFO queue.

    Batchable jobs (`Job.batch`) of one shape are denoised together: when the worker takes one, it
    prepares the jobs waiting behind it and runs those whose key matches in the same batch, up to
    `max_batch` images. The others keep their place (and their prepared inputs).
    """

    def __init__(
        self,
        queue_size: int = 4,
        on_end: Callable[[Job, dict[str, Any]], None] | None = None,
        max_batch: int = 1,
    ) -> None:
        self.queue: queue.Queue[Job | None] = queue.Queue()  # bounded by `_pending` (cancelled jobs leave it)
        self.queue_size = queue_size
        self.max_batch = max_batch  # images per denoising batch; 1 runs every job alone
        self.on_end = on_end
        self.running: list[Job] = []  # the jobs of the run in progress (a batch has several)
        self.accepting = True
        self._mean_s = 5.0  # running mean job time, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="restyle-worker", daemon=True)
        self._pending: list[Job] = []  # queued, in order (for positions and shutdown)
        self._plock = threading.Lock()
        self.changes = Changes()  # event streams wait on this

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Job:
        """Queue `job`; raises QueueFullError (503 + Retry-After) when the queue is at its limit."""
        if not self.accepting:
            raise ShuttingDownError("the server is shutting down; retry on another instance")
        with self._plock:
            if len(self._pending) >= self.queue_size:
                wait = max(1, round(self._mean_s * (self.queue_size + 1)))
                raise QueueFullError(
                    f"busy: {self.queue_size} requests are already waiting (queue limit {self.queue_size}); "
                    f"retry in about {wait} s",
                    retry_after=wait,
                )
            self._pending.append(job)
            self.queue.put_nowait(job)
        job._changed = self.changes.notify
        return job

    def cancel(self, job: Job, *, timed_out: bool = False) -> None:
        """Stop a job: a queued one ends at once (and frees its place), a running one at its next step.

        `timed_out` records it as a timeout (its request gave up) rather than a cancel.
        """
        job.expire() if timed_out else job.cancel()
        with self._plock:
            queued = job in self._pending
            if queued:
                self._pending.remove(job)
        if queued:
            state, error = job.stop_reason()
            if state == "cancelled":
                error["message"] = "cancelled before it started"
            self._end(job, state, error)

    def position(self, job: Job) -> int | None:
        with self._plock:
            return self._pending.index(job) if job in self._pending else None

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            with self._plock:
                if job in self._pending:
                    self._pending.remove(job)
            if job.ended:  # cancelled, or failed by stop(), while it waited
                continue
            if job._cancel.is_set():
                self._end(job, *job.stop_reason())
                continue
            self.running = [job]
            if job.batch is not None:
                group = self._gather(job)
                self.running = group or [job]
                self._run_batch(group)
            else:
                self._run(job)
            self.running = []

    def _run(self, job: Job) -> None:
        job.state, job.started = "running", time.monotonic()
        self.changes.notify()
        try:
            assert job.run is not None
            job.result = job.run(job)
        except Exception as err:
            self._fail(job, err)
            return
        self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - job.started)
        self._end(job, "done")

    def _fail(self, job: Job, err: Exception) -> None:
        """End `job` for `err`: a stop, a user error, or a bug/OOM (which must fail this job only)."""
        if isinstance(err, CancelledError):
            self._end(job, *job.stop_reason())
            return
        if not isinstance(err, RestyleError):
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        self._end(job, "failed", error_dict(err))

    # --- batching ---------------------------------------------------------------------------------------
    def _prepare(self, job: Job) -> Any:
        """The job's prepared part (made once); None when preparing failed, which ends the job, or when
        the job ended meanwhile (cancelled, timed out, shut down): its part is dropped, not kept."""
        if job._part is None:
            try:
                assert job.batch is not None
                part = job.batch.prepare(job)
            except Exception as err:
                self._fail(job, err)  # no-op when a cancel ended it first
                with self._plock:
                    if job in self._pending:
                        self._pending.remove(job)
                return None
            with job._lock:
                if job._claimed:
                    return None
                job._part = part
        return job._part

    def _gather(self, head: Job) -> list[Job]:
        """`head` and the waiting jobs that can share its batch (same key, up to `max_batch` images)."""
        head.state, head.started = "running", time.monotonic()
        self.changes.notify()
        part = self._prepare(head)
        if part is None:
            return []
        if head.should_stop():  # cancelled or out of time while it was prepared: it takes no batch room
            self._end(head, *head.stop_reason())
            return []
        group, room = [head], self.max_batch - part.num_images
        with self._plock:
            waiting = [j for j in self._pending if j.batch is not None]
        for job in waiting:
            if room <= 0:
                break
            if job.ended or job._cancel.is_set():
                continue
            other = self._prepare(job)
            if other is None or other.key != part.key or other.num_images > room:
                continue
            with self._plock:
                if job not in self._pending:  # cancelled while it was being prepared
                    continue
                self._pending.remove(job)
            job.state, job.started = "running", time.monotonic()
            self.changes.notify()
            group.append(job)
            room -= other.num_images
        return group

    def _run_batch(self, group: list[Job]) -> None:
        """Denoise the group's parts in one run; a failed batch of several is retried job by job."""
        # what each job brings, taken now: a job ended by a cancel meanwhile has dropped its own
        work: list[tuple[Job, Batchable, Any]] = []
        for job in group:
            batch, part = job.batch, job._part
            if batch is not None and part is not None:
                work.append((job, batch, part))
        if not work:
            return
        group = [job for job, _, _ in work]
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            for job in group:
                if not job.ended:
                    job.progress(done, total)

        def cancel() -> bool:
            """End each stopped job at once (the others go on); stop the run when none is left."""
            for job in group:
                if not job.ended and job.should_stop():
                    self._end(job, *job.stop_reason())
            return all(job.ended for job in group)

        try:
            results = work[0][1].run([part for _, _, part in work], progress, cancel)
        except Exception as err:
            if len(group) > 1 and not isinstance(err, CancelledError):
                log.warning("a batch of %d jobs failed (%s); running them one by one", len(group), err)
                for job in group:
                    if not job.ended:
                        self._run_batch([job])
                return
            for job in group:
                self._fail(job, err)  # a no-op for the jobs a cancel already ended
            return
        for (job, batch, part), result in zip(work, results, strict=True):
            if job.ended:
                continue
            try:
                job.result = batch.finish(job, part, result)
            except Exception as err:
                self._fail(job, err)
                continue
            self._end(job, "done")
        self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started) / len(group)

    def _end(self, job: Job, state: str, error: dict[str, Any] | None = None) -> None:
        """Record the final status first, then report the end: whoever hears "done" finds the record.

        The worker thread and a request's thread (cancel, timeout) may both try; the first one ends it.
        """
        with job._lock:
            if job._claimed:
                return
            job._claimed = True
        # its closures and prepared inputs hold the request's images: kept jobs must not keep them
        job.run, job.batch, job._part = None, None, None
        if state == "done" and job.total:
            job.step = job.total
        finished = time.time()
        if self.on_end is not None:
            final = {**job.status(), "state": state, "error": error, "finished": finished, "position": None}
            try:
                self.on_end(job, final)
            except Exception:
                log.exception("recording job %s failed", job.id)
        job._finish(state, error, finished)

    def fail_pending(self) -> None:
        """Refuse new work and fail what is queued (its requests and event streams hear at once)."""
        self.accepting = False
        with self._plock:
            pending, self._pending = self._pending, []
            while True:  # empty the queue so the stop marker always fits
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
        for job in pending:
            job.cancel()
            self._end(job, "failed", _error("shutdown", "the server shut down before this job started", 503))

    def stop(self, grace_s: float = 30.0) -> None:
        """Refuse new work, fail what is queued, let the running job (or batch) finish; cancelled after
        `grace_s`."""
        self.fail_pending()
        deadline = time.monotonic() + grace_s
        for job in list(self.running):  # every member of a running batch
            if not job._done.wait(max(0.0, deadline - time.monotonic())):
                break
        stragglers = [job for job in list(self.running) if not job.ended]
        for job in stragglers:
            job.cancel()
        for job in stragglers:
            job._done.wait(10)
        self.queue.put(None)
        self._thread.join(timeout=5)


class JobRecordError(RestyleError):
    """A job record on disk that cannot be read (not JSON, not UTF-8, not a job record)."""

    status_code = 404


class StorageError(RestyleError):
    """The output folder cannot take a write (full disk, read-only, gone)."""

    status_code = 507


def storage_error(path: Path, err: OSError) -> StorageError:
    """A one-line StorageError for an OSError on the output folder."""
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
    }.get(err.errno or 0, err.strerror or type(err).__name__)
    return StorageError(f"output folder {path}: {reason}; nothing was saved", field="output")


FINAL_STATES = ("done", "failed", "cancelled")


class JobStore:
    """Job records in memory (bounded) and on disk (`<output>/<id>/job.json`), so results outlive restarts.

    A job's record is written when it is accepted (queued) and again when it ends, so a job accepted by a
    server that is then killed is still known after a restart: `recover()` marks it failed (interrupted).
    """

    def __init__(self, root: Path | None, keep: int = 1000, replicas: Any = None) -> None:
        self.root = root
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self.storage_error: str | None = None  # the last failed write, until a write succeeds
        # restyle.serve.shared.Replicas when several servers share `root` (Ray Serve): records carry
        # their replica's id, and an unfinished record of a replica that died reads as interrupted
        self.replicas = replicas
        self._settled: set[str] = set()  # ids recover() found final: never read again

    def add(self, job: Job) -> None:
        """Keep the job and write its first record; a failed write raises StorageError (507)."""
        self._write(job.id, {**job.status(), "position": None})
        self._jobs[job.id] = job
        while len(self._jobs) > self.keep:
            oldest = next(iter(self._jobs))
            if not self._jobs[oldest].ended:
                break
            del self._jobs[oldest]

    def discard(self, job: Job) -> None:
        """Forget a job that was never accepted (its record and its empty folder go)."""
        with job._lock:  # claimed: a publish (shared output) cannot write its record back after this
            job._claimed = True
        self._jobs.pop(job.id, None)
        if self.root is not None:
            folder = self.root / job.id
            (folder / "job.json").unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # it holds other files: leave it
                folder.rmdir()

    def get(self, job_id: str) -> Job | dict[str, Any] | None:
        """The live job, or the record a previous run left on disk, or None."""
        if job_id in self._jobs:
            return self._jobs[job_id]
        if self.root is None or not (job_id.isalnum() and job_id.isascii() and len(job_id) <= 64):
            return None
        path = self.root / job_id / "job.json"
        if not path.is_file():
            return None
        record = _read_record(path, job_id)
        if self._orphaned(record):
            record = self._interrupt(path.parent.name, record) or record
        return record

    def live(self) -> list[Job]:
        """The jobs of this server that have not ended."""
        return [job for job in list(self._jobs.values()) if not job.ended]

    def publish(self, job: Job, status: dict[str, Any]) -> bool:
        """Write a live job's current status (shared output: other replicas read it); never after its final
        record (the worker claims a job before writing that). False when not written."""
        with job._lock:
            if job._claimed:
                return False
            try:
                self._write(job.id, status)
            except StorageError:
                return False
        return True

    def _orphaned(self, record: dict[str, Any]) -> bool:
        """An unfinished record of another replica that is no longer alive (shared output only)."""
        return (
            self.replicas is not None
            and record.get("state") not in FINAL_STATES
            and record.get("id") not in self._jobs
            and not self.replicas.alive(record.get("replica"))
        )

    def _interrupt(self, job_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """Mark an unfinished record failed (interrupted) on disk; the new record, or None."""
        gone = record.get("replica") if self.replicas is not None else None
        who = f"replica {gone}" if gone else "the server"
        record = {
            **record,
            "state": "failed",
            "position": None,
            "finished": time.time(),
            "error": _error(
                "interrupted", f"{who} stopped before this job ended; send the request again", 503
            ),
        }
        try:
            self._write(job_id, record)
        except StorageError:
            log.error("could not mark job %s as interrupted", job_id)
            return None
        return record

    def record(self, job: Job, status: dict[str, Any]) -> None:
        """Write the job's final status atomically beside its files."""
        try:
            self._write(job.id, status)
        except StorageError:
            log.error("job %s ended %s but its record could not be written", job.id, status.get("state"))
            raise

    def _write(self, job_id: str, status: dict[str, Any]) -> None:
        if self.root is None:
            return
        folder = self.root / job_id
        if self.replicas is not None:
            status = {**status, "replica": status.get("replica") or self.replicas.replica}
        text = json.dumps(status, indent=2, default=str)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "job.json", lambda tmp: Path(tmp).write_text(text))
        except OSError as err:
            failure = storage_error(self.root, err)
            self.storage_error = failure.message
            raise failure from err
        self.storage_error = None

    def probe(self) -> None:
        """Write and remove a small file in the output folder: StorageError (and storage_error set) when
        that fails, cleared when it works again."""
        if self.root is None:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".restyle-probe"
            atomic_write(probe, lambda tmp: Path(tmp).write_text("ok"))
            probe.unlink()
        except OSError as err:
            failure = storage_error(self.root, err)
            self.storage_error = failure.message
            raise failure from err
        self.storage_error = None

    def recover(self) -> list[str]:
        """At start-up: records a previous run left queued or running are marked failed (interrupted).

        With a shared output (replicas), only those of replicas that are no longer alive; the replicas
        also run this every STALE_S, so a dead replica's jobs are marked even if nobody asks for them.
        """
        if self.root is None or not self.root.is_dir():
            return []
        marked = []
        for path in sorted(self.root.glob("*/job.json")):
            if path.parent.name in self._settled:
                continue
            try:
                record = _read_record(path, path.parent.name)
            except JobRecordError:
                continue
            if record.get("state") in FINAL_STATES:
                self._settled.add(path.parent.name)
                continue
            if self.replicas is not None and not self._orphaned(record):
                continue
            if self._interrupt(path.parent.name, record) is not None:
                marked.append(path.parent.name)
        if marked:
            log.warning("%d job(s) of a previous run were interrupted: %s", len(marked), ", ".join(marked))
        return marked


RECORD_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "state": str,
    "step": int,
    "total": int,
    "created": (int, float),
}


def _read_record(path: Path, job_id: str) -> dict[str, Any]:
    """A job record from disk, or JobRecordError naming what is wrong with it."""
    where = f"job {job_id!r}: its record on disk"
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise JobRecordError(f"{where} is unreadable ({err})", field="job_id") from err
    except OSError as err:
        raise JobRecordError(f"{where} cannot be read ({err.strerror})", field="job_id") from err
    if not isinstance(record, dict):
        raise JobRecordError(f"{where} is not a job record (not an object)", field="job_id")
    bad = [k for k, kind in RECORD_KEYS.items() if not isinstance(record.get(k), kind)]
    if bad or record.get("state") not in (*FINAL_STATES, "queued", "running"):
        missing = ", ".join(bad) or "state"
        raise JobRecordError(f"{where} is not a job record (bad or missing: {missing})", field="job_id")
    return record
