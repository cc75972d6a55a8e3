"""Photo and mask cells as URLs and pyarrow URIs (`file://` here; `s3://` and `gs://` go the same way)."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from restyle.batch import RESULTS_FILE, BatchOptions, read_manifest, run_batch
from restyle.batch.storage import is_uri, read_source
from restyle.errors import InvalidParameterError


def _manifest(path: Path, rows: list[dict]) -> Path:
    """A CSV manifest of `rows` (the columns: the first row's keys)."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(files: Path, i: int, **over) -> dict:
    return dict(id=f"r{i}", photo=str(files / "p.png"), mask=str(files / "m.png"), prompt="x", steps=2) | over


@pytest.fixture(scope="module")
def engine(tiny_models):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler

    models = {k: str(v) for k, v in tiny_models.items()}
    return Restyler(ModelConfig(segmenter=models["segmenter"], inpainter=models["inpainter"], device="cpu"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from restyle.samples import sample_photo

    root = tmp_path_factory.mktemp("served")
    photo = sample_photo(96, 144)
    photo.save(root / "p.png")
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (30, 50, 66, 110))
    mask.save(root / "m.png")
    return root


@pytest.fixture(scope="module")
def http_base(files):
    """A loopback HTTP server over `files` (its address), stopped after the module."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(files))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_what_counts_as_a_uri():
    assert is_uri("s3://bucket/a.jpg") and is_uri("file:///tmp/a.png") and is_uri("https://x/y.png")
    assert not is_uri("photos/a.png") and not is_uri("/abs/a.png") and not is_uri("C:/a.png")


def test_uris_and_urls_are_read_as_bytes_local_paths_stay_paths(files, http_base):
    data = (files / "p.png").read_bytes()
    assert read_source(f"file://{files}/p.png", field="photo") == data
    assert read_source(f"{http_base}/p.png", field="photo") == data
    assert read_source(files / "p.png", field="photo") == files / "p.png"


def test_unreadable_sources_name_the_field(files, http_base):
    with pytest.raises(InvalidParameterError, match=r"photo: no such file: file://"):
        read_source(f"file://{files}/missing.png", field="photo")
    with pytest.raises(InvalidParameterError, match=r"mask: .*answered HTTP 404"):
        read_source(f"{http_base}/missing.png", field="mask")
    with pytest.raises(InvalidParameterError, match=r"photo: .* is 1[0-9,]+ bytes; the limit is 100"):
        read_source(f"file://{files}/p.png", field="photo", limit=100)
    with pytest.raises(InvalidParameterError, match=r"photo: cannot fetch http://127\.0\.0\.1:1/"):
        read_source("http://127.0.0.1:1/p.png", field="photo")


def test_a_manifest_of_urls_and_uris_runs(files, http_base, engine, tmp_path):
    rows = [
        {"id": "web", "photo": f"{http_base}/p.png", "mask": f"{http_base}/m.png"},
        {"id": "uri", "photo": f"file://{files}/p.png", "mask": f"file://{files}/m.png"},
        {"id": "gone", "photo": f"{http_base}/nope.png", "mask": f"file://{files}/m.png"},
    ]
    manifest = _manifest(
        tmp_path / "m.csv", [{**r, "prompt": "linen", "steps": 2, "num_images": 1} for r in rows]
    )
    summary = run_batch(engine, read_manifest(manifest), tmp_path / "out", BatchOptions())
    assert (summary.ok, summary.failed) == (2, 1)
    lines = {
        json.loads(x)["key"]: json.loads(x)
        for x in (tmp_path / "out" / RESULTS_FILE).read_text().splitlines()
    }
    assert lines["web"]["status"] == lines["uri"]["status"] == "ok"
    assert lines["gone"]["field"] == "photo" and "HTTP 404" in lines["gone"]["error"]


def test_an_output_uri_gets_the_files_and_the_results_manifest(files, engine, tmp_path):
    """-o file:///... goes through pyarrow as s3:// would: each row's files uploaded whole, results.jsonl
    kept (and locked) locally and copied beside them; a re-run checks the remote files and skips."""
    manifest = _manifest(tmp_path / "m.csv", [_row(files, i, num_images=2, seed=i * 10) for i in range(3)])
    remote, state = tmp_path / "bucket" / "out", tmp_path / "state"
    options = BatchOptions(results_dir=state)
    first = run_batch(engine, read_manifest(manifest), f"file://{remote}", options)
    assert (first.ok, first.failed) == (3, 0) and str(state / RESULTS_FILE) in first.results
    lines = [json.loads(x) for x in (remote / RESULTS_FILE).read_text().splitlines()]
    assert (state / RESULTS_FILE).read_text() == (remote / RESULTS_FILE).read_text() and len(lines) == 3
    for line in lines:
        names = [
            *line["files"]["images"],
            line["files"]["grid"],
            line["files"]["mask"],
            line["files"]["sidecar"],
        ]
        assert all((remote / name).is_file() for name in names), names
    again = run_batch(engine, read_manifest(manifest), f"file://{remote}", options)
    assert (again.ok, again.skipped) == (0, 3)
    (remote / lines[0]["files"]["images"][0]).unlink()  # a file gone from the store: the row runs again
    third = run_batch(engine, read_manifest(manifest), f"file://{remote}", options)
    assert (third.ok, third.skipped) == (1, 2)
    with pytest.raises(InvalidParameterError, match="output: .* an http\\(s\\) URL cannot be written"):
        run_batch(engine, read_manifest(manifest), "https://example.invalid/out", options)


def test_an_interrupted_upload_never_stands_under_the_files_name(tmp_path, monkeypatch):
    """Closing a pyarrow stream commits it: uploads go to a temporary key and are moved into place, and a
    failure (or Ctrl-C) leaves neither the file nor the temporary key, nor the staged copy."""
    from restyle.batch.storage import Destination

    remote = tmp_path / "bucket"
    dest = Destination(f"file://{remote}")
    dest.prepare()
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "a.png").write_bytes(b"x" * (3 << 20))
    real_open = Path.open

    def interrupted_open(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        if self.name == "a.png" and "b" in (args[0] if args else kwargs.get("mode", "r")):
            reads = iter([handle.read(1 << 20)])
            handle.read = lambda *_: next(reads, None) or (_ for _ in ()).throw(KeyboardInterrupt())
        return handle

    monkeypatch.setattr(Path, "open", interrupted_open)
    with pytest.raises(KeyboardInterrupt):
        dest.publish(staging, ["a.png"])
    monkeypatch.setattr(Path, "open", real_open)
    assert sorted(p.name for p in remote.iterdir()) == []  # no a.png, no a.png.part-*
    assert not (staging / "a.png").exists()
    assert not dest.exist(["a.png"])

    (staging / "b.png").write_bytes(b"y" * 10)

    class Refusing:  # the store refuses the final move
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, *args):
            raise OSError("store said no")

    monkeypatch.setattr(dest, "_fs", Refusing(dest._fs))
    with pytest.raises(OSError, match="store said no"):
        dest.publish(staging, ["b.png"])
    assert sorted(p.name for p in remote.iterdir()) == []


def test_a_uri_output_resumes_from_another_folder_and_leaves_no_staging(files, engine, tmp_path, monkeypatch):
    """A run that finds no local results.jsonl starts from the store's copy; the staging folder goes."""
    import tempfile

    manifest = _manifest(tmp_path / "m.csv", [_row(files, i, num_images=1) for i in range(2)])
    staged: list[Path] = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: staged.append(Path(real(**kw))) or staged[-1])
    uri = f"file://{tmp_path / 'bucket'}"
    first = run_batch(engine, read_manifest(manifest), uri, BatchOptions(results_dir=tmp_path / "here"))
    assert first.ok == 2 and staged and not any(p.exists() for p in staged)
    elsewhere = run_batch(engine, read_manifest(manifest), uri, BatchOptions(results_dir=tmp_path / "there"))
    assert (elsewhere.ok, elsewhere.skipped) == (0, 2)
    monkeypatch.chdir(tmp_path)  # the default results folder: named after the URI, with its hash
    default = run_batch(engine, read_manifest(manifest), uri, BatchOptions())
    assert default.skipped == 2 and ".restyle-batch" in default.results
