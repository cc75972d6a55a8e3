"""Two replicas sharing one output folder (restyle.serve.shared), simulated in one process.

Replica "ra" and replica "rb" each have their own Replicas (heartbeat) and JobStore on the same folder;
jobs are plain `Job`s on a `Worker` that is never started, so they stay queued until a test moves them.
Staleness is made by setting a heartbeat file's mtime into the past, so nothing waits on the clock.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from restyle.serve.jobs import Job, JobStore, Worker
from restyle.serve.shared import CANCEL_FILE, REPLICAS_DIR, Replicas


@dataclass
class Side:
    """One replica: its heartbeat, its store and its (never started) worker."""

    replicas: Replicas
    store: JobStore
    worker: Worker

    def submit(self) -> Job:
        """A queued job accepted by this replica (its first record written), as the app does it."""
        job = Job(run=lambda job: None)
        self.store.add(job)
        self.worker.submit(job)
        return job


def side(root: Path, name: str, **timing: float) -> Side:
    replicas = Replicas(root, name, **timing)
    store = JobStore(root, replicas=replicas)
    return Side(replicas, store, Worker(queue_size=4, on_end=store.record))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Side, Side]:
    a, b = side(tmp_path, "ra"), side(tmp_path, "rb")
    a.replicas.beat()
    b.replicas.beat()
    return a, b


def on_disk(root: Path, job_id: str) -> dict[str, Any]:
    return json.loads((root / job_id / "job.json").read_text())


def kill(replicas: Replicas, age_s: float = 3600.0) -> None:
    """Make `replicas`' heartbeat look `age_s` old (the replica died without a clean stop)."""
    path = replicas.folder / replicas.replica
    past = time.time() - age_s
    os.utime(path, (past, past))


# --- reading another replica's jobs ----------------------------------------------------------------------
def test_a_job_accepted_by_one_replica_is_readable_from_the_other(pair: tuple[Side, Side]):
    a, b = pair
    job = a.submit()
    record = b.store.get(job.id)
    assert isinstance(record, dict)  # read from disk, not B's own Job
    assert record["id"] == job.id
    assert record["state"] == "queued"
    assert record["replica"] == "ra"
    assert record["error"] is None
    assert a.store.get(job.id) is job  # its own replica answers with the live job


def test_a_live_replicas_job_stays_queued_and_recover_leaves_it(pair: tuple[Side, Side]):
    a, b = pair
    job = a.submit()
    before = (a.store.root / job.id / "job.json").read_bytes()
    assert b.store.get(job.id)["state"] == "queued"
    assert b.store.recover() == []
    assert b.store.get(job.id)["state"] == "queued"
    assert (a.store.root / job.id / "job.json").read_bytes() == before  # nobody rewrote it


def test_a_dead_replicas_unfinished_job_reads_as_interrupted(pair: tuple[Side, Side], tmp_path: Path):
    a, b = pair
    job = a.submit()
    kill(a.replicas)
    record = b.store.get(job.id)
    assert isinstance(record, dict)
    assert record["state"] == "failed"
    assert record["error"]["error"] == "interrupted"
    assert record["error"]["status"] == 503
    assert "ra" in record["error"]["message"]
    assert record["position"] is None and record["finished"] is not None
    saved = on_disk(tmp_path, job.id)  # marked on disk for everyone, still naming the dead replica
    assert saved["state"] == "failed"
    assert saved["error"]["error"] == "interrupted"
    assert saved["replica"] == "ra"


def test_a_small_stale_s_makes_a_silent_replica_dead(tmp_path: Path):
    a, b = side(tmp_path, "ra"), side(tmp_path, "rb", stale_s=0.2)
    a.replicas.beat()
    job = a.submit()
    assert b.store.get(job.id)["state"] == "queued"  # just beat: alive
    time.sleep(0.3)
    assert not b.replicas.alive("ra")
    assert b.store.get(job.id)["state"] == "failed"
    assert on_disk(tmp_path, job.id)["error"]["error"] == "interrupted"


