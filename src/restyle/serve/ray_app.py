"""restyle's HTTP API (the SageMaker contract `/ping`, `/invocations`, and `/v1`) on Ray Serve replicas.

Each replica is the whole restyle app (restyle.serve.app) with its own models on its own GPU (or CPUs),
its own worker queue and same-shape batching; Ray Serve's proxy spreads requests over the replicas and
its autoscaler adds or removes replicas on ongoing requests. What must be shared lives in the shared
output folder (restyle.serve.shared): job records and files, so any replica answers any job id; LoRA
styles are loaded by every replica from paths every node can read.

A replica joins the routing only once its models are loaded and warmed up (the app loads them before it
starts, and Ray Serve routes to a replica only after that); `check_health` fails a replica whose models
or worker are gone, and Ray Serve replaces it. A replica killed mid-request makes Ray's proxy answer a
bare 500; the proxy middleware here (`proxy_middlewares`) turns that into restyle's JSON error, 503
`replica_lost` with Retry-After, after sending a request that is safe to repeat once more to another
replica. Start it with `restyle serve --ray` (see docs/SCALING.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from restyle.errors import InvalidParameterError
from restyle.serve.app import REPLICA_HEADER, ServerSettings, create_app

log = logging.getLogger("restyle.serve")

APP_NAME = "restyle"
DEPLOYMENT_NAME = "restyle"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "restyle.serve.ray_app:proxy_middlewares"
SHUTDOWN_MARGIN_S = 20.0
_STARTED_HERE = False  # start() began a Ray instance of its own (stop() ends it, even mid-start)


@dataclass(frozen=True)
class ServeOptions:
    """How many replicas, what each holds, and where Ray Serve's proxy listens."""

    replicas: int = 2  # fixed count (when min/max_replicas are not set)
    min_replicas: int | None = None  # both set: Ray Serve autoscales between them
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0  # autoscaling target per replica (requests being served)
    max_ongoing_requests: int = 32  # per replica (event streams and polls count too); restyle's queue
    # decides how many image requests wait (queue_size), the rest is room for status and files
    gpus_per_replica: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_replica: float = 1.0
    host: str = "127.0.0.1"
    port: int = 8000

    def check(self) -> None:
        """Raise InvalidParameterError naming the `restyle serve --ray` flag at fault and its limit."""
        if self.replicas < 1:
            raise InvalidParameterError(
                f"--replicas: must be at least 1, got {self.replicas}", field="replicas"
            )
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise InvalidParameterError(
                "--min-replicas/--max-replicas: give both to autoscale, or neither", field="min_replicas"
            )
        low, high = self.min_replicas, self.max_replicas
        if low is not None and low < 0:
            raise InvalidParameterError(f"--min-replicas: must be 0 or more, got {low}", field="min_replicas")
        if low is not None and high is not None and high < max(1, low):
            raise InvalidParameterError(
                f"--max-replicas: must be at least 1 and at least --min-replicas ({low}), got {high}",
                field="max_replicas",
            )
        if not (math.isfinite(self.target_ongoing_requests) and self.target_ongoing_requests > 0):
            raise InvalidParameterError(
                f"--target-ongoing: must be above 0, got {self.target_ongoing_requests}",
                field="target_ongoing_requests",
            )
        if self.max_ongoing_requests < 1:
            raise InvalidParameterError(
                "max_ongoing_requests: must be at least 1", field="max_ongoing_requests"
            )
        for name in ("gpus_per_replica", "cpus_per_replica"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                flag = "--" + name.replace("_", "-")
                raise InvalidParameterError(f"{flag}: must be 0 or more, got {value}", field=name)

    @property
    def autoscaling(self) -> dict[str, Any] | None:
        if self.min_replicas is None:
            return None
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


class RestyleReplica:
    """One Ray Serve replica: restyle's app on its own models (built in the replica, not pickled)."""

    def __init__(self, settings: ServerSettings, factory: Callable[[ServerSettings], Any]) -> None:
        from restyle.serve.shared import replica_id

        self.settings = replace(settings, replica=replica_id(), load_at_start=True)
        self.factory = factory

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.settings, self.factory)

    def check_health(self) -> None:
        """Ray Serve calls this periodically: raising makes it replace this replica."""
        state = self.app.state.restyle  # type: ignore[attr-defined]  # ASGIAppReplicaWrapper.app
        if state.load_error:
            raise RuntimeError(f"models failed to load: {state.load_error}")
        if not state.worker._thread.is_alive():
            raise RuntimeError("the worker thread stopped")


