"""`restyle batch` on the tiny models: manifests, outputs, batching, resume, bad rows, folder + template."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from restyle.batch import RESULTS_FILE, BatchOptions, ManifestError, read_manifest, read_rows, run_batch
from restyle.batch.runner import plan_batches

COLUMNS = ["id", "photo", "garment", "mask", "prompt", "type", "color", "num_images", "seed", "steps"]
ROWS = [  # 8 jobs: masks (cheap) and two garment texts; one shape, so they batch together
    {"id": "a", "photo": "photos/p.png", "mask": "masks/m.png", "prompt": "summer", "seed": 1},
    {"id": "b", "photo": "photos/p.png", "mask": "masks/m.png", "type": "skirt", "color": "red", "seed": 2},
    {"id": "c", "photo": "photos/p.png", "mask": "masks/m.png", "type": "dress", "num_images": 2, "seed": 3},
    {"id": "d", "photo": "photos/p.png", "garment": "the dress", "type": "skirt", "seed": 4},
    {"id": "e", "photo": "photos/p.png", "mask": "masks/m.png", "prompt": "denim look", "seed": 5},
    {"id": "f", "photo": "photos/p.png", "mask": "masks/m.png", "type": "coat", "color": "navy", "seed": 6},
    {"id": "g", "photo": "photos/p.png", "garment": "the dress|the skirt", "type": "gown", "seed": 7},
    {"id": "h", "photo": "photos/p.png", "mask": "masks/m.png", "type": "top", "num_images": 2, "seed": 8},
]


def _cells(row: dict) -> dict:
    return {"num_images": 1, "steps": 2, **row}


@pytest.fixture(scope="module")
def engine(tiny_models):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler

    models = {name: str(path) for name, path in tiny_models.items()}
    return Restyler(ModelConfig(segmenter=models["segmenter"], inpainter=models["inpainter"], device="cpu"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder with photos/p.png, masks/m.png and the 8 rows as manifest.csv and manifest.jsonl."""
    from restyle.samples import sample_photo

    root = tmp_path_factory.mktemp("batch-in")
    (root / "photos").mkdir()
    (root / "masks").mkdir()
    photo = sample_photo(96, 144)
    photo.save(root / "photos" / "p.png")
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (30, 50, 66, 110))
    mask.save(root / "masks" / "m.png")
    _write_csv(root / "manifest.csv", [_cells(r) for r in ROWS])
    _write_jsonl(root / "manifest.jsonl", [_cells(r) for r in ROWS])
    return root


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _results(out: Path) -> dict[str, dict]:
    """The last results line of each key."""
    lines = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    return {r["key"]: r for r in lines}


def _pixels(out: Path, record: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(out / name)) for name in record["files"]["images"]]


@pytest.fixture(scope="module")
def batched(engine, inputs, tmp_path_factory):
    """The CSV manifest run once, batched (max 8 images): (output folder, summary)."""
    out = tmp_path_factory.mktemp("batched")
    summary = run_batch(engine, read_manifest(inputs / "manifest.csv"), out, BatchOptions(max_batch=8))
    return out, summary


def test_a_csv_manifest_writes_what_restyle_style_writes(batched):
    out, summary = batched
    assert (summary.ok, summary.failed, summary.skipped, summary.images) == (8, 0, 0, 10)
    results = _results(out)
    assert len((out / RESULTS_FILE).read_text().splitlines()) == 8
    for key, record in results.items():
        assert record["status"] == "ok" and record["error"] is None
        sidecar = json.loads((out / f"{key}.json").read_text())
        assert [i["file"] for i in sidecar["images"]] == record["files"]["images"]
        assert sidecar["mask"] == f"{key}-mask.png" and (out / f"{key}-grid.png").is_file()
        assert all((out / name).is_file() for name in record["files"]["images"])
        assert [i["seed"] for i in sidecar["images"]] == record["seeds"]
        assert 0 < record["mask_area"] < 1
    assert results["a"]["seeds"] == [1] and results["c"]["seeds"] == [3, 4]
    assert results["d"]["mask_confidence"] is not None and results["a"]["mask_confidence"] is None
    assert results["b"]["color_delta_e"][0] is not None  # "red" is a vocabulary colour
    assert results["a"]["color_delta_e"] is None
    assert max(r["batch"] for r in results.values()) > 1  # rows were denoised together