def test_recover_marks_only_dead_replicas_unfinished_jobs(pair: tuple[Side, Side], tmp_path: Path):
    a, b = pair
    orphan = a.submit()
    finished = a.submit()
    a.worker.cancel(finished)  # ended (cancelled): its final record is written
    assert on_disk(tmp_path, finished.id)["state"] == "cancelled"
    own = b.submit()  # B's own queued job: B is alive
    kill(a.replicas)
    assert b.store.recover() == [orphan.id]
    assert on_disk(tmp_path, orphan.id)["state"] == "failed"
    assert on_disk(tmp_path, orphan.id)["error"]["error"] == "interrupted"
    assert on_disk(tmp_path, orphan.id)["replica"] == "ra"
    assert on_disk(tmp_path, finished.id)["state"] == "cancelled"
    assert on_disk(tmp_path, own.id)["state"] == "queued"
    assert b.store.recover() == []  # already marked: not again


def test_a_cleanly_stopped_replica_is_dead_at_once(pair: tuple[Side, Side]):
    a, b = pair
    job = a.submit()
    a.replicas.stop()
    assert not (a.replicas.folder / "ra").exists()
    assert not b.replicas.alive("ra")
    assert b.store.get(job.id)["state"] == "failed"


# --- publishing progress ---------------------------------------------------------------------------------
def test_publish_never_overwrites_a_claimed_jobs_record(pair: tuple[Side, Side], tmp_path: Path):
    a, _ = pair
    job = a.submit()
    path = tmp_path / job.id / "job.json"
    before = path.read_bytes()
    job.state, job.step = "running", 3
    job._claimed = True  # the worker has begun writing its final record
    assert a.store.publish(job, job.status()) is False
    assert path.read_bytes() == before
    job._claimed = False  # the same call on an unclaimed job does write
    assert a.store.publish(job, job.status()) is True
    assert on_disk(tmp_path, job.id)["state"] == "running"