def deployment(
    settings: ServerSettings, factory: Callable[[ServerSettings], Any], options: ServeOptions
) -> Any:
    """The bound Ray Serve application (ready for serve.run)."""
    from ray import serve

    options.check()
    if settings.output_dir is None:
        raise InvalidParameterError(
            "output: replicas share job records through the output folder; it cannot be off", field="output"
        )
    gpus = options.gpus_per_replica
    import ray

    if gpus is None or (gpus > 0 and ray.is_initialized()):
        from restyle.raysupport import cluster_gpus

        have = cluster_gpus()
        if gpus is None:
            gpus = 1.0 if have else 0.0
        elif have < gpus:  # Ray would wait for it forever
            raise InvalidParameterError(
                f"--gpus-per-replica: {gpus:g} GPU per replica; the Ray cluster has {have}",
                field="gpus_per_replica",
            )
    ingress = serve.ingress()(RestyleReplica)
    config: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": options.max_ongoing_requests,
        "ray_actor_options": {"num_gpus": gpus, "num_cpus": options.cpus_per_replica},
        "health_check_period_s": 5,
        "health_check_timeout_s": 30,
        # Ray's one budget covers the drain and the app's own shutdown (fail what is queued, the running
        # job's grace period, its final records): more than restyle's grace, or Ray kills it first
        "graceful_shutdown_timeout_s": settings.shutdown_grace_s + SHUTDOWN_MARGIN_S,
    }
    if options.autoscaling:
        config["autoscaling_config"] = options.autoscaling
    else:
        config["num_replicas"] = options.replicas
    return serve.deployment(**config)(ingress).bind(settings, factory)


def start(
    settings: ServerSettings,
    factory: Callable[[ServerSettings], Any],
    options: ServeOptions,
    address: str | None = None,
) -> Any:
    """Connect to (or start) Ray, start Serve's proxy on options.host:port and run the app; returns the
    Connection (restyle.raysupport) once every replica is ready."""
    from restyle.raysupport import connect, require_ray

    require_ray("--ray")
    from ray import serve

    if address is None and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # the local instance's proxy inherits it
    global _STARTED_HERE
    _STARTED_HERE = (
        address is None and not os.environ.get("RAY_ADDRESS") and not require_ray().is_initialized()
    )
    connection = connect(address)
    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(deployment(settings, factory, options), name=APP_NAME, route_prefix="/")
    return connection


