"""Preview masks over HTTP, /invocations' mask_options and job-id header, and following a job's progress.

The progress tests hold the job with the gated service (tests/serve/conftest.py) until the client has seen
it queued or running, so they do not depend on how fast the machine is. `live` serves the app with uvicorn
on loopback, in a thread, because the client and the CLI talk real HTTP.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle.cli import main
from restyle.client import Client, decode_image, encode_image
from restyle.errors import InvalidImageError
from restyle.serve.app import ServerSettings, create_app
from tests.serve.conftest import GatedService

HEADER = "X-Restyle-Job-Id"
SAFETY_S = 120.0  # a safety net for a hung server, not a budget: every wait ends when its condition holds


def invocation(photo: Image.Image, **over: Any) -> dict[str, Any]:
    """A small /invocations request: 1 image, 1 step, at the photo's own size (no resize)."""
    return {
        "inputs": "a red linen skirt",
        "input_img": encode_image(photo),
        "num_inference_steps": 1,
        "num_images_per_prompt": 1,
        "image_length": max(photo.size),
        "seed": 3,
        **over,
    }


# --- /v1/segment and /invocations in preview mode ---------------------------------------------------
def test_segment_answers_preview(client, photo):
    r = client.post("/v1/segment", json={"image": encode_image(photo), "garment": "the dress"})
    assert r.status_code == 200, r.text[:500]
    assert r.json()["preview"] is True and r.json()["area"] > 0


def test_invocations_mask_prompt_at_the_default_threshold_gives_images(client, photo):
    r = client.post("/invocations", json=invocation(photo, mask_prompt="the dress"))
    assert r.status_code == 200, r.text[:500]
    images = [decode_image(b) for b in r.json()["generated_images"]]
    assert [im.size for im in images] == [photo.size]


def test_invocations_mask_options_reach_the_segmenter(client, photo):
    r = client.post(
        "/invocations", json=invocation(photo, mask_prompt="the dress", mask_options={"threshold": 1.0})
    )
    assert r.status_code == 422, r.text[:500]
    assert r.json()["field"] == "mask_prompt" and "no garment found" in r.json()["message"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"threshold": 2}, "mask_options.threshold"),
        ({"grow": 10_000}, "mask_options.grow"),
        ({"activation": "relu"}, "mask_options.activation"),
        ({"thresold": 0.3}, "mask_options.thresold"),
    ],
)
def test_invocations_bad_mask_options_name_the_field(client, photo, options, field):
    r = client.post("/invocations", json=invocation(photo, mask_prompt="the dress", mask_options=options))
    assert r.status_code == 422, r.text[:500]
    assert r.json()["field"] == field, r.json()


def _changed(photo: Image.Image, b64: str) -> int:
    """How many pixels of the answer differ from the photo (PNG answers: exact outside the mask)."""
    out = np.asarray(decode_image(b64).convert("RGB"), dtype=np.int16)
    return int((np.abs(out - np.asarray(photo, dtype=np.int16)).max(axis=2) > 0).sum())


def test_invocations_grow_and_feather_apply_to_a_given_mask(client, photo, box_mask):
    def changed(**over: Any) -> int:
        body = invocation(photo, mask_img=encode_image(box_mask), image_format="png", **over)
        r = client.post("/invocations", json=body)
        assert r.status_code == 200, r.text[:500]
        return _changed(photo, r.json()["generated_images"][0])

    as_given = changed(mask_options={"grow": 0, "feather": 0})
    grown = changed(mask_options={"grow": 12, "feather": 6})
    box = (70 - 20) * (120 - 40)
    assert 0 < as_given <= box < grown, (as_given, box, grown)


# --- the X-Restyle-Job-Id header --------------------------------------------------------------------
def test_job_id_header_names_the_invocations_job(client, photo, box_mask):
    job_id = "myclientjob0001"
    body = invocation(photo, mask_img=encode_image(box_mask))
    r = client.post("/invocations", json=body, headers={HEADER: job_id})
    assert r.status_code == 200, r.text[:500]
    status = client.get(f"/v1/jobs/{job_id}")
    assert status.status_code == 200, status.text[:500]
    assert status.json()["id"] == job_id
    assert status.json()["state"] == "done" and status.json()["total"] == 1

    again = client.post("/invocations", json=body, headers={HEADER: job_id})
    assert again.status_code == 422, again.text[:500]
    assert again.json()["field"] == HEADER and "exists already" in again.json()["message"]


def test_a_job_id_whose_folder_a_crashed_run_left_is_refused(client, photo, box_mask, tmp_path):
    (tmp_path / "out" / "leftover0001").mkdir(parents=True)  # a job folder without job.json
    body = invocation(photo, mask_img=encode_image(box_mask))
    r = client.post("/invocations", json=body, headers={HEADER: "leftover0001"})
    assert r.status_code == 422 and "exists already" in r.json()["message"], r.text[:500]


@pytest.mark.parametrize("job_id", ["abc", "x" * 10 + "-", "a" * 65, "abc_defgh1"])
def test_a_bad_job_id_header_is_refused(client, photo, box_mask, job_id):
    body = invocation(photo, mask_img=encode_image(box_mask))
    r = client.post("/invocations", json=body, headers={HEADER: job_id})
    assert r.status_code == 422, r.text[:500]
    assert r.json()["field"] == HEADER and HEADER in r.json()["message"]


