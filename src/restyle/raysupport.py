"""Ray as an optional extra: import it with an install hint, connect to a cluster or start a local one.

`pip install 'restyle[ray]'` brings Ray Data and Ray Serve; without it `--ray` fails with that line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from restyle.errors import RestyleError

log = logging.getLogger("restyle")

INSTALL_HINT = "pip install 'restyle[ray]'"


class RayMissingError(RestyleError):
    """Ray is not installed."""

    status_code = 501
    kind = "ray_missing"


def require_ray(what: str = "--ray") -> Any:
    """The `ray` module, or RayMissingError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissingError(
            f"{what}: Ray is not installed; install it with: {INSTALL_HINT}", field="ray"
        ) from None
    return ray


@dataclass(frozen=True)
class Connection:
    """The Ray cluster this process uses, and whether this process started it (and so stops it)."""

    address: str | None
    started_here: bool


def connect(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> Connection:
    """Join the cluster at `address` ("auto", "ray://host:10001", "host:6379"), or RAY_ADDRESS, or start a
    local one on this machine (`num_cpus` CPUs; all by default). Already connected: nothing changes."""
    ray = require_ray()
    if ray.is_initialized():
        return Connection(address, started_here=False)
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"log_to_driver": not quiet, "include_dashboard": False}
    if address is None:
        options["num_cpus"] = num_cpus
    else:
        options.pop("include_dashboard")
    try:
        ray.init(address=address, **options)
    except ConnectionError as err:
        raise RestyleError(f"--ray: cannot reach a Ray cluster at {address} ({err})", field="ray") from None
    log.info("ray: %s", f"connected to {address}" if address else "started a local instance")
    return Connection(address, started_here=address is None)


def disconnect(connection: Connection) -> None:
    ray = require_ray()
    if ray.is_initialized():
        ray.shutdown()


def cluster_gpus() -> int:
    """GPUs the connected cluster has (0 on CPU-only clusters)."""
    ray = require_ray()
    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    ray = require_ray()
    return int(ray.cluster_resources().get("CPU", 1))


PATH_FIELDS = ("segmenter", "protector", "mask_table", "inpainter")


def absolute_config(config: Any) -> Any:
    """`config` with every model path that exists here made absolute: actors and replicas run in other
    folders (on a cluster, wherever `ray start` ran), so `./model` must not be looked up there. Hub ids and
    paths that are not here stay as they are."""
    from dataclasses import replace
    from pathlib import Path

    changes = {}
    for name in PATH_FIELDS:
        value = getattr(config, name, "")
        if value and Path(value).exists():
            changes[name] = str(Path(value).resolve())
    return replace(config, **changes) if changes else config


def absolute_path(value: str) -> str:
    """A path that exists here, made absolute (else as it is)."""
    from pathlib import Path

    return str(Path(value).resolve()) if value and Path(value).exists() else value