def stop(connection: Any) -> None:
    """Remove the app; stop Serve and Ray too when this process started them. `connection` None (stopped
    while starting): whatever this process started (a Ray instance it started itself) is stopped."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    started_here = _STARTED_HERE if connection is None else connection.started_here
    with contextlib.suppress(Exception):  # not deployed yet (stopped while starting)
        serve.delete(APP_NAME)
    if started_here:
        serve.shutdown()
        ray.shutdown()


# --- the proxy side ------------------------------------------------------------------------------------
# Requests that may run twice without harm: reads, and image requests whose answer is their result (a
# second run on another replica gives the same images for the same seeds). POST /v1/jobs is not (it would
# queue a second job), nor is a request carrying a client's job id (the dead replica's record holds it).
REPEATABLE = {
    ("POST", "/invocations"),
    ("POST", "/v1/style"),
    ("POST", "/v1/segment"),
    ("POST", "/v1/prompt"),
}
MAX_REPLAY_BYTES = 8 * 1024 * 1024  # a larger body is not kept for a second try
LOST = {
    "error": "replica_lost",
    "field": None,
    "message": "the replica serving this request stopped before it answered (Ray Serve is replacing it); "
    "send the request again",
}


class ReplicaLost:
    """ASGI middleware for Ray Serve's HTTP proxy: a 500 that no restyle replica wrote (Ray's own, when
    the replica died mid-request) is retried once on another replica when the request is repeatable, else
    answered as restyle's JSON 503 `replica_lost` with Retry-After."""

    def __init__(self, app: Any, retries: int = 1) -> None:
        self.app = app
        self.retries = retries

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower() for k, _ in scope.get("headers", [])}
        repeatable = (
            scope["method"] in ("GET", "HEAD") or (scope["method"], scope["path"]) in REPEATABLE
        ) and "x-restyle-job-id" not in headers
        body: bytes | None = None
        if repeatable:
            chunks, complete = await _read_body(receive, MAX_REPLAY_BYTES)
            if complete:
                body = b"".join(chunks)
            else:  # too large to keep for a second try: sent on once, as it came
                receive = _prefixed(chunks, receive)
        attempts = 1 + (self.retries if body is not None else 0)
        for attempt in range(attempts):
            replay = _replay(body, receive) if body is not None else receive
            if await self._forward(scope, replay, send):
                log.warning(
                    "a replica died serving %s %s (try %d)", scope["method"], scope["path"], attempt + 1
                )
                continue
            return
        await _answer_lost(send)

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any) -> bool:
        """Run the request; True when no replica answered. Ray's proxy, when the replica dies mid-request,
        returns without an answer (uvicorn would then send a bare 500); it may also raise before one or
        send a 500 that no restyle replica wrote. Nothing of such an answer is sent on. A client that
        hung up (a disconnect reached the proxy) is not a lost replica: False, and nothing is sent."""
        lost, started, left = False, False, False

        async def listen() -> dict[str, Any]:
            nonlocal left
            message = await receive()
            left = left or message["type"] == "http.disconnect"
            return message

        async def relay(message: dict[str, Any]) -> None:
            nonlocal lost, started
            if message["type"] == "http.response.start":
                started = True
                names = {k.decode("latin-1").lower() for k, _ in message.get("headers", [])}
                lost = message["status"] == 500 and REPLICA_HEADER.lower() not in names
            if not lost:
                await send(message)

        try:
            await self.app(scope, listen, relay)
        except Exception as err:
            if left:  # the client hung up: nobody to answer, nothing to redo
                return False
            if started and not lost:  # part of an answer reached the client: nothing to redo
                raise
            log.warning(
                "no replica answered %s %s: %s: %s", scope["method"], scope["path"], type(err).__name__, err
            )
            return True
        if left and not started:  # the client hung up (the proxy cancels and answers nothing)
            return False
        return lost or not started  # the proxy gave up without an answer (the replica died)


_DISCONNECT = b"<disconnect>"  # a marker object (compared by identity): the client left mid-upload


async def _read_body(receive: Any, limit: int) -> tuple[list[bytes], bool]:
    """The request body's chunks, and whether that is all of it (False: stopped past `limit` bytes, or the
    client left mid-upload: then the last item is _DISCONNECT, handed on as a disconnect)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # the client left mid-upload: hand that on as it came
            return [*chunks, _DISCONNECT], False
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks, True
        if size > limit:
            return chunks, False


def _prefixed(chunks: list[bytes], receive: Any) -> Any:
    """`receive` with the chunks already read from it put back in front."""
    waiting = list(chunks)

    async def again() -> dict[str, Any]:
        if waiting:
            chunk = waiting.pop(0)
            if chunk is _DISCONNECT:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}
        return await receive()

    return again


def _replay(body: bytes, receive: Any) -> Any:
    """The kept body once, then the client's own `receive` (which says when the client leaves: the
    proxy listens for that while the request runs)."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _answer_lost(send: Any) -> None:
    body = json.dumps(LOST).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"5"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Any]:
    """For RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH (restyle.serve.ray_app:proxy_middlewares)."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLost)]


__all__ = [
    "ReplicaLost",
    "RestyleReplica",
    "ServeOptions",
    "deployment",
    "proxy_middlewares",
    "start",
    "stop",
]
