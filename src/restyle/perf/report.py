"""Run every case of the inference benchmark and write the results (JSON and a markdown table)."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from restyle.perf.cases import Bench, BenchConfig, CaseResult
from restyle.perf.measure import process_peak_rss

Log = Callable[[str], None]


def run_all(config: BenchConfig, log: Log = print) -> dict[str, Any]:
    """Every case, in one process and one run; returns a JSON-ready dict."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the benchmark prompt is cut at 77 tokens, as in real use
    log(f"building {config.arch} pipelines (random weights) ...")
    bench = Bench(config)
    cases: list[CaseResult] = []
    steps: list[tuple[str, Callable[[], CaseResult]]] = [
        ("segmentation", bench.case_segment),
        ("host work", bench.case_host),
        ("mask + 1 image", lambda: bench.case_end_to_end(0, with_mask=True)),
        ("the original's case", lambda: bench.case_end_to_end(1, with_mask=False)),
        *[(f"batch {b}", lambda b=b: bench.case_throughput(b)) for b in config.batches],
    ]
    for label, case in steps:
        log(f"measuring {label} ...")
        cases.append(case())
    log("measuring the denoising loop's FLOP/s ...")
    loop = bench.loop_efficiency(max(config.batches))
    log("checking output equivalence ...")
    equal = bench.equivalence()
    return {
        "config": asdict(config),
        "environment": environment(bench),
        "cases": [_case_json(c) for c in cases],
        "loop": loop,
        "equivalence": equal,
        "peak_memory": _peak_memory(bench, cases),
    }


def _case_json(case: CaseResult) -> dict[str, Any]:
    def timing(t: Any) -> dict[str, Any] | None:
        return (
            None if t is None else {"median_s": t.median, "runs_s": list(t.runs), "peak_bytes": t.peak_bytes}
        )

    return {
        "name": case.name,
        "images": case.images,
        "restyle": timing(case.restyle),
        "baseline": timing(case.baseline),
        "speedup": case.speedup,
    }


def _peak_memory(bench: Bench, cases: list[CaseResult]) -> dict[str, Any]:
    if bench.device.type == "cuda":
        return {
            "kind": "cuda max allocated, per case",
            "bytes": max(c.restyle.peak_bytes or 0 for c in cases),
        }
    return {"kind": "process peak RSS (both pipelines loaded)", "bytes": process_peak_rss()}


def environment(bench: Bench) -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    from restyle.perf.archs import parameter_count

    device = bench.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "device": name,
        "dtype": str(bench.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
        "unet_parameters": f"{parameter_count(bench.baseline.unet) / 1e6:.1f} M",
    }


def markdown(result: dict[str, Any]) -> str:
    """The PERFORMANCE.md section: environment line, the cases table, loop efficiency, equivalence."""
    env, cfg, loop, eq = result["environment"], result["config"], result["loop"], result["equivalence"]
    lines = [
        f"Device: {env['device']}, {env['dtype']}. Model: `{cfg['arch']}` ({env['unet_parameters']} UNet "
        f"parameters, random weights). restyle speed-ups: `{cfg['fast'] or 'none'}`. "
        f"torch {env['torch']}, diffusers {env['diffusers']}, transformers {env['transformers']}, "
        f"python {env['python']}. Medians of {cfg['repeats']} runs after {cfg['warmup']} warm-up.",
        "",
        "| case | original recipe (s) | restyle (s) | speed-up | restyle images/s |",
        "|---|---|---|---|---|",
    ]
    for case in result["cases"]:
        base = case["baseline"]["median_s"] if case["baseline"] else None
        mine = case["restyle"]["median_s"]
        rate = f"{case['images'] / mine:.2f}" if case["images"] else ""
        speed = f"{case['speedup']:.2f}x" if case["speedup"] else ""
        lines.append(f"| {case['name']} | {_s(base)} | {_s(mine)} | {speed} | {rate} |")
    mem = result["peak_memory"]
    lines += [
        "",
        f"Denoising loop at batch {loop['batch']} ({loop['work_size'][0]}x{loop['work_size'][1]}): "
        f"{_flops(loop['unet_flops_per_step'])} per step (torch's flop counter, CFG batch "
        f"{2 * loop['batch']}), {loop['s_per_step'] * 1000:.1f} ms per step = "
        f"{_flops(loop['achieved_flops'])}/s, {100 * loop['fraction_of_peak']:.0f}% of the measured "
        f"matmul peak ({_flops(loop['matmul_peak_flops'])}/s).",
        f"Peak memory: {mem['bytes'] / 2**20:.0f} MB ({mem['kind']}).",
        f"Equivalence (`{eq['fast']}` vs the plain pipeline, same weights, inputs and seed): "
        f"max |difference| {eq['max_abs_diff']:.0f} of 255, PSNR {eq['psnr_db']:.1f} dB.",
    ]
    return "\n".join(lines)


def _flops(value: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value / 1e6:.2f} MFLOP"


def _s(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
