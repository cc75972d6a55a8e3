"""Server fixtures: apps on the tiny models (with a tiny LoRA style), driven in-process or on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle.serve.app import ServerSettings, create_app
from restyle.serve.handler import Service


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
        client = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
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


class GatedService(Service):
    """The real service, but every denoising step waits until `gate` is set (cancel/deadline still apply).

    `step_delay` adds a sleep per step so a job runs long enough to watch, independent of machine speed.
    """

    def __init__(self, engine: Any, *, gate: threading.Event, step_delay: float = 0.0, **kw: Any) -> None:
        super().__init__(engine, **kw)
        self.gate = gate
        self.step_delay = step_delay
        self.entered = threading.Event()  # set once a job reaches its first step

    def _hook(self, progress: Any, cancel: Any) -> Callable[[int, int], None]:
        def hook(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            self.entered.set()
            if self.step_delay:
                time.sleep(self.step_delay)
            while not self.gate.wait(0.01):
                if cancel is not None and cancel():
                    return

        return hook

    def run_batch(self, pending: Any, *, progress: Any = None, cancel: Any = None) -> Any:
        return super().run_batch(pending, progress=self._hook(progress, cancel), cancel=cancel)


@dataclass
class Server:
    client: Any
    gate: threading.Event
    service: GatedService
    app: Any
    closed: bool = field(default=False)

    def close(self) -> float:
        """Leave the client's context (runs the app's shutdown); returns how long that took."""
        started = time.monotonic()
        if not self.closed:
            self.closed = True
            self.client.__exit__(None, None, None)
        return time.monotonic() - started


@pytest.fixture
def make_gated(tiny_engine: Any, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """make_gated(step_delay=0, open_gate=False, **ServerSettings) -> a ready Server with a gated service."""
    opened: list[Server] = []

    def make(step_delay: float = 0.0, open_gate: bool = False, **overrides: Any) -> Server:
        gate = threading.Event()
        if open_gate:
            gate.set()
        settings = ServerSettings(**{"output_dir": tmp_path / "out", "warmup": False, **overrides})
        service = GatedService(
            tiny_engine,
            gate=gate,
            step_delay=step_delay,
            max_pixels=settings.max_pixels,
            output_dir=settings.output_dir,
        )
        app = create_app(settings, lambda s: service)
        client = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
        client.__enter__()
        server = Server(client, gate, service, app)
        opened.append(server)
        wait_ready(client)
        return server

    yield make
    for server in opened:
        server.gate.set()
    for server in opened:
        server.close()
