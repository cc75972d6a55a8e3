"""Every segmenter x inpainter pair behind the server: the original /invocations payload (masked by text),
/v1/style, a job, and /v1/models naming the backends, on tiny models of each family."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from restyle.client import decode_image, encode_image
from restyle.samples import ORIGINAL_PROMPT, sample_photo
from restyle.serve.app import ServerSettings, create_app
from restyle.serve.handler import Service
from tests.conftest import FAMILIES, SEGMENTERS
from tests.serve.conftest import wait_ready

PAIRS = list(itertools.product(SEGMENTERS, FAMILIES))


@pytest.fixture
def pair_client(backend_segmenter, family_inpainter, family_folder, segmenter_folder, tmp_path):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler

    opened: list[TestClient] = []

    def make(segmenter: str, family: str) -> TestClient:
        config = ModelConfig(
            segmenter=str(segmenter_folder(segmenter)), inpainter=str(family_folder(family)), device="cpu"
        )
        engine = Restyler(
            config, segmenter=backend_segmenter(segmenter), inpainter=family_inpainter(family), preview=True
        )
        settings = ServerSettings(output_dir=tmp_path / "out", warmup=False)
        app = create_app(
            settings, lambda s: Service(engine, max_pixels=s.max_pixels, output_dir=s.output_dir)
        )
        client = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        wait_ready(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _job(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/jobs", json=payload)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = client.get(f"/v1/jobs/{r.json()['id']}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.1)
    raise AssertionError("job did not finish")


@pytest.mark.parametrize(("segmenter", "family"), PAIRS)
def test_every_pair_serves_the_contract_and_restyles_api(pair_client, segmenter, family):
    client = pair_client(segmenter, family)
    photo = sample_photo(96, 144)
    info = client.get("/v1/models").json()
    assert info["backend"]["family"] == family and info["backend"]["native_size"] == 64
    assert info["segmenter_backend"]["backend"].startswith(segmenter)
    # the original endpoint's payload, masked by text instead of a mask image
    original = {
        "inputs": ORIGINAL_PROMPT,
        "input_img": encode_image(photo),
        "mask_prompt": "the dress",
        "num_inference_steps": 2,
        "num_images_per_prompt": 3,
        "image_length": 144,
        "seed": 3,
    }
    if family in ("sd", "sdxl"):
        original["guidance_scale"] = 6.7  # the original's own; the others have their own guidance meaning
    r = client.post("/invocations", json=original)
    assert r.status_code == 200, r.text
    images = [decode_image(b) for b in r.json()["generated_images"]]
    assert [i.size for i in images] == [photo.size] * 3
    style = {
        "image": encode_image(photo),
        "garment": "the dress",
        "garment_type": "skirt",
        "color": "red",
        "num_images": 1,
        "steps": 2,
        "seed": 1,
    }
    r = client.post("/v1/style", json=style)
    assert r.status_code == 200, r.text
    meta = r.json()["images"][0]["metadata"]
    assert meta["family"] == family and meta["segmenter_backend"].startswith(segmenter)
    if family == "qwen-edit":  # an instruction editor gets an instruction naming what to change
        assert r.json()["prompt"].startswith("Replace the dress with")
    state = _job(client, style)
    assert state["state"] == "done", state


@pytest.mark.parametrize(("family", "size"), [("sd", 144), ("flux-fill", None)])
def test_invocations_crop_at_the_familys_native_size(family_inpainter, backend_segmenter, family, size):
    """The original ran SD at height = width = image_length; newer families keep their native size."""
    from restyle.config import ModelConfig
    from restyle.engine import Restyler
    from restyle.serve.schemas import InvocationRequest

    engine = Restyler(
        ModelConfig(device="cpu"), segmenter=backend_segmenter("clipseg"), inpainter=family_inpainter(family)
    )
    photo = sample_photo(96, 144)
    req = InvocationRequest(
        inputs="a skirt", input_img=encode_image(photo), mask_prompt="the dress", image_length=144
    )
    pending = Service(engine).prepare_invocation(req)
    assert pending.prepared.params.size == size
    assert max(pending.prepared.work_size) == (144 if family == "sd" else 64)
