"""Trained LoRAs served the way `restyle serve --lora NAME=PATH` serves them: picked per request."""

from __future__ import annotations

import dataclasses

import numpy as np
from fastapi.testclient import TestClient

from restyle.client import decode_image, encode_image

from ..serve.conftest import wait_ready
from .conftest import draw_photo, train


def test_two_trained_styles_switch_per_request_on_one_base(train_config, tiny_models, tmp_path):
    from accelerate.state import AcceleratorState

    from restyle.config import ModelConfig
    from restyle.serve.app import ServerSettings, create_app, default_service_factory

    first = train_config(output_dir=tmp_path / "a", learning_rate=5e-2, max_train_steps=3)
    train(first)
    AcceleratorState._reset_state(True)
    train(dataclasses.replace(first, output_dir=tmp_path / "b", seed=9))
    loras = (("a", str(tmp_path / "a")), ("b", str(tmp_path / "b" / "pytorch_lora_weights.safetensors")))
    config = ModelConfig(
        segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]), device="cpu"
    )
    settings = ServerSettings(output_dir=None, warmup=False, loras=loras)
    services = []

    def factory(s):
        services.append(default_service_factory(s, config))
        return services[-1]

    # the server answers only local Host names without an API key (restyle.serve.security)
    with TestClient(create_app(settings, factory), base_url="http://localhost") as client:
        wait_ready(client)
        assert [s["name"] for s in client.get("/v1/styles").json()["styles"]] == ["a", "b"]
        pipe = services[0].engine.inpainter.pipe
        img, mask = draw_photo(2)
        body = {"image": encode_image(img), "mask": encode_image(mask), "prompt": "a striped skirt"}
        body.update(steps=2, size=64, num_images=1, seed=11)

        def run(**extra):
            r = client.post("/v1/style", json={**body, **extra})
            assert r.status_code == 200, r.text
            return np.asarray(decode_image(r.json()["images"][0]["image"]), dtype=float)

        plain, a, b, plain_again = run(), run(style="a"), run(style="b"), run()
        assert np.abs(a - plain).mean() > 0.5 and np.abs(b - a).mean() > 0.5
        assert np.array_equal(plain, plain_again)
        assert services[0].engine.inpainter.pipe is pipe  # one base model throughout
