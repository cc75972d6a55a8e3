"""Hostile inputs and faults (issue 15), grouped by cause. Each ends as a 4xx naming the field and the
limit (HTTP) or one line (CLI), with the process healthy and nothing lost or half-written.

The training-side cases (photos, metadata.jsonl, checkpoints) are in tests/train/test_hostile_training.py.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from restyle.errors import InvalidImageError, InvalidParameterError, UnusableMaskError
from restyle.images import MAX_ASPECT, load_image, load_mask
from restyle.outputs import grid

# --- cause: untrusted image files -------------------------------------------------------------------


def _png(img: Image.Image, info: PngImagePlugin.PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


def _png_with_bomb_chunk(kind: bytes) -> bytes:
    """A small valid PNG with a compressed text/profile chunk that inflates to 64 MB (an ~64 KB file)."""
    plain = _png(Image.new("RGB", (32, 32), (200, 100, 50)))
    bomb = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)
    if kind == b"zTXt":
        data = b"Comment\0\0" + bomb
    elif kind == b"iCCP":
        data = b"icc\0\0" + bomb
    else:  # iTXt, compressed
        data = b"Comment\0\1\0\0\0" + bomb
    head = plain[:33]  # signature + IHDR
    return head + _chunk(kind, data) + plain[33:]


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP", b"iTXt"])
def test_a_png_chunk_that_inflates_to_64_mb_is_a_clear_error(kind):
    data = _png_with_bomb_chunk(kind)
    assert len(data) < 200_000
    with pytest.raises(InvalidImageError) as err:
        load_image(data, field="image")
        load_mask(data, size=(32, 32), field="mask")
    assert err.value.field == "image"


def test_an_eps_upload_is_refused_without_running_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Pillow handed an upload to Ghostscript")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", must_not_run)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", must_not_run)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n0 0 moveto 64 64 lineto stroke\nshowpage\n"
    with pytest.raises(InvalidImageError, match="not a readable image"):
        load_image(eps, field="image")


def test_a_strip_shaped_photo_inside_the_pixel_limit_is_refused_by_its_aspect():
    """100000 x 8 is 0.8 MP: inside the pixel limit, but every derived image scaled with it."""
    strip = _png(Image.new("L", (100_000, 8), 128))
    with pytest.raises(InvalidImageError) as err:
        load_image(strip, field="image")
    assert "longest side" in str(err.value) or f"{MAX_ASPECT:.0f}:1" in str(err.value)
    wide = _png(Image.new("RGB", (1000, 100), (1, 2, 3)))
    with pytest.raises(InvalidImageError, match=r"10:1; the limit is 8:1"):
        load_image(wide, field="image")
    assert load_image(_png(Image.new("RGB", (800, 100))), field="image").size == (800, 100)  # 8:1 is fine


def test_the_result_grid_costs_at_most_four_heights_per_panel_whatever_the_shapes():
    out = grid([Image.new("RGB", (100_000, 8)), Image.new("RGB", (96, 144)), Image.new("RGB", (8, 4000))])
    assert out.height == 384
    assert out.width <= 3 * 4 * 384 + 2 * 8


def test_a_palette_mask_with_transparency_is_read_like_an_alpha_mask():
    """A white shape on transparent black, saved as a palette PNG with tRNS: only the shape is repainted."""
    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 255), (10, 5, 30, 25))
    palette = rgba.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.info["transparency"] = palette.getpixel((0, 0))
    data = _png(palette)
    assert Image.open(io.BytesIO(data)).mode == "P"
    mask = load_mask(data, size=(40, 30))
    assert mask.getbbox() == (10, 5, 30, 25)
    assert mask.getpixel((0, 0)) == 0 and mask.getpixel((20, 15)) == 255


def test_a_mask_of_another_size_or_empty_is_422_as_documented():
    with pytest.raises(UnusableMaskError) as err:
        load_mask(_png(Image.new("L", (10, 10), 255)), size=(40, 30))
    assert err.value.status_code == 422 and err.value.field == "mask"


# --- cause: requests from other places than the user's own ---------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A key-less app (no models needed for these routes)."""
    from fastapi.testclient import TestClient

    from restyle.serve.app import ServerSettings, create_app

    def no_models(settings: Any) -> Any:
        raise RuntimeError("not needed")

    out = tmp_path_factory.mktemp("out")
    app = create_app(ServerSettings(output_dir=out, warmup=False), no_models)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        yield client, out


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "127.0.0.1.nip.io", "evil"])
def test_a_keyless_server_answers_no_foreign_host_name(served, host):
    """DNS rebinding: a page on attacker.example whose name now points at 127.0.0.1."""
    client, _ = served
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/prompt"), ("GET", "/")):
        r = client.request(method, path, headers={"Host": host}, json={} if method == "POST" else None)
        assert r.status_code == 421, (method, path, r.text)
        body = r.json()
        assert body["field"] == "Host" and "RESTYLE_API_KEY" in body["message"]


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "app.localhost"]
)
def test_loopback_host_names_are_answered(served, host):
    client, _ = served
    assert client.get("/v1/vocabulary", headers={"Host": host}).status_code == 200


