"""`restyle bench train|infer|batch`: the benchmarks whose figures go to docs/PERFORMANCE.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli.base import group
from restyle.errors import InvalidParameterError

bench_app = group("Benchmarks; figures go to docs/PERFORMANCE.md.")


@bench_app.command("train")
def bench_train(
    base: Annotated[
        str | None, typer.Option(help="Base inpainting model (default: tiny, built here).")
    ] = None,
    resolution: Annotated[int | None, typer.Option(help="Training side (default 512, tiny: 64).")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps per configuration.")] = 20,
    write: Annotated[Path | None, typer.Option(help="Update this markdown file's training section.")] = None,
) -> None:
    """Time both training modes, with and without the text encoder (reference configuration)."""
    import tempfile

    from restyle.models.tiny import TINY_IMAGE_SIZE, build_tiny_inpainter
    from restyle.perf.training import bench_train as run
    from restyle.perf.training import train_table

    with tempfile.TemporaryDirectory() as tmp:
        if base is None:
            base = str(build_tiny_inpainter(Path(tmp) / "inpainter"))
            resolution = resolution or TINY_IMAGE_SIZE
            label = "tiny random inpainter (restyle models tiny)"
        else:
            label = base
        figures, env = run(base, resolution or 512, steps)
        env["base"] = label
    _report(train_table(figures, env), None, None, write, "train")


@bench_app.command("infer")
def bench_infer(
    arch: Annotated[
        str | None,
        typer.Option(
            help="sd2, sd15 (full size, random weights), small or tiny; or a newer family at full size: "
            "sdxl, flux-fill, qwen-edit (its tiny model without a GPU). Default: sd2 on a GPU, small on CPU."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cuda, cpu, ...")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")] = "auto",
    fast: Annotated[
        str,
        typer.Option(
            help="restyle's speed-ups: channels_last, fuse_qkv, compile (comma-separated), all, or ''."
        ),
    ] = "channels_last,fuse_qkv",
    repeats: Annotated[int | None, typer.Option(help="Timed runs per case (median reported).")] = None,
    quick: Annotated[
        bool, typer.Option("--quick/--full", help="Small sizes and few steps (the default without a GPU).")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure here as JSON.")] = None,
    write: Annotated[Path | None, typer.Option(help="Update this markdown file's inference section.")] = None,
) -> None:
    """Time the original recipe against restyle's path on the real architectures (random weights)."""
    from dataclasses import replace

    from restyle.inpaint.fast import FastOptions
    from restyle.perf.archs import ARCHS, FAMILY_ARCHS
    from restyle.perf.cases import BenchConfig
    from restyle.perf.report import markdown, run_all
    from restyle.runtime import resolve_device

    FastOptions.parse(fast)
    known = (*ARCHS, "tiny", *FAMILY_ARCHS)
    if arch is not None and arch not in known:
        raise InvalidParameterError(f"arch: unknown {arch!r}; choose from {', '.join(known)}", field="arch")
    gpu = resolve_device(device).type == "cuda"
    if arch in FAMILY_ARCHS:
        _bench_family(arch, device, dtype, gpu and not quick, repeats, json_out, write)
        return
    config = BenchConfig.for_cpu(arch or "small") if quick or not gpu else BenchConfig(arch=arch or "sd2")
    config = replace(config, device=device, dtype=dtype, fast=fast, repeats=repeats or config.repeats)
    result = run_all(config, log=lambda line: typer.echo(line, err=True))
    _report(markdown(result), result, json_out, write, f"infer-{config.arch}")  # a section per layout
    if not result["equivalence"]["passed"]:
        typer.echo("equivalence FAILED: the fast path's images differ from the plain pipeline's", err=True)
        raise typer.Exit(1)


def _bench_family(
    arch: str,
    device: str,
    dtype: str,
    full: bool,
    repeats: int | None,
    json_out: Path | None,
    write: Path | None,
) -> None:
    """`bench infer --arch sdxl|flux-fill|qwen-edit`: restyle's path on that family (perf/families.py)."""
    from restyle.perf.families import FamilyBench, family_table, run_family

    bench = FamilyBench(
        arch,
        device=device,
        dtype=dtype,
        full=full,
        steps=FamilyBench.steps if full else 2,  # without a GPU: 2 steps
        repeats=repeats or (3 if full else 2),
    )
    result = run_family(bench, log=lambda line: typer.echo(line, err=True))
    _report(family_table(result), result, json_out, write, f"infer-{arch}")


@bench_app.command("batch")
def bench_batch(
    rows: Annotated[int, typer.Option(help="Manifest rows (one image each by default).")] = 48,
    actors: Annotated[int, typer.Option(help="Ray Data actors (CPU threads are split between them).")] = 2,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Images per row.")] = 1,
    steps: Annotated[int, typer.Option(help="Denoising steps per image.")] = 8,
    size: Annotated[int, typer.Option(help="Working long side (multiple of 8).")] = 256,
    max_batch: Annotated[int, typer.Option(help="Images denoised together.")] = 4,
    window: Annotated[int, typer.Option(help="Rows per window (local) and per actor task (Ray).")] = 4,
    ray_address: Annotated[
        str | None, typer.Option(envvar="RAY_ADDRESS", help="A Ray cluster to join; else a local instance.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here as JSON.")] = None,
    write: Annotated[Path | None, typer.Option(help="Update this markdown file's batch section.")] = None,
) -> None:
    """Batch throughput on the tiny models: one process, then Ray Data actors (needs restyle[ray])."""
    import tempfile

    from restyle.models.tiny import build_tiny_models
    from restyle.perf.batch import batch_table, run_bench
    from restyle.raysupport import require_ray

    require_ray("bench batch")
    for name, value, low in (("rows", rows, 1), ("actors", actors, 1), ("steps", steps, 1)):
        if value < low:
            raise InvalidParameterError(f"{name}: must be at least {low}, got {value}", field=name)
    with tempfile.TemporaryDirectory() as tmp:
        models = build_tiny_models(Path(tmp) / "tiny")
        result = run_bench(
            models,
            rows=rows,
            actors=actors,
            num_images=num_images,
            steps=steps,
            size=size,
            max_batch=max_batch,
            window=window,
            address=ray_address,
            log=lambda line: typer.echo(line, err=True),
        )
    _report(batch_table(result, "tiny random models (restyle models tiny)"), result, json_out, write, "batch")


def _report(table: str, result: Any, json_out: Path | None, write: Path | None, section: str) -> None:
    """Print a benchmark's table; write its figures as JSON (--json) and its section of a markdown file
    (--write, between the section's markers)."""
    from restyle.perf.report import write_json
    from restyle.perf.sections import write_section

    typer.echo(table)
    if json_out is not None:
        write_json(result, json_out)
        typer.echo(f"wrote {json_out}")
    if write is not None:
        write_section(write, table, name=section)
        typer.echo(f"updated {write}")