def test_a_seed_gives_the_same_pixels_alone_or_batched(engine, inputs, batched, tmp_path):
    out, _ = batched
    alone = tmp_path / "alone"
    rows = [row for row in read_manifest(inputs / "manifest.jsonl") if row.key in ("a", "c", "g")]
    summary = run_batch(engine, rows, alone, BatchOptions(max_batch=1))
    assert summary.ok == 3
    together, single = _results(out), _results(alone)
    assert set(single) <= set(together)  # ids: the same keys from CSV and JSONL
    for key in single:
        assert single[key]["batch"] == 1 and (key == "g" or together[key]["batch"] > 1)
        for a, b in zip(_pixels(out, together[key]), _pixels(alone, single[key]), strict=True):
            np.testing.assert_array_equal(a, b)


def test_an_interrupted_run_resumes_where_it_stopped(engine, inputs, batched, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    rows = read_manifest(inputs / "manifest.csv")

    def kill_after_three(record):
        if len(_results(out)) == 3:
            raise KeyboardInterrupt

    first = run_batch(engine, rows, out, BatchOptions(max_batch=2), on_record=kill_after_three)
    assert first.interrupted and first.ok == 3
    done = _results(out)
    stamps = {name: (out / name).stat().st_mtime_ns for r in done.values() for name in r["files"]["images"]}
    with (out / RESULTS_FILE).open("a") as fh:
        fh.write('{"key": "x", "status": "o')  # a crash in the middle of a line
    denoised = []
    real = engine.inpainter.run_batch
    monkeypatch.setattr(
        engine.inpainter, "run_batch", lambda items, **kw: denoised.extend(items) or real(items)
    )
    second = run_batch(engine, rows, out, BatchOptions(max_batch=8))
    assert (second.ok, second.skipped, second.failed) == (5, 3, 0)
    assert len(denoised) == 5 and {p.seeds[0] for p in denoised}.isdisjoint(
        {r["seeds"][0] for r in done.values()}
    )
    assert all((out / name).stat().st_mtime_ns == t for name, t in stamps.items())  # not recomputed
    final, reference = _results(out), _results(batched[0])
    assert "x" not in final and {r["status"] for k, r in final.items() if k in done} == {"skipped"}
    for key, record in reference.items():
        assert final[key]["files"] == record["files"] and final[key]["seeds"] == record["seeds"]
        for a, b in zip(_pixels(out, final[key]), _pixels(batched[0], record), strict=True):
            # batches of other sizes than the reference's: at most float rounding (Inpainter.run_batch)
            assert np.abs(a.astype(int) - b).max() <= 1


def test_bad_rows_fail_alone_and_retry_failed_runs_them_again(engine, inputs, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(inputs / "photos", root / "photos")
    shutil.copytree(inputs / "masks", root / "masks")
    (root / "photos" / "broken.png").write_text("not an image")
    good = {"photo": "photos/p.png", "mask": "masks/m.png", "prompt": "linen", "steps": 2, "num_images": 1}
    rows = [
        {**good, "id": "missing", "photo": "photos/later.png"},
        {**good, "id": "broken", "photo": "photos/broken.png"},
        {**good, "id": "empty", "mask": None, "garment": " "},
        {**good, "id": "steps", "steps": 500},
        {**good, "id": "seed", "seed": "abc"},
        {**good, "id": "good", "seed": 11},
    ]
    _write_jsonl(root / "m.jsonl", rows)
    out = root / "out"
    first = run_batch(engine, read_manifest(root / "m.jsonl"), out)
    res = _results(out)
    assert (first.ok, first.failed) == (1, 5) and res["good"]["status"] == "ok"
    assert res["missing"]["error"].startswith("photo: no such file") and res["missing"]["field"] == "photo"
    assert "not a readable image" in res["broken"]["error"]
    assert res["empty"]["error"] == "garment: must not be empty"
    assert res["steps"]["field"] == "steps" and "500" in res["steps"]["error"]
    assert res["seed"]["error"] == "seed: must be an integer, got 'abc'"
    shutil.copy(root / "photos" / "p.png", root / "photos" / "later.png")  # the missing photo arrives
    again = run_batch(engine, read_manifest(root / "m.jsonl"), out)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 6)  # failed rows wait for --retry-failed
    retried = run_batch(engine, read_manifest(root / "m.jsonl"), out, BatchOptions(retry_failed=True))
    assert (retried.ok, retried.failed, retried.skipped) == (1, 4, 1)
    assert _results(out)["missing"]["status"] == "ok"


def test_a_folder_and_a_template_through_the_command(tiny_models, inputs, tmp_path):
    from restyle.cli.batch import commands

    app = typer.Typer()
    app.callback()(lambda: None)
    app.registered_commands += commands.registered_commands
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("one.png", "two.jpg"):
        Image.open(inputs / "photos" / "p.png").convert("RGB").save(folder / name)
    (folder / "notes.txt").write_text("not a photo")
    template = tmp_path / "req.json"
    template.write_text(json.dumps({"garment": "the dress", "type": "skirt", "num_images": 1, "steps": 2}))
    out = tmp_path / "out"
    flags = ["--segmenter", str(tiny_models["segmenter"]), "--inpainter", str(tiny_models["inpainter"])]
    args = ["batch", str(folder), "--template", str(template), "--seed", "5", "-o", str(out), *flags]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "ok 2, failed 0, skipped 0 of 2 rows" in result.output
    records = _results(out)
    assert sorted(r["photo"] for r in records.values()) == ["one.png", "two.jpg"]
    assert all(r["seeds"] == [5] and r["key"].startswith(Path(r["photo"]).stem) for r in records.values())
    again = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert again.exit_code == 0 and "skipped 2 of 2" in again.output
    changed = CliRunner().invoke(app, [*args, "--device", "cpu", "--steps", "1"])  # another request: new keys
    assert changed.exit_code == 0 and "ok 2, failed 0, skipped 0" in changed.output


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("m.csv", "photo,colour\np.png,red\n", "m.csv:1:2: unknown column 'colour'"),
        ("m.csv", "garment\nthe dress\n", "m.csv:1: no 'photo' column"),
        ("m.csv", "photo,color\np.png,red,extra\n", "m.csv:2:3: 3 cells"),
        ("m.csv", "", "m.csv: empty file"),
        ("m.jsonl", '{"photo": "p.png"}\n{"photo": "p.png",}\n', "m.jsonl:2:19: not valid JSON"),
        ("m.jsonl", '["p.png"]\n', "m.jsonl:1: expected a JSON object"),
        ("m.jsonl", '{"id": "a", "photo": "p.png"}\n{"id": "a", "photo": "q.png"}\n', "m.jsonl:2: id 'a'"),
        ("m.jsonl", '{"id": "../a", "photo": "p.png"}\n', "m.jsonl:1 (id): id '../a'"),
        ("m.txt", "photo\n", "m.txt: a manifest is .csv or .jsonl"),
    ],
)
def test_an_unusable_manifest_is_one_error_naming_file_line_and_column(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError) as caught:
        read_rows(tmp_path / name)
    assert str(caught.value).startswith(f"{tmp_path / name}"[: -len(name)] + where), str(caught.value)