def test_replicas_publish_writes_changes_only(
    pair: tuple[Side, Side], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    a, b = pair
    job = a.submit()
    writes: list[dict[str, Any]] = []
    publish = a.store.publish

    def counting(job: Job, status: dict[str, Any]) -> bool:
        writes.append(status)
        return publish(job, status)

    monkeypatch.setattr(a.store, "publish", counting)
    job.state, job.step, job.total = "running", 3, 10
    a.replicas.publish(a.store, a.worker)
    record = b.store.get(job.id)
    assert (record["state"], record["step"], record["total"]) == ("running", 3, 10)
    assert record["replica"] == "ra"
    assert len(writes) == 1

    path = tmp_path / job.id / "job.json"
    stat, content = path.stat(), path.read_bytes()
    a.replicas.publish(a.store, a.worker)  # nothing changed: nothing written
    assert len(writes) == 1
    assert path.read_bytes() == content
    assert path.stat().st_ino == stat.st_ino  # not even replaced by the same bytes
    assert path.stat().st_mtime_ns == stat.st_mtime_ns

    job.step = 4
    a.replicas.publish(a.store, a.worker)
    assert len(writes) == 2
    assert b.store.get(job.id)["step"] == 4


def test_replicas_publish_skips_ended_jobs(pair: tuple[Side, Side], tmp_path: Path):
    a, _ = pair
    job = a.submit()
    a.worker.cancel(job)
    before = (tmp_path / job.id / "job.json").read_bytes()
    a.replicas.publish(a.store, a.worker)
    assert (tmp_path / job.id / "job.json").read_bytes() == before
    assert on_disk(tmp_path, job.id)["state"] == "cancelled"


# --- cancel through another replica -----------------------------------------------------------------------
def test_a_cancel_asked_through_the_other_replica_cancels_the_queued_job(
    pair: tuple[Side, Side], tmp_path: Path
):
    a, b = pair
    job = a.submit()
    keep = a.submit()
    b.replicas.request_cancel(job.id)
    assert (tmp_path / job.id / CANCEL_FILE).is_file()
    assert job.state == "queued"  # nothing happens until A publishes
    a.replicas.publish(a.store, a.worker)
    assert job.ended
    assert job.state == "cancelled"
    assert job.error["error"] == "cancelled" and job.error["status"] == 409
    assert a.worker.position(job) is None
    assert a.worker.position(keep) == 0  # the other job moved up and was not cancelled
    assert keep.state == "queued" and not keep.ended
    record = b.store.get(job.id)
    assert record["state"] == "cancelled"
    assert record["replica"] == "ra"


def test_a_cancel_for_an_unknown_job_leaves_nothing(pair: tuple[Side, Side], tmp_path: Path):
    _, b = pair
    b.replicas.request_cancel("0123456789abcdef")
    assert not (tmp_path / "0123456789abcdef").exists()


# --- heartbeats -------------------------------------------------------------------------------------------
def test_alive_refuses_names_that_are_not_replica_ids(pair: tuple[Side, Side], tmp_path: Path):
    _, b = pair
    folder = tmp_path / REPLICAS_DIR
    (folder / "sub").mkdir()
    (folder / "sub" / "rx").touch()  # fresh files a crafted name could point at
    (folder / ".hidden").touch()
    (tmp_path / "outside").touch()
    assert b.replicas.alive("ra")
    assert b.replicas.alive("rb")
    assert not b.replicas.alive("sub/rx")
    assert not b.replicas.alive("../outside")
    assert not b.replicas.alive(".hidden")
    assert not b.replicas.alive(None)
    assert not b.replicas.alive("")
    assert not b.replicas.alive("rnever")


def test_a_replica_is_always_alive_to_itself(tmp_path: Path):
    solo = Replicas(tmp_path, "ra")  # never beat
    assert solo.alive("ra")
    assert not Replicas(tmp_path, "rb").alive("ra")


def test_stop_removes_the_heartbeat_file(tmp_path: Path):
    replicas = Replicas(tmp_path, "ra")
    replicas.beat()
    assert (tmp_path / REPLICAS_DIR / "ra").is_file()
    replicas.stop()
    assert not (tmp_path / REPLICAS_DIR / "ra").exists()
    replicas.stop()  # twice: no error


def test_start_beats_at_once_publishes_on_its_thread_and_stop_ends_it(tmp_path: Path):
    a = side(tmp_path, "ra", heartbeat_s=0.02)
    b = side(tmp_path, "rb")
    job = a.submit()
    job.state, job.step, job.total = "running", 2, 5
    a.replicas.start(a.store, a.worker)
    try:
        assert (tmp_path / REPLICAS_DIR / "ra").is_file()  # before the first tick
        assert b.replicas.alive("ra")
        deadline = time.monotonic() + 2.0
        while b.store.get(job.id)["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.store.get(job.id)["step"] == 2
    finally:
        a.replicas.stop()
    assert len(a.replicas._threads) == 2 and not any(t.is_alive() for t in a.replicas._threads)
    assert not (tmp_path / REPLICAS_DIR / "ra").exists()


def test_a_discarded_job_is_never_published_back(pair: tuple[Side, Side], tmp_path: Path):
    """A job refused after its first record (queue full) is discarded; a heartbeat that took its snapshot
    just before must not write a phantom "queued" record back."""
    a, _ = pair
    job = Job(run=lambda job: None)
    a.store.add(job)
    snapshot = a.store.live()
    a.store.discard(job)
    assert snapshot == [job] and not (tmp_path / job.id / "job.json").exists()
    assert a.store.publish(job, job.status()) is False
    assert not (tmp_path / job.id / "job.json").exists()


def test_a_sweep_reads_a_final_record_once(pair: tuple[Side, Side], monkeypatch):
    """recover() (run by every replica every STALE_S) skips records it has seen final before."""
    import restyle.serve.jobs as jobs

    a, b = pair
    done = a.submit()
    a.worker.cancel(done)  # final: cancelled
    reads: list[str] = []
    real = jobs._read_record
    monkeypatch.setattr(jobs, "_read_record", lambda path, job_id: reads.append(job_id) or real(path, job_id))
    b.store.recover()
    b.store.recover()
    assert reads == [done.id]
