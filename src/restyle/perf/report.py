"""Run every case of the inference benchmark and write the results (JSON and a markdown section)."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from restyle.perf.cases import Bench, BenchConfig, CaseResult
from restyle.perf.measure import device_label, process_peak_rss

Log = Callable[[str], None]


def run_all(config: BenchConfig, log: Log = print) -> dict[str, Any]:
    """Every case, in one process and one run; returns a JSON-ready dict."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the benchmark prompt is cut at 77 tokens, as in real use
    log(f"building {config.arch} pipelines (random weights) ...")
    bench = Bench(config)
    steps: list[tuple[str, Callable[[], CaseResult]]] = [
        ("segmentation", bench.case_segment),
        ("host work", bench.case_host),
        ("mask + 1 image", lambda: bench.case_end_to_end(0, with_mask=True)),
        ("the original's case", lambda: bench.case_end_to_end(1, with_mask=False)),
        ("the original's case, same geometry", lambda: bench.case_same_geometry(1)),
        *[(f"batch {b}", lambda b=b: bench.case_throughput(b)) for b in config.batches],
        *[(f"{b} requests", lambda b=b: bench.case_requests(b)) for b in config.batches if b > 1],
    ]
    cases: list[CaseResult] = []
    with torch.inference_mode():  # scoped: nothing here needs gradients, and callers keep theirs
        for label, case in steps:
            log(f"measuring {label} ...")
            cases.append(case())
        log("measuring the denoising loops' FLOP/s ...")
        loop = bench.loop_efficiency(max(config.batches))
        log("checking output equivalence ...")
        equal = bench.equivalence()
    return {
        "config": asdict(config),
        "environment": environment(bench),
        "cases": [_case_json(c) for c in cases],
        "loop": loop,
        "equivalence": equal,
        "process_peak_rss_bytes": process_peak_rss(),
    }


def _case_json(case: CaseResult) -> dict[str, Any]:
    def timing(t: Any) -> dict[str, Any] | None:
        if t is None:
            return None
        return {"median_s": t.median, "runs_s": list(t.runs), "spread": t.spread, "peak_bytes": t.peak_bytes}

    return {
        "name": case.name,
        "images": case.images,
        "restyle": timing(case.restyle),
        "baseline": timing(case.baseline),
        "speedup": case.speedup,
        **case.extra,
    }


def environment(bench: Bench) -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    from restyle.perf.archs import parameter_count

    return {
        "device": device_label(bench.device),
        "device_type": bench.device.type,
        "dtype": str(bench.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
        "tf32_matmul": str(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": str(torch.backends.cudnn.allow_tf32),
        "unet_parameters": f"{parameter_count(bench.baseline.unet) / 1e6:.1f} M",
    }


CPU_CAVEAT = (
    "**A CPU run**: it shows the harness works and what it reports, nothing about the GPU targets. "
    "The speed-up column includes restyle's smaller work area (the crop at the photo's aspect ratio); "
    "the same-geometry row isolates the speed-ups."
)


def markdown(result: dict[str, Any]) -> str:
    """The PERFORMANCE.md section: environment line, the cases table, loop efficiency, equivalence."""
    env, cfg = result["environment"], result["config"]
    lines = [
        f"Device: {env['device']}, {env['dtype']}. Model: `{cfg['arch']}` ({env['unet_parameters']} UNet "
        f"parameters, random weights). restyle speed-ups (`--fast`): `{cfg['fast'] or 'none'}`. "
        f"torch {env['torch']}, diffusers {env['diffusers']}, transformers {env['transformers']}, "
        f"python {env['python']}. Medians of {cfg['repeats']} alternating runs after "
        f"{cfg['warmup']} warm-up.",
        "",
    ]
    if env["device_type"] != "cuda":
        lines += [CPU_CAVEAT, ""]
    lines += [
        "| case | work pixels: original → restyle | original recipe (s) | restyle (s) "
        "| speed-up (end to end) | restyle images/s |",
        "|---|---|---|---|---|---|",
    ]
    for case in result["cases"]:
        base = case["baseline"]["median_s"] if case["baseline"] else None
        mine = case["restyle"]["median_s"]
        rate = f"{case['images'] / mine:.2f}" if case["images"] else ""
        speed = f"{case['speedup']:.2f}x" if case["speedup"] else ""
        work = ""
        if "restyle_work" in case:
            (bw, bh), (rw, rh) = case["baseline_work"], case["restyle_work"]
            work = f"{bw}x{bh} → {rw}x{rh}"
        lines.append(f"| {case['name']} | {work} | {_s(base)} | {_s(mine)} | {speed} | {rate} |")
    lines += [
        "",
        *_loop_lines(result["loop"]),
        _memory_line(result),
        _equivalence_line(result["equivalence"]),
    ]
    return "\n".join(lines)


def _loop_lines(loop: dict[str, Any]) -> list[str]:
    lines = [
        f"Denoising loop at batch {loop['batch']} (UNet FLOPs from torch's flop counter, CFG doubling the "
        f"batch; measured matmul peak {_flops(loop['matmul_peak_flops'])}/s):"
    ]
    for label in ("restyle", "baseline"):
        d = loop[label]
        who = "restyle" if label == "restyle" else "original recipe"
        lines.append(
            f"- {who} at {d['work_size'][0]}x{d['work_size'][1]}: "
            f"{_flops(d['unet_flops_per_step'])} per step, {d['s_per_step'] * 1000:.1f} ms per step = "
            f"{_flops(d['achieved_flops'])}/s, {100 * d['fraction_of_peak']:.0f}% of the peak; "
            f"{d['outside_loop_s']:.3f} s of {d['total_s']:.3f} s outside the loop."
        )
    return [*lines, ""]


def _memory_line(result: dict[str, Any]) -> str:
    cases = result["cases"]
    if result["environment"]["device_type"] == "cuda":
        mine = max(c["restyle"]["peak_bytes"] or 0 for c in cases)
        base = max((c["baseline"] or {}).get("peak_bytes") or 0 for c in cases)
        return (
            f"Peak CUDA memory above the loaded models, largest case: restyle {mine / 2**20:,.0f} MB, "
            f"original recipe {base / 2**20:,.0f} MB."
        )
    rss = result["process_peak_rss_bytes"] / 2**20
    return f"Peak memory: {rss:,.0f} MB process RSS (both pipelines loaded)."


def _equivalence_line(eq: dict[str, Any]) -> str:
    verdict = "passed" if eq["passed"] else "FAILED"
    return (
        f"Equivalence, {verdict}: `{eq['fast']}` against the plain pipeline (same weights, inputs and seed), "
        f"PSNR {eq['psnr_db']:.1f} dB (required {eq['psnr_required_db']:.0f}; the plain pipeline against "
        f"itself: {eq['noise_floor_psnr_db']:.1f}), max |difference| {eq['max_abs_diff']:.1f} of 255, "
        f"all finite: {eq['finite']}."
    )


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