def test_keys_are_stable_content_hashes_without_ids(tmp_path):
    (tmp_path / "m.csv").write_text("photo,prompt\nshop/p 1.png,red\nshop/p 1.png,red\nq.png,blue\n")
    keys = [row.key for row in read_rows(tmp_path / "m.csv")]
    assert keys == [row.key for row in read_rows(tmp_path / "m.csv")]
    assert keys[0].startswith("p-1-") and keys[1] == keys[0] + "-2" and keys[2].startswith("q-")
    assert read_rows(tmp_path / "m.csv", {"steps": 3})[0].key != keys[0]  # another request, another key


def test_runs_group_by_key_up_to_max_batch_images():
    def job(key, n):
        return SimpleNamespace(name=f"{key}{n}", prepared=SimpleNamespace(key=key, num_images=n))

    jobs = [job("a", 2), job("b", 1), job("a", 4), job("a", 3), job("b", 9)]
    runs = plan_batches(jobs, max_batch=6)
    assert [[j.name for j in run] for run in runs] == [["a2", "a4"], ["a3"], ["b1"], ["b9"]]


def test_a_refused_second_run_leaves_the_first_runs_log_alone(tmp_path):
    import os

    from restyle.batch.runner import ResultsLog
    from restyle.errors import RestyleError

    path = tmp_path / "results.jsonl"
    first = ResultsLog(path)
    first.append({"key": "row0", "status": "ok"})
    os.write(first._fd, b'{"key": "row1", ')  # the first run is in the middle of a line
    with pytest.raises(RestyleError, match="another restyle batch is writing here"):
        ResultsLog(path)
    os.write(first._fd, b'"status": "ok"}\n')
    first.close()
    again = ResultsLog(path)
    assert set(again.latest) == {"row0", "row1"}
    again.close()
