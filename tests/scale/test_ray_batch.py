"""`restyle batch --ray` on a local Ray instance with the tiny models: 20 rows on 2 actors give the local
run's images and results lines; a killed run resumes; bad rows fail alone."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle.batch import RESULTS_FILE, BatchOptions, read_manifest, run_batch
from restyle.batch.ray_data import RayBatchRunner, RayOptions, plan

COLUMNS = ["id", "photo", "garment", "mask", "prompt", "color", "num_images", "seed", "steps"]
WINDOW = 4  # rows per actor task, and the local run's window: both group rows into the same runs
VOLATILE = ("time", "elapsed_s")  # what may differ between two runs of one row


def _rows() -> list[dict]:
    """20 rows: masks and garment texts, 1 or 2 variants, and two bad rows (missing and unreadable photo)."""
    rows = []
    for i in range(20):
        row = {"id": f"r{i:02d}", "photo": "p.png", "prompt": f"look {i}", "seed": 100 + i, "steps": 2}
        row.update({"garment": "the dress"} if i % 4 == 0 else {"mask": "m.png"})
        row["num_images"] = 2 if i % 5 == 0 else 1
        row["color"] = "red" if i % 3 == 0 else ""
        rows.append(row)
    rows[7]["photo"] = "missing.png"
    rows[13]["photo"] = "broken.png"
    return rows


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from restyle.samples import sample_photo

    root = tmp_path_factory.mktemp("ray-in")
    photo = sample_photo(96, 144)
    photo.save(root / "p.png")
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (30, 50, 66, 110))
    mask.save(root / "m.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(_rows())
    return path


@pytest.fixture(scope="module")
def engine(tiny_models):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler

    models = {name: str(path) for name, path in tiny_models.items()}
    return Restyler(ModelConfig(segmenter=models["segmenter"], inpainter=models["inpainter"], device="cpu"))


def _results(out: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    return {r["key"]: r for r in lines}


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def local_run(engine, manifest, tmp_path_factory):
    """The manifest run here, one torch thread (as each 1-CPU actor has), WINDOW rows at a time."""
    import torch

    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_batch(engine, read_manifest(manifest), out, BatchOptions(max_batch=8, window=WINDOW))
    finally:
        torch.set_num_threads(threads)
    return out, summary


@pytest.fixture(scope="module")
def ray_run(ray_instance, engine, manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray")
    plans = []
    runner = RayBatchRunner(
        engine,
        out,
        BatchOptions(max_batch=8, window=WINDOW),
        RayOptions(actors=2, cpus_per_actor=1),
        on_plan=plans.append,
    )
    summary = runner.run(read_manifest(manifest))
    return out, summary, plans


def test_two_actors_give_the_local_runs_images_and_results(local_run, ray_run):
    local, local_summary = local_run
    out, summary, plans = ray_run
    first = plans[0]
    assert (first.actors, first.gpus, first.cpus, first.rows_per_task) == (2, 0, 1, WINDOW)
    assert (summary.ok, summary.failed, summary.skipped, summary.images) == (18, 2, 0, 22)
    assert (local_summary.ok, local_summary.failed, local_summary.images) == (18, 2, 22)
    mine, theirs = _results(local), _results(out)
    assert sorted(mine) == sorted(theirs) and len(theirs) == 20
    assert len(_lines(out)) == 20  # one line per row: nothing logged twice
    for key, line in mine.items():
        other = theirs[key]
        assert {k: v for k, v in line.items() if k not in VOLATILE} == {
            k: v for k, v in other.items() if k not in VOLATILE
        }, key
        if line["status"] != "ok":
            continue
        for name in [*line["files"]["images"], line["files"]["mask"], line["files"]["grid"]]:
            a, b = np.asarray(Image.open(local / name)), np.asarray(Image.open(out / name))
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert theirs["r07"]["field"] == "photo" and "no such file" in theirs["r07"]["error"]
    assert theirs["r13"]["field"] == "photo" and theirs["r13"]["error_type"] == "InvalidImageError"
    assert theirs["r00"]["seeds"] == [100, 101] and theirs["r00"]["mask_confidence"] is not None
    assert theirs["r03"]["color_delta_e"][0] is not None  # a colour row is scored on the actor too


def test_ray_to_an_output_uri_uploads_the_local_runs_files(
    ray_instance, engine, manifest, local_run, tmp_path
):
    """-o file:///... (pyarrow, as s3:// would be): the actors upload each row's files; the driver keeps
    results.jsonl locally and copies it beside them."""
    local, _ = local_run
    remote = tmp_path / "bucket" / "out"
    runner = RayBatchRunner(
        engine,
        f"file://{remote}",
        BatchOptions(max_batch=8, window=WINDOW, results_dir=tmp_path / "state"),
        RayOptions(actors=2, cpus_per_actor=1),
    )
    summary = runner.run(read_manifest(manifest))
    assert (summary.ok, summary.failed) == (18, 2)
    mine, theirs = _results(local), _results(remote)
    assert (tmp_path / "state" / RESULTS_FILE).is_file() and sorted(theirs) == sorted(mine)
    for line in mine.values():
        for name in line["files"]["images"] if line["status"] == "ok" else []:
            a, b = np.asarray(Image.open(local / name)), np.asarray(Image.open(remote / name))
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_second_ray_run_skips_every_row(ray_instance, engine, manifest, ray_run):
    out, _, _ = ray_run
    runner = RayBatchRunner(engine, out, BatchOptions(window=WINDOW), RayOptions(actors=2, cpus_per_actor=1))
    summary = runner.run(read_manifest(manifest))
    assert (summary.ok, summary.failed, summary.skipped, summary.images) == (0, 0, 20, 0)


def test_retry_failed_runs_only_the_bad_rows_again(ray_instance, engine, manifest, tmp_path):
    rows = read_manifest(manifest)
    out = tmp_path / "out"
    first = RayBatchRunner(engine, out, BatchOptions(window=WINDOW), RayOptions(actors=1, cpus_per_actor=1))
    bad = [r for r in rows if r.key in ("r07", "r13", "r01")]
    assert first.run(bad).failed == 2
    again = RayBatchRunner(
        engine, out, BatchOptions(window=WINDOW, retry_failed=True), RayOptions(actors=1, cpus_per_actor=1)
    ).run(bad)
    assert (again.ok, again.failed, again.skipped) == (0, 2, 1)


def test_a_killed_ray_run_resumes_where_it_stopped(ray_instance, tiny_models, manifest, tmp_path):
    """The CLI on the running Ray instance, killed (SIGKILL) after some rows; the re-run does the rest."""
    out = tmp_path / "out"
    address = ray_instance.get_runtime_context().gcs_address
    command = [
        sys.executable,
        "-m",
        "restyle",
        "batch",
        str(manifest),
        "-o",
        str(out),
        "--ray",
        "--ray-address",
        address,
        "--actors",
        "2",
        "--cpus-per-actor",
        "1",
        "--window",
        "2",
        "--segmenter",
        str(tiny_models["segmenter"]),
        "--inpainter",
        str(tiny_models["inpainter"]),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results = out / RESULTS_FILE
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and len(results.read_text().splitlines()) >= 6:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _results(out)
    assert 6 <= len(before) < 20, len(before)
    assert all(set(line) >= {"key", "status"} for line in _lines(out))  # whole lines only

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # 1: the two bad rows failed
    after = _results(out)
    assert sorted(after) == sorted(r["id"] for r in _rows())
    summary_line = next(line for line in done.stdout.splitlines() if line.startswith("ok "))
    skipped_ok = sum(1 for r in before.values() if r["status"] == "ok")
    skipped_failed = sum(1 for r in before.values() if r["status"] == "failed")
    assert f"skipped {skipped_ok + skipped_failed} of 20 rows" in summary_line, summary_line
    for key, line in after.items():
        if line["status"] == "skipped":
            assert before[key]["status"] in ("ok", "failed")
        elif line["status"] == "ok":
            assert all((out / name).is_file() for name in line["files"]["images"])


def test_the_plan_uses_one_actor_per_gpu_and_spreads_cpus():
    on_gpus = plan(RayOptions(), rows=100, gpus_in_cluster=4, cpus_in_cluster=32, window=16)
    assert (on_gpus.actors, on_gpus.gpus, on_gpus.cpus, on_gpus.rows_per_task) == (4, 1.0, 1.0, 16)
    on_cpus = plan(RayOptions(), rows=3, gpus_in_cluster=0, cpus_in_cluster=8, window=16)
    assert (on_cpus.actors, on_cpus.gpus, on_cpus.cpus, on_cpus.rows_per_task) == (1, 0.0, 8.0, 3)
    two = plan(RayOptions(actors=2), rows=20, gpus_in_cluster=0, cpus_in_cluster=8, window=4)
    assert (two.actors, two.cpus, two.rows_per_task) == (2, 4.0, 4)
    with pytest.raises(Exception, match="--actors: must be at least 1"):
        RayOptions(actors=0).check()
    with pytest.raises(Exception, match="--gpus-per-actor: must be 0 or more, got nan"):
        RayOptions(gpus_per_actor=float("nan")).check()


def test_a_gpu_the_cluster_lacks_is_refused_naming_the_flag(ray_instance, engine, manifest, tmp_path):
    runner = RayBatchRunner(engine, tmp_path / "out", BatchOptions(), RayOptions(actors=1, gpus_per_actor=1))
    with pytest.raises(Exception, match="--gpus-per-actor: 1 actor.* need 1 GPUs; the Ray cluster has 0"):
        runner.run(read_manifest(manifest))
