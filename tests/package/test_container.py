"""The bring-your-own-container path, run the way SageMaker runs the image, without Docker.

SageMaker extracts model.tar.gz to /opt/ml/model and starts the image as `docker run IMAGE serve`, which
the Dockerfile's ENTRYPOINT turns into `python -m restyle.serve.container serve`. These tests run that
same command against a folder extracted from a real archive of the tiny models, with SAGEMAKER_* set.
That /ping is 503 until loading and warm-up end is shown deterministically, on the same app, by
tests/serve/test_jobs.py::test_ping_is_503_while_loading_then_200; here every early /ping must be 503.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from restyle.client import Client, ServerError, decode_image, encode_image
from restyle.package import build_archive, safe_extract
from restyle.samples import ORIGINAL_PROMPT
from restyle.serve.container import serve_args

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def opt_ml_model(tiny_models, tmp_path_factory) -> Path:
    """/opt/ml/model as SageMaker leaves it: a `restyle package` archive (segmenter, a style) extracted."""
    from restyle.models.tiny import build_tiny_lora

    tmp = tmp_path_factory.mktemp("sm")
    model = tmp / "model-src"
    shutil.copytree(tiny_models["inpainter"], model)
    lora = build_tiny_lora(tiny_models["inpainter"], tmp / "lora")
    archive = tmp / "model.tar.gz"
    build_archive(model, archive, segmenter=tiny_models["segmenter"], styles=(("skirts", str(lora)),))
    dest = tmp / "opt" / "ml" / "model"
    dest.mkdir(parents=True)
    safe_extract(archive, dest)
    return dest


@pytest.fixture(scope="module")
def container(opt_ml_model, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """`IMAGE serve` with SageMaker's environment; the /ping answers seen until it was ready."""
    tmp = tmp_path_factory.mktemp("container")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTYLE_", "SAGEMAKER_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        RESTYLE_CACHE=str(tmp / "cache"),  # no tiny preview models may be built or used
        RESTYLE_CONFIG=str(tmp / "none.toml"),
        RESTYLE_MODEL_DIR=str(opt_ml_model),  # /opt/ml/model in the image
        RESTYLE_OUTPUT=str(tmp / "results"),
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGEMAKER_MODEL_SERVER_TIMEOUT="600",
        SAGEMAKER_PROGRAM="inference.py",  # set by SageMaker's SDK; restyle's server does not need it
    )
    log_path = tmp / "container.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "restyle.serve.container", "serve"],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    pings: list[int] = []
    deadline = time.monotonic() + 600  # a safety net for a busy machine, not a speed budget
    while not pings or pings[-1] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("container did not become ready:\n" + log_path.read_text()[-3000:])
        try:
            pings.append(Client(url, timeout=10).request("GET", "/ping") and 200)
        except ServerError as err:
            pings.append(err.status)
        except Exception:  # the socket is bound before loading; connection errors mean not serving yet
            pass
        time.sleep(0.1)
    yield {"url": url, "pings": pings, "log": log_path, "model": opt_ml_model, "cache": tmp / "cache"}
    proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture
def box_mask(photo: Image.Image) -> Image.Image:
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (20, 40, 70, 120))
    return mask


def _original_payload(photo: Image.Image, mask: Image.Image, **over: Any) -> dict[str, Any]:
    payload = {
        "inputs": ORIGINAL_PROMPT,
        "input_img": encode_image(photo),
        "mask_img": encode_image(mask),
        "num_inference_steps": 45,
        "guidance_scale": 6.7,
        "num_images_per_prompt": 3,
        "image_length": 768,
    }
    payload.update(over)
    return payload


def test_serve_args_follow_sagemakers_environment():
    env = {"SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120"}
    args = serve_args(["--max-batch", "4"], env)
    assert args[:4] == ["serve", "--host", "0.0.0.0", "--gateway"] and args[-2:] == ["--max-batch", "4"]
    pairs = dict(zip(args[4:-2:2], args[5:-2:2]))
    assert pairs["--port"] == "9000" and pairs["--timeout"] == "120"
    assert pairs["--model-dir"] == "/opt/ml/model" and pairs["--max-body-mb"] == "6"


def test_the_dockerfile_runs_the_tested_command():
    text = (ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, flags=re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", text, flags=re.M).group(1))
    assert entry == ["python", "-m", "restyle.serve.container"] and cmd == ["serve"]
    assert re.search(r"^EXPOSE 8080$", text, flags=re.M)
    for copied in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):  # the build context has what it copies
        assert all((ROOT / name).exists() for name in copied.split()), copied


def test_anything_but_serve_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "restyle.serve.container", "train"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("Error: this image serves models")
    assert "Traceback" not in proc.stderr


def test_ping_is_503_until_ready_then_the_packaged_models_serve(container):
    assert set(container["pings"][:-1]) <= {503} and container["pings"][-1] == 200
    assert "restyle ready" in container["log"].read_text()
    models = Client(container["url"]).request("GET", "/v1/models")
    # exactly the packaged models: no fallback to preview models built in restyle's cache (the archive's
    # own are the tiny ones, which restyle labels preview from their marker file)
    assert models["inpainter"] == str(container["model"]) and not (container["cache"] / "tiny").exists()
    assert models["preview"] is (container["model"] / "restyle_tiny.json").is_file()
    assert models["segmenter"] == str(container["model"] / "segmenter")
    styles = Client(container["url"]).request("GET", "/v1/styles")["styles"]
    assert [s["name"] for s in styles] == ["skirts"]


def test_the_original_payload_shape_answers_jpegs_with_the_aspect_kept(container, photo, box_mask):
    payload = _original_payload(photo, box_mask, num_inference_steps=2, image_length=144)
    body = Client(container["url"]).request("POST", "/invocations", payload)
    images = [decode_image(b) for b in body["generated_images"]]
    assert [(im.format, im.size) for im in images] == [("JPEG", (96, 144))] * 3  # the photo is 96 x 144


def test_restyles_own_errors_and_extensions_come_through(container, photo, box_mask):
    client = Client(container["url"])
    with pytest.raises(ServerError) as bad:
        client.request("POST", "/invocations", _original_payload(photo, box_mask, num_inference_steps=999))
    assert bad.value.status == 422 and bad.value.body["field"] == "num_inference_steps"
    by_text = _original_payload(
        photo, box_mask, num_inference_steps=1, num_images_per_prompt=1, image_length=96
    )
    del by_text["mask_img"]
    by_text.update(mask_prompt="the dress", style="skirts")  # the packaged segmenter and style
    assert len(client.request("POST", "/invocations", by_text)["generated_images"]) == 1


@pytest.mark.slow
def test_the_original_payload_verbatim(container, photo, box_mask):
    """The original design's call as it stands (3 x 768, 45 steps): minutes on a CPU, `-m slow`."""
    body = Client(container["url"], timeout=900).request(
        "POST", "/invocations", _original_payload(photo, box_mask)
    )
    images = [decode_image(b) for b in body["generated_images"]]
    assert [(im.format, im.size) for im in images] == [("JPEG", (512, 768))] * 3
