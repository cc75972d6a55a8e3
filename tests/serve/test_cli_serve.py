"""`restyle serve` as a user starts it (preview mode on tiny models), `restyle invoke` and the Client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from restyle.client import Client, ServerError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The README's main job: `restyle serve` with no real weights -> preview mode on tiny models."""
    tmp = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RESTYLE_")},
        "HF_HUB_OFFLINE": "1",
        "RESTYLE_CACHE": str(tmp / "cache"),
        "RESTYLE_CONFIG": str(tmp / "none.toml"),
        "RESTYLE_API_KEY": "secret",
    }
    cmd = [sys.executable, "-m", "restyle", "serve", "--port", str(port), "-o", str(tmp / "out")]
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{port}", api_key="secret", timeout=60)
    deadline = time.monotonic() + 120
    while not client.ping():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not become ready:\n" + (tmp / "server.log").read_text()[-3000:])
        time.sleep(0.3)
    yield client, tmp, port
    proc.terminate()
    proc.wait(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit -15), as a process manager expects
    log_text = (tmp / "server.log").read_text()
    assert proc.returncode in (0, -15) and "Application shutdown complete" in log_text, log_text[-3000:]


def test_preview_mode_is_labelled(server):
    client, tmp, _ = server
    assert client.request("GET", "/v1/models")["preview"] is True
    assert "PREVIEW MODE" in (tmp / "server.log").read_text()


def test_client_invoke_style_and_errors(server, photo):
    client, tmp, port = server
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (20, 30, 70, 110))
    images = client.invoke(photo, "a red skirt", mask=mask, num_images=3, steps=2, image_length=144, seed=1)
    assert [im.size for im in images] == [photo.size] * 3
    answer = client.style_raw(
        photo, mask=mask, garment_type="skirt", color="red", steps=2, num_images=2, seed=3
    )
    assert answer["seeds"] == [3, 4] and answer["preview"] is True
    saved = tmp / "out" / answer["id"]
    assert sorted(p.name for p in saved.glob("result-*-seed*.png")) == [
        "result-0-seed3.png",
        "result-1-seed4.png",
    ]
    with pytest.raises(ServerError) as err:
        client.invoke(photo, "a skirt", mask=mask, steps=0)
    assert err.value.status == 422 and err.value.field == "num_inference_steps"
    with pytest.raises(ServerError) as err:
        Client(f"http://127.0.0.1:{port}").invoke(photo, "a skirt", mask=mask)
    assert err.value.status == 401


def test_invoke_command_writes_images_and_grid(server, photo, tmp_path):
    _, _, port = server
    photo.save(tmp_path / "photo.png")
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (20, 30, 70, 110))
    mask.save(tmp_path / "mask.png")
    env = {**os.environ, "RESTYLE_API_KEY": "secret"}
    cmd = [
        sys.executable,
        "-m",
        "restyle.cli",
        "invoke",
        f"http://127.0.0.1:{port}",
        str(tmp_path / "photo.png"),
        "-p",
        "a linen skirt",
        "--mask",
        str(tmp_path / "mask.png"),
        "-n",
        "2",
        "--steps",
        "2",
        "--image-length",
        "144",
        "-o",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = Path(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["invoke-0.jpg", "invoke-1.jpg", "invoke-grid.png"]
    assert Image.open(out / "invoke-grid.png").width > 3 * 100


@pytest.mark.parametrize(
    "value, message", [("skirts=/no/such/lora", "no such file"), ("skirts", "NAME=PATH")]
)
def test_serve_refuses_bad_lora_flags_at_once(value, message):
    from typer.testing import CliRunner

    from restyle.cli import app

    result = CliRunner().invoke(app, ["serve", "--lora", value])
    assert result.exit_code != 0 and isinstance(result.exception, Exception)
    assert message in str(result.exception) and "--lora" in str(result.exception)
