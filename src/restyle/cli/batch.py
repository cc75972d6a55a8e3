"""`restyle batch`: a catalogue of restyle jobs (a CSV / JSONL manifest, or a folder and one request) on one
machine, resumable, with a results.jsonl (see docs/BATCH.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli.base import (
    Activation,
    Device,
    Garment,
    InpainterOpt,
    MaskTableOpt,
    NoProtect,
    Offload,
    Protect,
    ProtectWith,
    Quantize,
    Segmenter,
    mask_params,
    restyler,
    status,
)

commands = typer.Typer()  # restyle.cli adds these to its app


@commands.command()
def batch(
    source: Annotated[Path, typer.Argument(help="A manifest (.csv, .jsonl) or a folder of photos.")],
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="Output folder, or a URI (s3://bucket/out, gs://...)."),
    ] = "out/batch",
    results_dir: Annotated[
        Path | None,
        typer.Option(
            help="For a URI output: the local folder of results.jsonl (default ./.restyle-batch/...)."
        ),
    ] = None,
    template: Annotated[
        Path | None, typer.Option(help="A request (JSON object of manifest columns) for every row.")
    ] = None,
    garment: Garment = None,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Free text for the new look.")] = None,
    new_type: Annotated[str | None, typer.Option("--type", help="New garment type, e.g. skirt.")] = None,
    style_: Annotated[str | None, typer.Option("--style", help="Design style, e.g. A-line.")] = None,
    pattern: Annotated[str | None, typer.Option(help="Pattern, e.g. florals.")] = None,
    color: Annotated[str | None, typer.Option(help="Colour, e.g. red (a vocabulary colour gets ΔE).")] = None,
    fabric: Annotated[str | None, typer.Option(help="Fabric, e.g. linen.")] = None,
    fit: Annotated[str | None, typer.Option(help="Fit, e.g. flowy.")] = None,
    length: Annotated[str | None, typer.Option(help="Length, e.g. ankle-length.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Use the prompt verbatim.")] = False,
    negative: Annotated[str | None, typer.Option(help="Negative prompt.")] = None,
    num_images: Annotated[
        int | None, typer.Option("--num-images", "-n", help="Variants per row (default 2).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="First variant's seed of every row.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model's).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance (default: the model's).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="euler, euler_a, dpm++, ... (default euler).")] = None,
    size: Annotated[int | None, typer.Option(help="Working long side (multiple of 8).")] = None,
    max_batch: Annotated[
        int, typer.Option(help="Images of same-shape rows denoised together; 1: every row alone.")
    ] = 8,
    window: Annotated[
        int, typer.Option(help="Rows read before the prepared ones are grouped (with --ray: rows per task).")
    ] = 16,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run rows again whose last attempt failed.")
    ] = False,
    protect: Protect = None,
    no_protect: NoProtect = False,
    threshold: Annotated[
        float | None, typer.Option(help="Garment probability threshold (default 0.4).")
    ] = None,
    grow: Annotated[int | None, typer.Option(help="Grow (negative: shrink) the mask, pixels (6).")] = None,
    feather: Annotated[int | None, typer.Option(help="Soft outward edge, pixels (6).")] = None,
    activation: Activation = "sigmoid",
    segmenter: Segmenter = None,
    protect_with: ProtectWith = None,
    mask_table: MaskTableOpt = None,
    inpainter: InpainterOpt = None,
    device: Device = None,
    dtype: Annotated[str | None, typer.Option(help="auto, fp32, fp16, bf16 [env RESTYLE_DTYPE].")] = None,
    offload: Offload = None,
    quantize: Quantize = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Run the rows on Ray Data actors (pip install 'restyle[ray]').")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS", help="With --ray: the cluster to join (auto, ray://host:10001); else local."
        ),
    ] = None,
    actors: Annotated[
        int | None, typer.Option(help="With --ray: model-holding actors (default: one per GPU, else 1).")
    ] = None,
    gpus_per_actor: Annotated[
        float | None, typer.Option(help="With --ray: GPUs per actor (default 1 on a GPU cluster, else 0).")
    ] = None,
    cpus_per_actor: Annotated[
        float | None, typer.Option(help="With --ray: CPUs per actor (default 1 with GPUs, else CPUs/actors).")
    ] = None,
) -> None:
    """Restyle every row of SOURCE (or every photo of a folder) into --output; a re-run resumes.

    The request of each row: its cells, over the --template, over these flags. Exits 1 when a row failed.
    """
    from restyle.batch import BatchOptions, BatchRunner, load_template, read_rows

    if ray:
        from restyle.raysupport import require_ray

        require_ray()  # before reading anything: say how to install it

    flags = dict(
        garment=garment or None,
        prompt=prompt,
        type=new_type,
        style=style_,
        pattern=pattern,
        color=color,
        fabric=fabric,
        fit=fit,
        length=length,
        raw=raw or None,
        negative=negative,
        num_images=num_images,
        seed=seed,
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        size=size,
        threshold=threshold,
        grow=grow,
        feather=feather,
    )
    defaults = {**(load_template(template) if template else {}), **_given(flags)}
    rows = read_rows(source, defaults)
    from restyle.segment import MaskParams

    d = MaskParams()  # threshold, grow and feather are the rows' own (columns; the flags are their default)
    mparams = mask_params(d.threshold, d.grow, d.feather, activation, protect, no_protect)
    mparams.check()
    options = BatchOptions(
        max_batch=max_batch,
        window=window,
        retry_failed=retry_failed,
        mask_params=mparams,
        results_dir=results_dir,
    )
    engine = restyler(
        segmenter,
        inpainter,
        device,
        dtype=dtype,
        offload=offload,
        quantize=quantize,
        protector=protect_with,
        mask_table=mask_table,
    )
    if ray:
        runner = _ray_runner(engine, output, options, ray_address, actors, gpus_per_actor, cpus_per_actor)
    else:
        with status(f"Loading {engine.config.inpainter} ..."):
            _ = engine.inpainter
        runner = BatchRunner(engine, output, options)
    with RowBar(len(rows)) as on_record:
        runner.on_record = on_record
        summary = runner.run(rows)
    _say_summary(summary)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)


def _ray_runner(
    engine: Any,
    output: str,
    options: Any,
    address: str | None,
    actors: int | None,
    gpus: float | None,
    cpus: float | None,
) -> Any:
    from restyle.batch.ray_data import RayBatchRunner, RayOptions

    def say(plan: Any) -> None:
        where = "GPU" if plan.gpus else "CPU"
        typer.echo(
            f"ray: {plan.actors} {where} actor(s) ({plan.gpus:g} GPU, {plan.cpus:g} CPU each), "
            f"{plan.rows_per_task} rows per task",
            err=True,
        )

    ray_options = RayOptions(address=address, actors=actors, gpus_per_actor=gpus, cpus_per_actor=cpus)
    return RayBatchRunner(engine, output, options, ray_options, on_plan=say)


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class RowBar:
    """A rich bar on stderr over rows (done / total, images/s, ETA) that also prints each failed row."""

    def __init__(self, total: int) -> None:
        import sys

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=not sys.stderr.isatty(),
            console=Console(stderr=True),
        )
        self.task = self.bar.add_task("Rows", total=total, rate="")
        self.started = time.perf_counter()
        self.images = 0

    def __enter__(self) -> Any:
        self.bar.__enter__()
        return self.update

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, record: dict[str, Any]) -> None:
        if record["status"] == "ok":
            self.images += len(record["files"]["images"])
        elif record["status"] == "failed":
            self.bar.console.print(f"failed: {record['key']} (line {record['line']}): {record['error']}")
        rate = self.images / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, rate=f"{rate:.2f} images/s")


def _say_summary(summary: Any) -> None:
    """One line of counts and speed, and where the results are."""
    stopped = (
        f" (stopped: {summary.total - summary.done} rows left for the next run)"
        if summary.interrupted
        else ""
    )
    typer.echo(
        f"ok {summary.ok}, failed {summary.failed}, skipped {summary.skipped} of {summary.total} rows"
        f"{stopped}; {summary.images} images in {summary.seconds:.1f} s ({summary.images_per_s:.2f} images/s)"
    )
    typer.echo(f"results: {summary.results}")