def test_with_an_api_key_any_host_reaches_the_key_check(tmp_path):
    from fastapi.testclient import TestClient

    from restyle.serve.app import ServerSettings, create_app

    app = create_app(ServerSettings(output_dir=tmp_path, api_key="k3y", warmup=False), lambda s: None)
    with TestClient(app, base_url="http://api.example.com", raise_server_exceptions=False) as client:
        assert client.get("/v1/vocabulary").status_code == 401
        assert client.get("/v1/vocabulary", headers={"X-API-Key": "k3y"}).status_code == 200


def test_allowed_hosts_and_a_gateway(tmp_path):
    from fastapi.testclient import TestClient

    from restyle.serve.app import ServerSettings, create_app

    for allowed, host, status in ((("studio.lan",), "studio.lan:8080", 200), (("*",), "10.0.0.7:8080", 200)):
        app = create_app(
            ServerSettings(output_dir=tmp_path, warmup=False, allowed_hosts=allowed), lambda s: None
        )
        with TestClient(app, base_url=f"http://{host}", raise_server_exceptions=False) as client:
            assert client.get("/v1/vocabulary").status_code == status


def test_serve_answers_its_own_bound_address_and_allow_host():
    from restyle.cli.serve import _served_names

    assert _served_names("127.0.0.1", None) == ()
    assert _served_names("0.0.0.0", ["studio.lan"]) == ("studio.lan",)
    assert _served_names("192.168.1.5", None) == ("192.168.1.5",)


def test_head_is_answered_like_get_without_a_body(served):
    client, _ = served
    for path in ("/ping", "/v1/models", "/v1/vocabulary"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b""


# --- cause: job records and the output folder ----------------------------------------------------------


def _store(root: Path):
    from restyle.serve.jobs import JobStore

    return JobStore(root)


def test_an_accepted_job_is_on_disk_before_it_runs_and_interrupted_after_a_crash(tmp_path):
    """kill -9 with one job running and one queued: after the restart both ids answer, as interrupted."""
    from restyle.serve.jobs import Job

    store = _store(tmp_path)
    running, queued = Job(run=lambda *a: None, kind="style"), Job(run=lambda *a: None, kind="style")
    store.add(running)
    store.add(queued)
    for job in (running, queued):
        assert json.loads((tmp_path / job.id / "job.json").read_text())["state"] == "queued"
    # (the process dies here: nothing else is written)
    restarted = _store(tmp_path)
    assert sorted(restarted.recover()) == sorted([running.id, queued.id])
    for job in (running, queued):
        record = restarted.get(job.id)
        assert record["state"] == "failed" and record["error"]["error"] == "interrupted"
        assert "send the request again" in record["error"]["message"]
    assert restarted.recover() == []  # final records are left alone


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not utf-8",
        b"{not json",
        b"[1, 2]",
        b'{"id": "x"}',
        b'{"id":"x","state":"odd","step":0,"total":0,"created":1}',
    ],
)
def test_a_damaged_job_record_is_a_404_naming_it_not_a_500(served, content):
    client, out = served
    job_id = "damaged" + str(abs(hash(content)) % 10_000)
    (out / job_id).mkdir()
    (out / job_id / "job.json").write_bytes(content)
    r = client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 404, r.text
    assert "record on disk" in r.json()["message"]


