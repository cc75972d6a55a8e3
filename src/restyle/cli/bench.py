"""`restyle bench train|infer`: the benchmarks whose figures go to docs/PERFORMANCE.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    from restyle.perf.sections import write_section
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
    table = train_table(figures, env)
    typer.echo(table)
    if write is not None:
        write_section(write, table)
        typer.echo(f"updated {write}")


@bench_app.command("infer")
def bench_infer(
    arch: Annotated[
        str | None,
        typer.Option(
            help="sd2, sd15 (full size, random weights), small or tiny. Default: sd2 on a GPU, small on CPU."
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
    from restyle.perf.archs import ARCHS
    from restyle.perf.cases import BenchConfig
    from restyle.perf.report import markdown, run_all, write_json
    from restyle.perf.sections import write_section
    from restyle.runtime import resolve_device

    FastOptions.parse(fast)
    if arch is not None and arch not in (*ARCHS, "tiny"):
        raise InvalidParameterError(
            f"arch: unknown {arch!r}; choose from {', '.join((*ARCHS, 'tiny'))}", field="arch"
        )
    gpu = resolve_device(device).type == "cuda"
    config = BenchConfig.for_cpu(arch or "small") if quick or not gpu else BenchConfig(arch=arch or "sd2")
    config = replace(config, device=device, dtype=dtype, fast=fast, repeats=repeats or config.repeats)
    result = run_all(config, log=lambda line: typer.echo(line, err=True))
    table = markdown(result)
    typer.echo(table)
    if json_out is not None:
        write_json(result, json_out)
        typer.echo(f"wrote {json_out}")
    if write is not None:
        write_section(write, table, name=f"infer-{config.arch}")  # one section per model layout
        typer.echo(f"updated {write}")
    if not result["equivalence"]["passed"]:
        typer.echo("equivalence FAILED: the fast path's images differ from the plain pipeline's", err=True)
        raise typer.Exit(1)