def test_job_id_header_is_in_the_openapi(client):
    operation = client.get("/openapi.json").json()["paths"]["/invocations"]["post"]
    headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
    assert [p["name"] for p in headers] == [HEADER]
    assert headers[0]["required"] is False and "8-64" in headers[0]["description"]


# --- a live server: the client's and the CLI's progress -----------------------------------------------
@dataclass
class Live:
    """The app on the gated tiny service, served over loopback; `paths` lists the requests it got."""

    url: str
    gate: threading.Event
    service: GatedService
    open_on_poll: bool = False  # open the gate at the first GET /v1/jobs/{id} (someone follows the job)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def live(tiny_engine: Any, tmp_path: Path) -> Iterator[Live]:
    import uvicorn

    settings = ServerSettings(output_dir=tmp_path / "server", warmup=False, timeout_s=SAFETY_S)
    gate = threading.Event()
    service = GatedService(
        tiny_engine, gate=gate, max_pixels=settings.max_pixels, output_dir=settings.output_dir
    )
    app = create_app(settings, lambda s: service)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = Live(f"http://127.0.0.1:{sock.getsockname()[1]}", gate, service)

    @app.middleware("http")
    async def record(request: Any, call_next: Any) -> Any:
        server.paths.append(f"{request.method} {request.url.path}")
        if server.open_on_poll and request.method == "GET" and request.url.path.startswith("/v1/jobs/"):
            gate.set()
        return await call_next(request)

    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        client, deadline = Client(server.url, timeout=10), time.monotonic() + SAFETY_S
        while not client.ping():
            assert thread.is_alive() and time.monotonic() < deadline, "live server did not become ready"
            time.sleep(0.05)
        yield server
    finally:
        gate.set()
        uv.should_exit = True
        thread.join(30)
        sock.close()


def test_client_invoke_reports_the_jobs_progress(live, photo, box_mask):
    seen: list[dict[str, Any]] = []

    def progress(status: dict[str, Any]) -> None:
        seen.append(status)
        if status["state"] == "running" and status["total"] > 0:
            live.gate.set()  # the job waits at its first step until the client has seen it run

    client = Client(live.url, timeout=SAFETY_S)
    images = client.invoke(
        photo, "a red skirt", mask=box_mask, num_images=1, steps=2, image_length=144, progress=progress
    )
    assert [im.size for im in images] == [photo.size]
    assert seen and {s["state"] for s in seen} <= {"queued", "running", "done"}
    assert any(s["state"] == "running" and s["total"] == 2 for s in seen), seen
    assert all(s["total"] in (0, 2) and 0 <= s["step"] <= 2 for s in seen), seen
    ids = {s["id"] for s in seen}
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", ids.pop())


def test_client_invoke_refuses_missing_files_naming_the_field(tmp_path, photo):
    client = Client("http://127.0.0.1:9")  # never reached: the files are read first
    with pytest.raises(InvalidImageError) as err:
        client.invoke(tmp_path / "missing.png", "a skirt", mask=photo)
    assert err.value.field == "input_img" and "missing.png" in str(err.value)
    with pytest.raises(InvalidImageError) as err:
        client.invoke(photo, "a skirt", mask=tmp_path / "missing.png")
    assert err.value.field == "mask_img"
    with pytest.raises(InvalidImageError) as err:
        encode_image(tmp_path / "missing.png")
    assert err.value.field == "image"
    with pytest.raises(InvalidImageError) as err:
        encode_image(str(tmp_path / "missing.png"), field="photo")
    assert err.value.field == "photo"


# --- restyle invoke ---------------------------------------------------------------------------------
def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> tuple[Any, str, str]:
    monkeypatch.setattr(sys, "argv", ["restyle", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["missing.png", "-p", "x"], "Error: IMAGE: no such file: missing.png"),
        (["photo.png", "-p", "x", "--mask", "missing.png"], "Error: --mask: no such file: missing.png"),
    ],
)
def test_invoke_command_missing_file_is_one_clean_line(monkeypatch, capsys, tmp_path, photo, args, expect):
    monkeypatch.chdir(tmp_path)
    photo.save(tmp_path / "photo.png")
    code, _, err = _main(monkeypatch, capsys, ["invoke", "http://127.0.0.1:9", *args])
    assert code == 2 and err.strip() == expect and "Traceback" not in err


def test_invoke_command_masks_by_text_and_follows_the_job(monkeypatch, capsys, tmp_path, photo, live):
    live.open_on_poll = True  # the job waits at its first step until the command asks how it is doing
    photo.save(tmp_path / "photo.png")
    out = tmp_path / "out"
    args = ["invoke", live.url, str(tmp_path / "photo.png"), "-p", "a linen skirt", "-g", "the dress"]
    args += ["-n", "1", "--steps", "2", "--image-length", "144", "--timeout", str(SAFETY_S), "-o", str(out)]
    code, stdout, err = _main(monkeypatch, capsys, args)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["invoke-0.jpg", "invoke-grid.png"]
    assert Image.open(out / "invoke-0.jpg").size == photo.size
    assert "1 images" in stdout
    assert any(re.fullmatch(r"GET /v1/jobs/[0-9a-f]{32}", p) for p in live.paths), live.paths