def test_job_files_are_only_regular_files_inside_the_jobs_folder(served, tmp_path):
    client, out = served
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (out / "linkedjob").symlink_to(tmp_path)  # out/x -> elsewhere
    (out / "realjob").mkdir()
    (out / "realjob" / "leak.txt").symlink_to(secret)  # a file linking outside
    (out / "realjob" / "ok.txt").write_text("yours")
    assert client.get("/v1/jobs/linkedjob/files/secret.txt").status_code == 404
    assert client.get("/v1/jobs/realjob/files/leak.txt").status_code == 404
    assert client.get("/v1/jobs/realjob/files/ok.txt").text == "yours"


def test_a_full_disk_is_507_leaves_no_temp_file_and_ping_reports_it(served, monkeypatch):
    import errno

    import restyle.serve.jobs as jobs

    client, out = served
    real = jobs.atomic_write

    def full(path: Path, write: Any) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs, "atomic_write", full)
    state = client.app.state.restyle
    from restyle.serve.routes import job_for

    with pytest.raises(jobs.StorageError) as err:
        state.ready, state.service = True, object()
        job_for(state, "style", lambda *a: None)
    assert err.value.status_code == 507 and "no space left" in err.value.message
    assert not list(out.rglob("*.tmp"))
    state.ready, state.service = False, None
    r = client.get("/ping")
    assert r.status_code == 503 and "no space left" in r.json()["error"]
    monkeypatch.setattr(jobs, "atomic_write", real)  # space again: /ping recovers by itself
    assert client.get("/ping").json().get("phase") != "storage"


def test_a_read_only_output_folder_is_refused_at_start_in_one_line(tmp_path, monkeypatch):
    """`serve -o FOLDER` probes FOLDER before binding or loading anything (root can write through chmod,
    so the read-only file system is simulated where the write happens)."""
    import errno

    from typer.testing import CliRunner

    import restyle.serve.jobs as jobs
    from restyle.cli import app

    def read_only(path: Path, write: Any) -> Path:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(jobs, "atomic_write", read_only)
    result = CliRunner().invoke(app, ["serve", "-o", str(tmp_path / "ro"), "--port", "1"])
    assert isinstance(result.exception, jobs.StorageError), result.output
    assert "the file system is read-only; nothing was saved" in str(result.exception)


# --- cause: server and CLI flags -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-body-mb", "nan"], "--max-body-mb: nan is not a finite number"),
        (["--max-body-mb", "inf"], "--max-body-mb: inf is not a finite number"),
        (["--timeout", "-5"], "--timeout: -5.0 is below 1"),
        (["--timeout", "nan"], "--timeout: nan is not a finite number"),
        (["--max-pixels", "0"], "--max-pixels: 0 is below 64"),
        (["--max-pixels", "90000000"], "--max-pixels: 90000000 is above 4e+07"),
        (["--max-response-mb", "0"], "--max-response-mb: 0.0 is below 0.001"),
    ],
)
def test_serve_flags_out_of_range_are_one_line_before_anything_starts(args, words):
    from typer.testing import CliRunner

    from restyle.cli import app

    result = CliRunner().invoke(app, ["serve", *args])
    assert isinstance(result.exception, InvalidParameterError), result.output
    assert words in str(result.exception)


def test_a_non_ascii_api_key_is_refused_at_start():
    from typer.testing import CliRunner

    from restyle.cli import app

    result = CliRunner().invoke(app, ["serve"], env={"RESTYLE_API_KEY": "clé-secrète"})
    assert isinstance(result.exception, InvalidParameterError)
    assert "printable ASCII" in str(result.exception)


def test_an_os_error_in_the_cli_is_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "restyle", "sample", "/dev/null/out/photo.png"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: /dev/null/out") and "Not a directory" in last


# --- cause: model folders and archives from elsewhere --------------------------------------------------


