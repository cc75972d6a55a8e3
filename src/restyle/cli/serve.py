"""`restyle serve`: the HTTP API (SageMaker /ping + /invocations, and /v1) on this machine."""

from __future__ import annotations

import errno
import math
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli.base import (
    Device,
    InpainterOpt,
    MaskTableOpt,
    Offload,
    ProtectWith,
    Quantize,
    Segmenter,
    parse_loras,
    quiet,
)
from restyle.errors import InvalidParameterError

commands = typer.Typer()  # restyle.cli adds these to its app

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_loras(pairs: tuple[tuple[str, str], ...]) -> None:
    """Fail at the command line, not minutes later in the model loader."""
    for name, path in pairs:
        if not Path(path).expanduser().exists():
            raise InvalidParameterError(f"--lora {name}={path}: no such file or folder", field="lora")


def _check_serve_flags(**flags: Any) -> None:
    """Every serve flag in range before anything starts: one line naming the flag and its limit."""
    from restyle.images import MAX_PIXELS, MIN_SIDE

    ranges = {  # flag: (lowest, highest); --port is bind()'s
        "queue_size": (1, 10_000),
        "max_batch": (1, 64),
        "max_body_mb": (0.001, 1024.0),
        "max_pixels": (MIN_SIDE * MIN_SIDE, MAX_PIXELS),
        "max_response_mb": (0.001, 1024.0),
        "timeout": (1.0, 86_400.0),
    }
    for name, (low, high) in ranges.items():
        value = flags[name]
        if value is None and name == "max_response_mb":
            continue
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(value):
            raise InvalidParameterError(f"{flag}: {value} is not a finite number", field=name)
        if value < low:
            raise InvalidParameterError(f"{flag}: {value} is below {low:g}", field=name)
        if value > high:
            raise InvalidParameterError(f"{flag}: {value} is above {high:g}", field=name)
    key = flags["api_key"]
    if key is not None and not (key.isascii() and key.isprintable() and key.strip() == key and key):
        raise InvalidParameterError(
            "--api-key / RESTYLE_API_KEY: use printable ASCII without surrounding spaces (an HTTP header "
            "carries no other key)",
            field="api_key",
        )


def _served_names(host: str, extra: list[str] | None) -> tuple[str, ...]:
    """Host names a key-less server answers besides loopback: the bound address itself, and --allow-host."""
    names = [name.strip() for name in extra or [] if name.strip()]
    if host not in ("", "0.0.0.0", "::") and host not in LOOPBACK:
        names.append(host)
    return tuple(names)


