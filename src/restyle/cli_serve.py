"""`restyle serve`, `invoke`, `package` and `deploy`: the serving side of the command line."""

from __future__ import annotations

import errno
import json
import math
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli import Device, InpainterOpt, Segmenter, _quiet, app, step_bar
from restyle.errors import InvalidParameterError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _loras(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InvalidParameterError(f"--lora: expected NAME=PATH, got {value!r}", field="lora")
        pairs.append((name.strip(), path.strip()))
    return tuple(pairs)


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


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback unless you set an API key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (SageMaker containers use 8080).")] = 8080,
    segmenter: Segmenter = None,
    inpainter: InpainterOpt = None,
    device: Device = None,
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
) -> None:
    """Run the HTTP API (SageMaker /ping + /invocations, and /v1). Docs at /docs."""
    import uvicorn

    from restyle.serve.app import ServerSettings, begin_shutdown, create_app

    _quiet()
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
    loras = _loras(lora)
    _check_loras(loras)
    from restyle.serve.jobs import JobStore

    JobStore(output).probe()  # a full or read-only output folder fails now, not at the first request
    sockets = bind(host, port)  # before any model loads: a taken port fails now, in one line
    flags = dict(segmenter=segmenter, inpainter=inpainter, device=device)
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
    fastapi_app = create_app(settings, factory)
    shown = f"[{host}]" if ":" in host else host or "0.0.0.0"
    typer.echo(f"restyle serving on http://{shown}:{port}  (docs: /docs, health: /ping, results: {output})")
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


