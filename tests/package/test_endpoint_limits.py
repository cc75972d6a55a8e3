"""What a SageMaker endpoint imposes: a worker per GPU, JSON answers, 16 MP images, 6 MB answers."""

from __future__ import annotations

import base64
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle.client import encode_image
from restyle.errors import InvalidParameterError
from restyle.package import inference
from restyle.package.deploy import DeploySpec, plan
from restyle.serve.app import ServerSettings, create_app
from restyle.serve.handler import Service, check_response_size

ROLE = "arn:aws:iam::123456789012:role/sagemaker"


def test_each_worker_loads_onto_the_gpu_it_was_given(monkeypatch):
    import torch

    context = SimpleNamespace(system_properties={"gpu_id": 1})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference.worker_device(context) == "cuda:1"
    assert inference.worker_device(None) == "auto" and inference.worker_device(SimpleNamespace()) == "auto"
    monkeypatch.setenv("RESTYLE_DEVICE", "cuda:3")  # an explicit choice wins
    assert inference.worker_device(context) == "cuda:3"
    monkeypatch.delenv("RESTYLE_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU instance
    assert inference.worker_device(context) == "auto"


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "application/json; charset=utf-8",
        "*/*",
        None,
        "application/json, text/plain, */*",  # axios's default: the toolkit passes the list as it came
        "text/html, application/*;q=0.8",
    ],
)
def test_json_answers_for_json_accepts(accept):
    assert inference.output_fn({"generated_images": []}, accept) == '{"generated_images": []}'


@pytest.mark.parametrize("accept", ["image/png", "image/jpeg", "text/csv", "image/png, text/plain"])
def test_other_accepts_are_refused_not_mislabelled(accept):
    with pytest.raises(InvalidParameterError, match='image_format": "png') as err:
        inference.output_fn({"generated_images": []}, accept)
    assert err.value.field == "accept"


def test_the_handler_has_the_servers_image_limit():
    from restyle.serve.app import DEFAULT_MAX_PIXELS

    assert inference.SERVER_MAX_PIXELS == DEFAULT_MAX_PIXELS == 16_000_000  # the documented 16 MP


def test_an_answer_over_the_limit_names_it():
    body = {"generated_images": [base64.b64encode(b"x" * 3000).decode()] * 3, "seeds": [1, 2, 3]}
    assert check_response_size(body, None) is body and check_response_size(body, 20_000) is body
    with pytest.raises(InvalidParameterError, match=r"over the 0\.0 MB response limit") as err:
        check_response_size(body, 5_000)
    assert err.value.field == "num_images_per_prompt"


def test_the_server_refuses_an_invocation_answer_over_its_limit(tiny_models, tmp_path, photo):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler

    models = {role: str(path) for role, path in tiny_models.items()}
    engine = Restyler(ModelConfig(**models, device="cpu"))
    settings = ServerSettings(output_dir=tmp_path / "out", warmup=False, max_response_bytes=2_000)
    app = create_app(settings, lambda s: Service(engine, output_dir=s.output_dir, max_response_bytes=2_000))
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (20, 40, 70, 120))
    payload = {"inputs": "x", "input_img": encode_image(photo), "mask_img": encode_image(mask)}
    payload.update(num_inference_steps=1, num_images_per_prompt=1, image_length=144)
    with TestClient(app, base_url="http://localhost") as client:
        deadline = time.monotonic() + 600  # loading happens in a thread; a safety net, not a budget
        while client.get("/ping").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = client.post("/invocations", json=payload)
    assert r.status_code == 422 and r.json()["field"] == "num_images_per_prompt", r.text[:300]
    assert "response limit" in r.json()["message"]


def test_the_plan_runs_one_model_server_worker_per_gpu():
    spec = DeploySpec(name="r", model_data="s3://b/k/model.tar.gz", role=ROLE, workers=4)
    env = plan(spec)[0]["params"]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "4"
    assert (
        plan(DeploySpec(name="r", model_data="s3://b/k/model.tar.gz", role=ROLE))[0]["params"][
            "PrimaryContainer"
        ]["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"]
        == "1"
    )
    with pytest.raises(InvalidParameterError, match="workers"):
        plan(DeploySpec(name="r", model_data="s3://b/k/model.tar.gz", role=ROLE, workers=0))