@pytest.fixture
def model_copy(tiny_models, tmp_path) -> Path:
    import shutil

    root = tmp_path / "model"
    shutil.copytree(tiny_models["inpainter"], root)
    return root


def _package(root: Path, tmp_path: Path) -> Any:
    from restyle.package import build_archive

    return build_archive(root, tmp_path / "model.tar.gz")


def test_a_folder_link_loop_is_refused_not_walked_forever(model_copy, tmp_path):
    from restyle.package import ArchiveError

    (model_copy / "unet" / "loop").symlink_to(model_copy / "unet")
    with pytest.raises(ArchiveError, match="unet/loop/: a folder link"):
        _package(model_copy, tmp_path)
    assert not list(tmp_path.glob("*.tar.gz")) and not list(tmp_path.glob(".*.tmp"))


def test_a_fifo_in_the_folder_is_refused_instead_of_blocking(model_copy, tmp_path):
    from restyle.package import ArchiveError

    os.mkfifo(model_copy / "vae" / "pipe")
    with pytest.raises(ArchiveError, match="vae/pipe: not a regular file"):
        _package(model_copy, tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_link_out_of_the_folder_is_not_packed(model_copy, tmp_path):
    from restyle.package import ArchiveError

    secret = tmp_path / "shadow"
    secret.write_text("root:x:0:0")
    (model_copy / "unet" / "notes.txt").symlink_to(secret)  # as /etc/shadow would be
    with pytest.raises(ArchiveError, match="outside the model folder"):
        _package(model_copy, tmp_path)


def test_a_link_into_a_hugging_face_cache_blob_is_packed_as_its_bytes(model_copy, tmp_path):
    import tarfile

    blobs = tmp_path / "hub" / "models--org--name" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc123").write_text('{"_class_name": "PNDMScheduler"}')
    (model_copy / "scheduler" / "scheduler_config.json").unlink()
    (model_copy / "scheduler" / "scheduler_config.json").symlink_to(blobs / "abc123")
    _package(model_copy, tmp_path)
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        member = tar.getmember("scheduler/scheduler_config.json")
        assert member.isfile() and b"PNDMScheduler" in tar.extractfile(member).read()


def _tar_with(tmp_path: Path, members: list[tuple[str, bytes]]) -> Path:
    import tarfile

    out = tmp_path / "hostile.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_an_archive_with_a_member_twice_is_refused_before_any_of_its_code_runs(tiny_models, tmp_path):
    """A second code/inference.py would replace the first on extraction: refused by name, and plain
    verify never executes the archive's code at all."""
    import tarfile

    from restyle.package import ArchiveError, build_archive
    from restyle.package.verify import verify_archive

    good = tmp_path / "good.tar.gz"
    build_archive(tiny_models["inpainter"], good)
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('the archive ran code')\n".encode()
    bad = tmp_path / "twice.tar.gz"
    with tarfile.open(good) as src, tarfile.open(bad, "w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(evil)
        dst.addfile(info, io.BytesIO(evil))
    with pytest.raises(ArchiveError, match="'code/inference.py' appears twice"):
        verify_archive(bad, run=True)
    assert not marker.exists()
    report = verify_archive(good)  # the default: layout and safety only
    assert "handler" not in report and not marker.exists()


def test_an_archive_larger_than_the_free_space_is_refused_before_extracting(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from restyle.package import ArchiveError, safe_extract

    archive = _tar_with(tmp_path, [("model_index.json", b"{}"), ("unet/big.bin", b"\0" * 4_000_000)])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1_000_000, 1_000_000))
    with pytest.raises(ArchiveError, match="nothing was extracted"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "unet").exists()


# --- cause: many event streams, and the signal to stop ----------------------------------------------


def test_event_streams_wake_on_changes_instead_of_polling():
    """300 open streams used to poll 10 times a second each; now a stream wakes when a job changes."""
    import asyncio
    import threading

    from restyle.serve.jobs import Job, Worker

    worker = Worker(queue_size=4)
    worker.start()
    gate = threading.Event()

    def run(job: Job) -> None:
        gate.wait(10)
        for i in range(1, 4):
            job.progress(i, 3)

    async def watch() -> tuple[int, int]:
        woken = 0
        job = worker.submit(Job(run=run, kind="style"))
        quiet = await worker.changes.wait(0.5)  # running, then nothing: at most the start wakes it
        gate.set()
        while not job.ended:
            if await worker.changes.wait(5):
                woken += 1
        return int(quiet), woken

    try:
        quiet, woken = asyncio.run(watch())
    finally:
        worker.stop(1)
    assert quiet <= 1
    assert 1 <= woken <= 5  # the steps and the end, not one wake every 0.1 s


def test_open_event_streams_are_bounded(served, monkeypatch):
    import restyle.serve.routes as routes

    client, out = served
    (out / "streamjob1").mkdir()
    record = {"id": "streamjob1", "state": "done", "step": 1, "total": 1, "created": 1.0, "kind": "style"}
    (out / "streamjob1" / "job.json").write_text(json.dumps(record))
    assert client.get("/v1/jobs/streamjob1/events").status_code == 200  # a finished job: one event, ended
    monkeypatch.setattr(routes, "MAX_STREAMS", 0)
    r = client.get("/v1/jobs/streamjob1/events")
    assert r.status_code == 503 and r.json()["error"] == "too_many_streams"
    assert client.app.state.restyle.streams == 0  # the first stream gave its place back


def test_on_the_stop_signal_queued_work_fails_at_once_and_the_running_job_goes_on(served):
    import threading
    import time
    from types import SimpleNamespace

    from restyle.serve.app import begin_shutdown
    from restyle.serve.routes import job_for

    client, _ = served
    state = client.app.state.restyle
    gate = threading.Event()
    state.ready, state.service = True, SimpleNamespace(preview=False)
    try:
        running = job_for(state, "style", lambda job: gate.wait(10))
        queued = job_for(state, "style", lambda job: None)
        deadline = time.monotonic() + 5
        while running.state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        begin_shutdown(client.app)  # what the SIGTERM handler calls, before uvicorn's drain
        assert queued._done.wait(5)
        assert queued.state == "failed" and queued.error["error"] == "shutdown"
        assert not running.ended and client.get("/ping").status_code == 503
    finally:
        gate.set()
        running._done.wait(5)
        state.ready, state.service, state.phase, state.worker.accepting = False, None, "starting", True
    assert running.state == "done"


def test_a_job_that_ends_at_once_keeps_its_final_record(served):
    """The accepted-record is written before the job is queued, so the worker's final record (which may
    come at once) is never overwritten by it."""
    from types import SimpleNamespace

    from restyle.serve.routes import job_for

    client, out = served
    state = client.app.state.restyle
    state.ready, state.service = True, SimpleNamespace(preview=False)

    def fail(job: Any) -> None:
        raise InvalidParameterError("style: no such style", field="style")

    try:
        for _ in range(20):
            job = job_for(state, "style", fail)
            assert job._done.wait(5)
            assert json.loads((out / job.id / "job.json").read_text())["state"] == "failed", job.id
    finally:
        state.ready, state.service = False, None


def test_training_masks_get_the_same_reading_as_request_masks(tmp_path):
    """masks/ in a training folder: a palette mask with transparency is its shape, a chunk bomb is named."""
    from restyle.train.data import check_masks, read_mask

    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 255), (10, 5, 30, 25))
    palette = rgba.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.info["transparency"] = palette.getpixel((0, 0))
    (tmp_path / "a-mask.png").write_bytes(_png(palette))
    assert read_mask(tmp_path / "a-mask.png", (40, 30)).getbbox() == (10, 5, 30, 25)
    photo = tmp_path / "b.png"
    photo.write_bytes(_png(Image.new("RGB", (32, 32))))
    (tmp_path / "b-mask.png").write_bytes(_png_with_bomb_chunk(b"zTXt"))
    with pytest.raises(InvalidImageError, match="b-mask.png: unreadable mask"):
        check_masks({"b.png": tmp_path / "b-mask.png"}, [photo], "--instance-dir")
