"""The worker on its own: ended jobs keep no request data, records are written before the end is reported."""

from __future__ import annotations

import threading

import pytest

from restyle.serve.jobs import Job, QueueFullError, Worker


def test_ended_jobs_drop_their_work_and_are_recorded_first():
    seen: list[tuple[str, bool]] = []
    worker = Worker(queue_size=2, on_end=lambda job, status: seen.append((status["state"], job.ended)))
    worker.start()
    payload = "x" * 1_000_000  # stands in for a request's base64 photo
    job = worker.submit(Job(run=lambda job: len(payload)))
    assert job._done.wait(5)
    assert job.state == "done" and job.result == 1_000_000
    assert job.run is None  # the closure (and the payload it holds) is gone
    assert seen == [("done", False)]  # recorded while the job was not yet reported ended
    worker.stop(1)


def test_queue_limit_counts_waiting_jobs_and_cancel_frees_a_place():
    gate = threading.Event()
    worker = Worker(queue_size=1, on_end=None)
    worker.start()
    running = worker.submit(Job(run=lambda job: gate.wait(5)))
    while running.state != "running":
        pass
    waiting = worker.submit(Job(run=lambda job: None))
    with pytest.raises(QueueFullError) as err:
        worker.submit(Job(run=lambda job: None))
    assert err.value.retry_after >= 1
    worker.cancel(waiting)
    assert waiting.state == "cancelled" and waiting.error["status"] == 409
    again = worker.submit(Job(run=lambda job: "ok"))  # the cancelled job's place is free at once
    gate.set()
    assert again._done.wait(5) and again.result == "ok"
    worker.stop(1)
