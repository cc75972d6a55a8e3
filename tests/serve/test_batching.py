"""Waiting requests of one shape denoised in one batch: the worker's grouping, and the server end to end."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle.client import decode_image
from restyle.errors import InvalidParameterError
from restyle.inpaint.pipeline import CancelledError
from restyle.serve.jobs import Batchable, Job, Worker
from tests.serve.test_jobs import one_torch_thread, style_payload, submit, wait_for, wait_state  # noqa: F401


# --- the worker, with stand-in work ---------------------------------------------------------------------
@dataclass
class Part:
    name: str
    key: str
    num_images: int


class Tickets:
    """Each denoising step takes a ticket; the test hands them out (`release(n)`, or `open()` for all)."""

    def __init__(self) -> None:
        self._left = 0
        self._cond = threading.Condition()

    def release(self, n: int) -> None:
        with self._cond:
            self._left += n
            self._cond.notify_all()

    def open(self) -> None:
        self.release(10**9)

    def take(self, timeout: float) -> bool:
        with self._cond:
            if self._left == 0:
                self._cond.wait(timeout)
            if self._left == 0:
                return False
            self._left -= 1
            return True


class Work:
    """Stand-in image work: records every batch; each step waits for a ticket so jobs can queue up."""

    def __init__(self, fail_batches: bool = False, steps: int = 3) -> None:
        self.gate = Tickets()
        self.started = threading.Event()
        self.batches: list[list[str]] = []
        self.fail_batches = fail_batches
        self.steps = steps

    def job(self, name: str, key: str = "k", n: int = 1, bad: bool = False) -> Job:
        def prepare(job: Job) -> Part:
            if bad:
                raise InvalidParameterError(f"{name}: bad input", field="image")
            return Part(name, key, n)

        def run(parts: list[Part], progress: Any, cancel: Any) -> list[str]:
            self.batches.append([p.name for p in parts])
            if self.fail_batches and len(parts) > 1:
                raise RuntimeError("out of memory")
            for step in range(1, self.steps + 1):
                self.started.set()
                while not self.gate.take(0.01):
                    if cancel():
                        raise CancelledError("cancelled")
                progress(step, self.steps)
                if cancel():
                    raise CancelledError("cancelled")
            return [f"result of {p.name}" for p in parts]

        return Job(run=None, batch=Batchable(prepare, run, lambda job, part, result: result), kind="style")


def _worker(max_batch: int = 8) -> Worker:
    worker = Worker(queue_size=8, max_batch=max_batch)
    worker.start()
    return worker


def _wait_ended(*jobs: Job) -> None:
    wait_for(lambda: all(j.ended for j in jobs), what="the jobs to end")


def test_waiting_jobs_of_one_key_share_a_batch_up_to_max_images():
    work, worker = Work(), _worker(max_batch=8)
    head = worker.submit(work.job("head"))
    assert work.started.wait(10)  # running alone: nothing else was waiting
    jobs = [
        worker.submit(work.job(name, key, n))
        for name, key, n in [("a", "k", 2), ("b", "other", 1), ("c", "k", 3), ("d", "k", 4), ("e", "k", 1)]
    ]
    work.gate.open()
    _wait_ended(head, *jobs)
    worker.stop()
    # a takes the head's place; c fits (2 + 3), d does not (9 > 8), e does; b and d keep their order
    assert work.batches == [["head"], ["a", "c", "e"], ["b"], ["d"]]
    assert [j.state for j in jobs] == ["done"] * 5
    assert jobs[0].result == "result of a" and jobs[3].result == "result of d"


def test_max_batch_one_runs_every_job_alone():
    work, worker = Work(), _worker(max_batch=1)
    work.gate.open()
    jobs = [worker.submit(work.job(name)) for name in "xyz"]
    _wait_ended(*jobs)
    worker.stop()
    assert work.batches == [["x"], ["y"], ["z"]]


def test_cancelling_one_job_of_a_batch_ends_it_at_once_and_the_others_finish():
    work, worker = Work(), _worker()
    head = worker.submit(work.job("head"))
    assert work.started.wait(10)
    a, b = worker.submit(work.job("a")), worker.submit(work.job("b"))
    work.gate.release(3 + 1)  # the head's three steps and the batch's first
    wait_for(lambda: work.batches[-1:] == [["a", "b"]] and a.step == 1, what="the batch's first step")
    worker.cancel(a)
    wait_for(lambda: a.ended, what="the cancelled job to end")
    assert a.state == "cancelled" and not b.ended and a.result is None
    work.gate.open()
    _wait_ended(head, b)
    worker.stop()
    assert b.state == "done" and b.result == "result of b"


def test_cancelling_every_job_of_a_batch_stops_the_run():
    work, worker = Work(steps=1000), _worker()
    head = worker.submit(work.job("head"))
    assert work.started.wait(10)
    a, b = worker.submit(work.job("a")), worker.submit(work.job("b"))
    worker.cancel(head)
    wait_for(lambda: work.batches[-1:] == [["a", "b"]], what="the batch to start")
    worker.cancel(a)
    worker.cancel(b)
    _wait_ended(head, a, b)
    after = worker.submit(work.job("after"))
    work.gate.open()
    _wait_ended(after)
    worker.stop()
    assert [j.state for j in (head, a, b, after)] == ["cancelled", "cancelled", "cancelled", "done"]


def test_a_job_that_fails_to_prepare_ends_alone_with_its_error():
    work, worker = Work(), _worker()
    head = worker.submit(work.job("head"))
    assert work.started.wait(10)
    a, bad, b = (
        worker.submit(work.job("a")),
        worker.submit(work.job("bad", bad=True)),
        worker.submit(work.job("b")),
    )
    work.gate.open()
    _wait_ended(head, a, bad, b)
    worker.stop()
    assert work.batches == [["head"], ["a", "b"]]
    assert bad.state == "failed" and bad.error["field"] == "image" and "bad input" in bad.error["message"]
    assert a.state == b.state == "done"


def test_a_failed_batch_is_retried_job_by_job():
    work, worker = Work(fail_batches=True), _worker()
    head = worker.submit(work.job("head"))
    assert work.started.wait(10)
    a, b = worker.submit(work.job("a")), worker.submit(work.job("b"))
    work.gate.open()
    _wait_ended(head, a, b)
    worker.stop()
    assert work.batches == [["head"], ["a", "b"], ["a"], ["b"]]
    assert a.state == b.state == "done" and b.result == "result of b"


def test_a_batch_of_one_that_fails_reports_the_error():
    work, worker = Work(), _worker()

    def broken(parts: Any, progress: Any, cancel: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    job = work.job("only")
    job.batch = Batchable(job.batch.prepare, broken, job.batch.finish)
    worker.submit(job)
    _wait_ended(job)
    worker.stop()
    assert (
        job.state == "failed" and job.error["error"] == "internal" and "out of memory" in job.error["message"]
    )


def _blocker(release: threading.Event) -> Job:
    """A plain (not batchable) job that holds the worker until `release` is set."""
    return Job(run=lambda job: release.wait(30), kind="segment")


def test_stopping_during_a_batch_ends_and_records_every_member():
    work, records = Work(steps=10**6), []
    worker = Worker(queue_size=8, max_batch=8, on_end=lambda job, final: records.append(final["id"]))
    worker.start()
    release = threading.Event()
    worker.submit(_blocker(release))
    a, b = worker.submit(work.job("a")), worker.submit(work.job("b"))
    release.set()
    wait_for(lambda: work.batches == [["a", "b"]] and a.state == b.state == "running", what="the batch")
    worker.stop(grace_s=0.2)
    assert a.ended and b.ended and a.state == b.state == "cancelled"
    assert a.id in records and b.id in records


@pytest.mark.parametrize("prepare_fails", [False, True])
def test_a_job_cancelled_while_it_is_prepared_ends_once_and_keeps_nothing(prepare_fails):
    work, records = Work(), []

    def record(job: Job, final: dict[str, Any]) -> None:
        time.sleep(0.2)  # a disk write: the worker thread's own end must not slip in meanwhile
        records.append(final["state"])

    worker = Worker(queue_size=8, max_batch=8, on_end=record)
    worker.start()
    release, preparing, go_on = threading.Event(), threading.Event(), threading.Event()
    worker.submit(_blocker(release))
    head = worker.submit(work.job("head"))
    x = work.job("x")
    prepare = x.batch.prepare

    def slow_prepare(job: Job) -> Any:
        preparing.set()
        go_on.wait(30)
        if prepare_fails:
            raise InvalidParameterError("x: bad input", field="image")
        return prepare(job)

    x.batch = Batchable(slow_prepare, x.batch.run, x.batch.finish)
    worker.submit(x)
    release.set()
    assert preparing.wait(10)  # the worker prepares x while gathering head's batch
    canceller = threading.Thread(target=worker.cancel, args=(x,))
    canceller.start()
    time.sleep(0.05)  # the cancel is writing its record when x's prepare ends
    go_on.set()
    canceller.join(10)
    work.gate.open()
    _wait_ended(head, x)
    worker.stop()
    assert x.state == "cancelled" and x._part is None
    assert records.count("cancelled") == 1 and len(records) == 3  # blocker, head, x: each once
    assert work.batches == [["head"]]


def test_a_head_cancelled_while_it_is_prepared_takes_no_batch():
    work = Work()
    worker = _worker()
    release, preparing, go_on = threading.Event(), threading.Event(), threading.Event()
    worker.submit(_blocker(release))
    head = work.job("head")
    prepare = head.batch.prepare

    def slow_prepare(job: Job) -> Any:
        preparing.set()
        go_on.wait(30)
        return prepare(job)

    head.batch = Batchable(slow_prepare, head.batch.run, head.batch.finish)
    worker.submit(head)
    a = worker.submit(work.job("a"))
    release.set()
    assert preparing.wait(10)
    worker.cancel(head)
    go_on.set()
    work.gate.open()
    _wait_ended(head, a)
    worker.stop()
    assert head.state == "cancelled" and a.state == "done"
    assert work.batches == [["a"]]


# --- the server, with the tiny models ---------------------------------------------------------------------
def _pixels(entry: dict[str, Any]) -> np.ndarray:
    return np.asarray(decode_image(entry["image"]).convert("RGB"), dtype=np.int16)


def test_server_batches_waiting_style_requests_and_each_gets_its_own_images(
    make_gated, photo, box_mask, tmp_path
):
    srv = make_gated()
    c = srv.client
    first = submit(c, style_payload(photo, box_mask, steps=3, seed=1))
    wait_state(c, first["id"], ("running",))
    assert srv.service.entered.wait(30)
    requests = [
        style_payload(photo, box_mask, steps=3, seed=10, prompt="a red linen skirt"),
        style_payload(photo, box_mask, steps=3, seed=20, num_images=2, prompt="a black leather skirt"),
        style_payload(photo, box_mask, steps=4, seed=30),  # other steps: not in the batch
    ]
    queued = [submit(c, r) for r in requests]
    srv.gate.set()
    done = [wait_state(c, q["id"], ("done", "failed")) for q in queued]
    assert [d["state"] for d in done] == ["done"] * 3, done
    assert [d["result"]["batch"] for d in done] == [2, 2, 1]
    # alone (one at a time through /v1/style), each request gets the images it got in the batch
    for request, status in zip(requests[:2], done[:2], strict=True):
        r = c.post("/v1/style", json=request)
        assert r.status_code == 200, r.text
        alone = r.json()
        assert alone["batch"] == 1 and alone["seeds"] == status["result"]["seeds"]
        for i, entry in enumerate(alone["images"]):
            batched = c.get(status["result"]["images"][i]["url"])
            got = np.asarray(Image.open(io.BytesIO(batched.content)).convert("RGB"), dtype=np.int16)
            assert int(np.abs(got - _pixels(entry)).max()) <= 2


def test_server_batches_invocations_with_the_original_contract(make_gated, photo, box_mask):
    from restyle.client import encode_image

    srv = make_gated()
    c = srv.client
    sizes: list[int] = []
    run_batch = srv.service.run_batch

    def recording(pending: Any, **kw: Any) -> Any:
        sizes.append(len(pending))
        return run_batch(pending, **kw)

    srv.service.run_batch = recording  # type: ignore[method-assign]
    first = submit(c, style_payload(photo, box_mask, steps=3))
    wait_state(c, first["id"], ("running",))
    assert srv.service.entered.wait(30)
    body = {
        "inputs": "a red skirt",
        "input_img": encode_image(photo),
        "mask_img": encode_image(box_mask),
        "num_inference_steps": 2,
        "num_images_per_prompt": 1,
        "image_length": 64,
    }
    answers: list[Any] = [None, None]

    def call(i: int) -> None:
        answers[i] = c.post("/invocations", json={**body, "seed": 100 + i})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(srv.app.state.restyle.worker._pending) == 2, what="both invocations to queue")
    srv.gate.set()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert [a.json()["seeds"] for a in answers] == [[100], [101]]
    assert sizes == [1, 2]
    images = [decode_image(a.json()["generated_images"][0]) for a in answers]
    assert all(max(img.size) == 64 for img in images)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_serve_refuses_a_max_batch_below_one(value):
    from typer.testing import CliRunner

    from restyle.cli import app

    result = CliRunner().invoke(app, ["serve", "--max-batch", value])
    assert result.exit_code != 0 and isinstance(result.exception, InvalidParameterError)
    assert "--max-batch" in str(result.exception) and "below 1" in str(result.exception)