@app.command()
def invoke(
    url: Annotated[str, typer.Argument(help="Server URL, e.g. http://127.0.0.1:8080")],
    image: Annotated[Path, typer.Argument(help="The photo.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to paint.")],
    mask: Annotated[Path | None, typer.Option(help="Mask image (white = repaint).")] = None,
    garment: Annotated[
        str | None, typer.Option("--garment", "-g", help="Or: garment text for the segmenter.")
    ] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n")] = 2,
    steps: Annotated[int, typer.Option()] = 25,
    guidance: Annotated[float, typer.Option()] = 6.5,
    length: Annotated[int, typer.Option("--image-length", help="Long side of the results.")] = 512,
    seed: Annotated[int | None, typer.Option()] = None,
    style: Annotated[str | None, typer.Option(help="A LoRA style loaded by the server.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("out/invoke"),
    api_key: Annotated[str | None, typer.Option(envvar="RESTYLE_API_KEY")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 600.0,
) -> None:
    """Call a server's /invocations (the original contract) and save the images and a grid."""
    from restyle.client import Client, grid
    from restyle.images import load_image
    from restyle.outputs import save_png

    for name, path in (("IMAGE", image), ("--mask", mask)):
        if path is not None and not path.is_file():
            raise InvalidParameterError(f"{name}: no such file: {path}", field=name)
    photo = load_image(image, field="IMAGE")
    client = Client(url, api_key=api_key, timeout=timeout)
    with _job_progress(f"{num_images} image(s), {steps} steps at {length} px") as progress:
        images = client.invoke(
            image,
            prompt,
            mask=mask,
            garment=garment,
            num_images=num_images,
            steps=steps,
            guidance=guidance,
            image_length=length,
            seed=seed,
            style=style,
            progress=progress,
        )
    output.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(output / f"invoke-{i}.jpg")
    save_png(grid([photo, *images]), output / "invoke-grid.png")
    typer.echo(f"{len(images)} images -> {output} (grid: {output / 'invoke-grid.png'})")


@contextmanager
def _job_progress(what: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar fed with a server job's status: queue position, then denoising steps."""
    with step_bar() as bar:
        task = bar.add_task(f"Waiting for the server: {what}", total=None)

        def update(status: dict[str, Any]) -> None:
            if status.get("state") == "queued":
                ahead = status.get("position")
                bar.update(task, description=f"Queued ({ahead} ahead): {what}")
            elif status.get("total"):
                bar.update(
                    task, description=f"Generating {what}", completed=status["step"], total=status["total"]
                )

        yield update


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def package(
    target: Annotated[str, typer.Argument(help="MODEL_DIR (a diffusers inpainting folder), or `verify`.")],
    archive: Annotated[Path | None, typer.Argument(help="With `verify`: the model.tar.gz to check.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Archive to write.")] = Path("model.tar.gz"),
    segmenter: Annotated[
        Path | None, typer.Option(help="A CLIPSeg folder to include, so requests can mask by text.")
    ] = None,
    style: Annotated[
        list[str] | None, typer.Option("--style", help="A LoRA style NAME=PATH to include (repeat).")
    ] = None,
    run: Annotated[
        bool,
        typer.Option(
            "--run",
            help="verify: also extract it and drive its handler here. This EXECUTES the archive's "
            "code/inference.py and code/restyle on this machine: only for archives you trust.",
        ),
    ] = False,
    container: Annotated[
        bool,
        typer.Option(
            "--container",
            help="verify: run it as the Hugging Face inference image does, in a fresh venv (minutes; "
            "needs PyPI): install code/requirements.txt, import the real toolkit, send the original payload. "
            "This EXECUTES the archive's code (in that venv, as you): only for archives you trust.",
        ),
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(
            help="--container: the image build to stand in for, by its transformers version: 4.51.3 "
            "(deploy's default; its toolkit is on PyPI) or 5.5.3 (its toolkit comes from GitHub)."
        ),
    ] = None,
    toolkit: Annotated[
        str | None,
        typer.Option(
            help="--container: the inference toolkit to install instead of the image's (pip requirement, "
            "wheel or git URL)."
        ),
    ] = None,
    torch_req: Annotated[
        str | None,
        typer.Option("--torch", help="--container: torch to install (default: this machine's version)."),
    ] = None,
    find_links: Annotated[
        list[Path] | None,
        typer.Option("--find-links", help="--container: a local wheel folder pip may use (repeat)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="--container: denoising steps of the original payload (default 45, the original's)."
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(help="--container: keep the venv, model and log in this (new or empty) folder."),
    ] = None,
) -> None:
    """Pack a model as SageMaker's model.tar.gz (files at the root, code/ included), or `verify` one.

    restyle package ./my-model -o model.tar.gz --segmenter ./clipseg
    restyle package verify model.tar.gz              (layout and safety; runs nothing from it)
    restyle package verify model.tar.gz --run        (and drives its handler here: executes its code)
    restyle package verify model.tar.gz --container  (as the serving image runs it: executes its code)
    """
    from restyle.package import build_archive
    from restyle.package.archive import ArchiveError
    from restyle.package.container_check import ContainerCheck
    from restyle.package.verify import verify_archive

    _quiet()
    if target == "verify":
        if archive is None:
            raise InvalidParameterError("ARCHIVE: `restyle package verify model.tar.gz`", field="archive")
        check = None
        if container:
            from restyle.package.images import IMAGES, TARGET

            if image is not None and image not in IMAGES:
                raise InvalidParameterError(
                    f"--image: {image!r}; one of {', '.join(IMAGES)} (the transformers version of the build)",
                    field="image",
                )
            check = ContainerCheck(
                image=IMAGES[image] if image else TARGET,
                torch=torch_req,
                find_links=tuple(str(p) for p in find_links or ()),
                keep=keep,
                say=lambda line: typer.echo(f"container check: {line}", err=True),
            )
            if toolkit:
                check.toolkit = toolkit
            if steps is not None:
                if steps < 1:
                    raise InvalidParameterError("--steps: must be at least 1", field="steps")
                check.steps = steps
        elif image or toolkit or torch_req or find_links or steps is not None or keep:
            raise InvalidParameterError(
                "--image, --toolkit, --torch, --find-links, --steps and --keep go with --container",
                field="container",
            )
        try:
            _print_json(verify_archive(archive, run=run, container=check))
        except ArchiveError as err:
            if err.report:
                _print_json(err.report)
            raise
        typer.secho(f"{archive}: OK", fg=typer.colors.GREEN, err=True)
        return
    if archive is not None:
        raise InvalidParameterError(f"unexpected argument {archive}; use -o for the output", field="archive")
    names = build_archive(Path(target), output, segmenter=segmenter, styles=_loras(style))
    size = output.stat().st_size / 1024 / 1024
    typer.echo(
        f"wrote {output} ({len(names)} files, {size:.1f} MB); check it with `restyle package verify {output}`"
    )


@app.command()
def deploy(
    model_data: Annotated[str, typer.Argument(help="s3://bucket/path/model.tar.gz")],
    role: Annotated[str, typer.Option(help="IAM role ARN for SageMaker.")],
    name: Annotated[str, typer.Option(help="Model / endpoint name.")] = "restyle",
    region: Annotated[str, typer.Option()] = "us-east-1",
    instance_type: Annotated[str, typer.Option()] = "ml.g5.xlarge",
    image_uri: Annotated[
        str | None,
        typer.Option(
            help="Serving image (default: the Hugging Face PyTorch inference image, torch 2.6 / "
            "transformers 4.51.3 build, gpu or cpu as the instance is), or restyle's own (Dockerfile) "
            "in your registry."
        ),
    ] = None,
    min_instances: Annotated[int, typer.Option()] = 1,
    max_instances: Annotated[int, typer.Option()] = 2,
    target_invocations: Annotated[
        int, typer.Option(help="Per instance per minute; autoscaling target.")
    ] = 20,
    workers: Annotated[
        int, typer.Option(help="Model-server workers per instance: one per GPU of --instance-type.")
    ] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the API calls; send nothing.")] = False,
) -> None:
    """Create a real-time endpoint (model, endpoint config, endpoint, autoscaling) for a model.tar.gz."""
    from restyle.package.deploy import CAVEATS, DeploySpec, apply, plan
    from restyle.package.images import check_image

    spec = DeploySpec(
        name=name,
        model_data=model_data,
        role=role,
        region=region,
        instance_type=instance_type,
        image_uri=image_uri,
        min_instances=min_instances,
        max_instances=max_instances,
        target_invocations=target_invocations,
        workers=workers,
    )
    calls = plan(spec)
    what = check_image(spec.image(), spec.instance_type, spec.region)
    typer.echo(f"image: {spec.image()} ({what})", err=True)
    for caveat in CAVEATS:
        typer.echo(f"note: {caveat}", err=True)
    if dry_run:
        _print_json(calls)
        return
    apply(spec)
    typer.echo(f"endpoint {name} is InService in {region}")