@commands.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback unless you set an API key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (SageMaker containers use 8080).")] = 8080,
    segmenter: Segmenter = None,
    protect_with: ProtectWith = None,
    mask_table: MaskTableOpt = None,
    inpainter: InpainterOpt = None,
    device: Device = None,
    offload: Offload = None,
    quantize: Quantize = None,
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", help="A LoRA style NAME=PATH (repeat); requests pick it by name."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="RESTYLE_API_KEY", help="Require this key (X-API-Key or Bearer).")
    ] = None,
    max_body_mb: Annotated[float, typer.Option(help="Request body limit in MB.")] = 6.0,
    max_pixels: Annotated[int, typer.Option(help="Largest accepted image, width x height.")] = 16_000_000,
    max_response_mb: Annotated[
        float | None,
        typer.Option(help="Refuse /invocations answers over this many MB (SageMaker real-time: 6)."),
    ] = None,
    queue_size: Annotated[
        int, typer.Option(help="Requests waiting beyond the running one; more get 503.")
    ] = 4,
    max_batch: Annotated[
        int,
        typer.Option(help="Images of waiting same-shape requests denoised in one batch (1: each alone)."),
    ] = 8,
    timeout: Annotated[float, typer.Option(help="Per-request limit in seconds (queue wait + run).")] = 300.0,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where results and job records are kept.")
    ] = Path("out/serve"),
    warmup: Annotated[bool, typer.Option(help="One small run before /ping turns healthy.")] = True,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            help="Serve a model folder laid out as model.tar.gz (inpainter at its root, segmenter/, "
            "styles/), e.g. SageMaker's /opt/ml/model; never the preview."
        ),
    ] = None,
    gateway: Annotated[
        bool,
        typer.Option(
            "--gateway",
            help="A gateway in front authenticates (SageMaker): no API-key warning, any Host header.",
        ),
    ] = False,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Without an API key, also answer this Host name (repeat); loopback names always are.",
        ),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray", help="Serve from Ray Serve replicas (pip install 'restyle[ray]'); see SCALING.md."
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS", help="With --ray: the cluster to join (auto, host:6379); else local."
        ),
    ] = None,
    replicas: Annotated[int, typer.Option(help="With --ray: replicas, each with its own models.")] = 2,
    min_replicas: Annotated[
        int | None, typer.Option(help="With --ray: autoscale from this many (with --max-replicas).")
    ] = None,
    max_replicas: Annotated[int | None, typer.Option(help="With --ray: autoscale up to this many.")] = None,
    target_ongoing: Annotated[
        float, typer.Option(help="With --ray autoscaling: ongoing requests per replica to aim for.")
    ] = 2.0,
    gpus_per_replica: Annotated[
        float | None, typer.Option(help="With --ray: GPUs per replica (default 1 on a GPU cluster, else 0).")
    ] = None,
    cpus_per_replica: Annotated[float, typer.Option(help="With --ray: CPUs per replica.")] = 1.0,
) -> None:
    """Run the HTTP API (SageMaker /ping + /invocations, and /v1). Docs at /docs."""
    from restyle.serve.app import ServerSettings, create_app

    quiet()
    _check_serve_flags(
        queue_size=queue_size,
        max_batch=max_batch,
        max_body_mb=max_body_mb,
        max_pixels=max_pixels,
        max_response_mb=max_response_mb,
        timeout=timeout,
        api_key=api_key,
    )
    if host not in LOOPBACK and not api_key and not gateway:
        typer.secho(
            f"WARNING: listening on {host} without an API key: anyone who reaches this port can use it. "
            "Set RESTYLE_API_KEY (or --api-key) unless a gateway in front authenticates.",
            fg=typer.colors.RED,
            err=True,
        )
    loras = parse_loras(lora)
    _check_loras(loras)
    from restyle.serve.jobs import JobStore

    JobStore(output).probe()  # a full or read-only output folder fails now, not at the first request
    serve_options = None
    if ray:
        from restyle.raysupport import require_ray
        from restyle.serve.ray_app import ServeOptions

        require_ray()
        serve_options = ServeOptions(
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_ongoing_requests=target_ongoing,
            gpus_per_replica=gpus_per_replica,
            cpus_per_replica=cpus_per_replica,
            host=host,
            port=port,
        )
        serve_options.check()
        sockets: list[socket.socket] = []
    else:
        sockets = bind(host, port)  # before any model loads: a taken port fails now, in one line
    flags = dict(
        segmenter=segmenter,
        protector=protect_with,
        mask_table=mask_table,
        inpainter=inpainter,
        device=device,
        offload=offload,
        quantize=quantize,
    )
    if ray:  # replicas run in other folders: paths that are here go as absolute ones
        from restyle.raysupport import absolute_path

        flags = {k: absolute_path(v) if isinstance(v, str) else v for k, v in flags.items()}
        model_dir = Path(absolute_path(str(model_dir))) if model_dir is not None else None
        loras = tuple((name, absolute_path(path)) for name, path in loras)
    factory, packaged = _service_factory(flags, model_dir)
    settings = ServerSettings(
        api_key=api_key or None,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_pixels=max_pixels,
        queue_size=queue_size,
        max_batch=max_batch,
        timeout_s=timeout,
        output_dir=output,
        loras=loras + packaged,
        warmup=warmup,
        max_response_bytes=int(max_response_mb * 1e6) if max_response_mb else None,
        allowed_hosts=("*",) if gateway else _served_names(host, allow_host),
    )
    _log_like_uvicorn()
    if serve_options is not None:
        _run_ray(settings, factory, serve_options, ray_address, output.resolve())
        return
    fastapi_app = create_app(settings, factory)
    shown = f"[{host}]" if ":" in host else host or "0.0.0.0"
    typer.echo(f"restyle serving on http://{shown}:{port}  (docs: /docs, health: /ping, results: {output})")
    _run_uvicorn(fastapi_app, host, port, sockets)


