"""Several servers (Ray Serve replicas) sharing one output folder, so that any of them answers any job.

Each replica writes its jobs' records (`<output>/<id>/job.json`, with the replica's id) as they change,
not only when they end, and touches its heartbeat file (`<output>/.replicas/<replica>`) every
HEARTBEAT_S. Another replica asked about a job reads its record; a record that is still queued or
running but whose replica has not beaten for STALE_S belongs to a replica that died: it is marked failed
(`interrupted`) by whoever sees it first, so no accepted job is lost without a recorded failure. A cancel
sent to another replica leaves a `cancel` file in the job's folder, which its replica acts on.

The folder must be one filesystem that every replica sees (a local disk for replicas on one machine, NFS,
EFS or FSx across machines), with clocks that agree to well within STALE_S.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("restyle.serve")

HEARTBEAT_S = 1.0  # how often a replica says it is alive and publishes its jobs' progress
STALE_S = 10.0  # a replica silent this long is dead: its unfinished jobs are marked interrupted
CANCEL_FILE = "cancel"
REPLICAS_DIR = ".replicas"


class Replicas:
    """This replica's heartbeat and job publishing, and what it knows of the others (see the module)."""

    def __init__(
        self, root: Path, replica: str, *, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S
    ) -> None:
        self.root = root
        self.replica = replica
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._published: dict[str, tuple[Any, ...]] = {}

    @property
    def folder(self) -> Path:
        return self.root / REPLICAS_DIR

    def beat(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / self.replica).touch()  # its mtime is the beat

    def alive(self, replica: str | None) -> bool:
        """Whether `replica` beat within STALE_S (this one always is; a record without one: no)."""
        if replica == self.replica:
            return True
        if not replica or "/" in replica or replica.startswith("."):
            return False
        try:
            age = time.time() - (self.folder / replica).stat().st_mtime
        except OSError:
            return False
        return age < self.stale_s

    def start(self, store: Any, worker: Any) -> None:
        """Beat now (before the first request), then every heartbeat_s on one thread; sweep for dead
        replicas' jobs every stale_s on another (a slow sweep over a large folder never delays a beat)."""
        self.beat()
        self._threads = [
            threading.Thread(target=self._loop, args=(store, worker), name="restyle-replica", daemon=True),
            threading.Thread(target=self._sweep, args=(store,), name="restyle-sweep", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(OSError):  # a clean stop: the others need not wait STALE_S
            (self.folder / self.replica).unlink()

    def _loop(self, store: Any, worker: Any) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
                self.publish(store, worker)
            except Exception:  # a full disk must not stop the heartbeat thread for good
                log.exception("replica %s: heartbeat or publishing failed", self.replica)

    def _sweep(self, store: Any) -> None:
        """Dead replicas' jobs that nobody asks about are marked too (JobStore.recover skips records it
        has seen final, so a sweep reads only the unfinished ones)."""
        while not self._stop.wait(self.stale_s):
            try:
                store.recover()
            except Exception:
                log.exception("replica %s: sweeping for dead replicas' jobs failed", self.replica)

    def publish(self, store: Any, worker: Any) -> None:
        """Write the record of every live job whose status changed; act on cancel files."""
        live = store.live()
        for job in live:
            if job.ended:
                self._published.pop(job.id, None)
                continue
            if (self.root / job.id / CANCEL_FILE).exists():
                worker.cancel(job)
                continue
            status = job.status(worker.position(job))
            key = (status["state"], status["step"], status["total"], status["position"])
            if self._published.get(job.id) != key and store.publish(job, status):
                self._published[job.id] = key
        ids = {job.id for job in live}
        for gone in [i for i in self._published if i not in ids]:
            del self._published[gone]

    def request_cancel(self, job_id: str) -> None:
        """Ask the replica that owns `job_id` to cancel it (it sees the file within heartbeat_s)."""
        folder = self.root / job_id
        if folder.is_dir():
            (folder / CANCEL_FILE).touch()


def replica_id() -> str:
    """This Ray Serve replica's id, else a random one (a restarted replica gets a new id)."""
    import uuid

    try:
        from ray import serve

        return "r" + "".join(c for c in serve.get_replica_context().replica_id.unique_id if c.isalnum())
    except Exception:  # not in a Ray Serve replica
        return "r" + uuid.uuid4().hex[:12]
