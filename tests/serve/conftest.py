"""Server fixtures: apps on the tiny models (with a tiny LoRA style), driven in-process or on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_lora(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from restyle.models.tiny import build_tiny_lora

    return build_tiny_lora(tiny_models["inpainter"], tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_models: dict[str, Path], tiny_lora: Path) -> Any:
    """One Restyler for the server tests, with the 'skirts' style loaded (separate from the core fixtures)."""
    from restyle.config import ModelConfig
    from restyle.engine import Restyler

    models = {role: str(path) for role, path in tiny_models.items()}
    engine = Restyler(ModelConfig(segmenter=models["segmenter"], inpainter=models["inpainter"], device="cpu"))
    engine.inpainter.load_style("skirts", str(tiny_lora))
    return engine


def wait_ready(client: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ping").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"server not ready after {timeout}s: {client.get('/ping').json()}")


@pytest.fixture
def make_client(tiny_engine: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """make_client(**ServerSettings fields) -> a ready TestClient (lifespan running) on the tiny engine."""
    from fastapi.testclient import TestClient

    from restyle.serve.app import ServerSettings, create_app
    from restyle.serve.handler import Service

    opened: list[Any] = []

    def make(**overrides: Any) -> Any:
        settings = ServerSettings(**{"output_dir": tmp_path / "out", "warmup": False, **overrides})
        app = create_app(
            settings, lambda s: Service(tiny_engine, max_pixels=s.max_pixels, output_dir=s.output_dir)
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        wait_ready(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


@pytest.fixture
def box_mask(photo: Image.Image) -> Image.Image:
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (20, 40, 70, 120))
    return mask