def _run_uvicorn(fastapi_app: Any, host: str, port: int, sockets: list[socket.socket]) -> None:
    """Serve until a signal; on SIGTERM or Ctrl-C queued work fails at once, then uvicorn drains."""
    import uvicorn

    from restyle.serve.app import begin_shutdown

    uv_config = uvicorn.Config(
        fastapi_app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                begin_shutdown(fastapi_app)  # queued work fails now, not after the drain
            super().handle_exit(sig, frame)

    try:
        Server(uv_config).run(sockets=sockets)
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raised Ctrl-C
        typer.echo("restyle stopped")


def _run_ray(settings: Any, factory: Any, options: Any, address: str | None, output: Path) -> None:
    """Start the replicas (returns once all are ready), then hold until Ctrl-C or SIGTERM."""
    import signal
    import threading
    from dataclasses import replace

    from restyle.serve import ray_app

    settings = replace(settings, output_dir=output)  # replicas may run elsewhere: an absolute path
    count = f"{options.min_replicas}-{options.max_replicas}" if options.autoscaling else str(options.replicas)
    typer.echo(f"restyle: starting {count} Ray Serve replica(s) ...", err=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    connection = None
    try:
        connection = ray_app.start(settings, factory, options, address)
        shown = f"[{options.host}]" if ":" in options.host else options.host or "0.0.0.0"
        typer.echo(
            f"restyle serving on http://{shown}:{options.port} from {count} Ray Serve replica(s)  "
            f"(docs: /docs, health: /ping, results: {output})"
        )
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        ray_app.stop(connection)  # None (stopped while starting): whatever this process started
        typer.echo("restyle stopped")


def _log_like_uvicorn() -> None:
    """restyle's own log lines (loading, "ready", warnings) beside uvicorn's, in its format."""
    import logging

    from uvicorn.logging import DefaultFormatter

    logger = logging.getLogger("restyle")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=None))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _service_factory(
    flags: dict[str, Any], model_dir: Path | None
) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """How the server loads its models, and the LoRA styles a model folder brings along.

    Without --model-dir: the configured models (file -> env -> flags), else the loud preview. With it:
    exactly that folder's models (a packaged segmenter beats the configured one), never the preview.
    """
    from dataclasses import replace

    from restyle.config import load_model_config
    from restyle.models.hub import preview_notice, resolve_or_preview
    from restyle.package.layout import packaged_models
    from restyle.serve.app import default_service_factory, packaged_service_factory

    config = load_model_config(**flags)
    if model_dir is not None:
        models = packaged_models(model_dir)
        config = replace(config, inpainter=models.inpainter, segmenter=models.segmenter or config.segmenter)
        return (lambda s: packaged_service_factory(s, config)), models.styles
    resolved = resolve_or_preview(config)
    if resolved.preview:
        typer.secho(preview_notice(resolved.missing), fg=typer.colors.YELLOW, err=True)
    return (lambda s: default_service_factory(s, resolved.config)), ()


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to ("" or 0.0.0.0/:: for all interfaces), or
    an error that names the flag at fault and why."""
    if not 1 <= port <= 65535:
        raise InvalidParameterError(f"--port: {port} is out of range [1, 65535]", field="port")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise InvalidParameterError(
            f"--host: cannot resolve {host!r} ({err.strerror})", field="host"
        ) from None
    families = {info[0] for info in infos}
    sockets: list[socket.socket] = []
    for family, kind, proto, _, address in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        sockets.append(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no clash
            if family == socket.AF_INET6 and socket.AF_INET in families:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 socket has those
            sock.bind(address)
            sock.listen(2048)
        except OSError as err:
            for s in sockets:
                s.close()
            if err.errno == errno.EADDRNOTAVAIL:
                raise InvalidParameterError(
                    f"--host: {host} is not an address of this machine ({err.strerror})", field="host"
                ) from None
            hint = "; stop what uses it or pick another --port" if err.errno == errno.EADDRINUSE else ""
            raise InvalidParameterError(
                f"--port: cannot listen on {host}:{port} ({err.strerror}){hint}", field="port"
            ) from None
    return sockets
