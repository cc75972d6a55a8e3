"""One local Ray instance for the Ray tests (CPU only, loopback), started once and stopped at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

if os.environ.get("RESTYLE_REQUIRE_RAY"):  # CI: a missing Ray is a failure, not a skip
    import ray
else:
    ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'restyle[ray]'")


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[Any]:
    """A local Ray instance with 4 logical CPUs (2 batch actors, or 2 replicas beside Serve's own actors).

    Its Serve proxy gets restyle's middleware (the env var must be set before Ray starts its workers).
    """
    from restyle.serve.ray_app import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    os.environ[PROXY_CALLBACK_ENV] = PROXY_CALLBACK
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        try:
            from ray import serve

            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def tiny_lora(tiny_models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from restyle.models.tiny import build_tiny_lora

    return build_tiny_lora(tiny_models["inpainter"], tmp_path_factory.mktemp("lora"))
