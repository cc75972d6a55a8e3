"""`restyle bench infer --arch sdxl|flux-fill|qwen-edit`: restyle's path on a new family at full size.

The denoiser, VAE and text encoders are the published architectures (`restyle.models.published_archs`),
built on the device with random weights in the run's dtype (speed and memory do not depend on weight
values); tokenizers, scheduler and processor come from the family's tiny model, which uses the published
non-weight files where they exist. Without a GPU (or with --quick) the family's tiny model runs instead, so
the command and its table are exercised anywhere; only a GPU run says anything about real-size speed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3


@dataclass(frozen=True)
class FamilyBench:
    """One run of the family benchmark."""

    family: str
    device: str = "auto"
    dtype: str = "auto"
    size: int | None = None  # working long side; None: native (tiny: 64)
    steps: int = 20
    num_images: int = 1
    repeats: int = 3
    full: bool = True  # the published architecture (GPU); False: the family's tiny model
    offload: str = ""  # "" or model: diffusers' enable_model_cpu_offload


def _pipeline(bench: FamilyBench, tiny: Path, device: Any, dtype: Any) -> tuple[Any, dict[str, int]]:
    """The family's pipeline, full size with random weights on `device` (or its tiny model), and its
    parameters by part."""
    import diffusers

    from restyle.inpaint.loading import load_pipeline
    from restyle.models.published_archs import ARCH_BUILDERS, parameter_count

    small, _ = load_pipeline(str(tiny), device="cpu", dtype="fp32")
    if not bench.full:
        parts = {n: m for n, m in small.components.items() if hasattr(m, "parameters")}
        return small.to(device, dtype), {n: parameter_count(m) for n, m in parts.items()}
    where = "cpu" if bench.offload else str(device)
    arch = ARCH_BUILDERS[bench.family](device=where, dtype=dtype)
    pipe = getattr(diffusers, arch.pipeline)(**{**small.components, **arch.components})
    pipe = pipe.to(dtype=dtype)  # the tiny tokenizers' companions (none hold weights) stay as they are
    if bench.offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    return pipe, arch.parameter_counts()


def run_family(bench: FamilyBench, log: Any = print) -> dict[str, Any]:
    """Build, warm up and time `bench`; returns every figure (JSON-ready)."""
    import torch

    from restyle.inpaint import Inpainter, StyleParams
    from restyle.models.tiny import build_tiny_backend
    from restyle.perf.cases import sample_inputs
    from restyle.perf.measure import device_label, time_fn
    from restyle.runtime import resolve_device, resolve_dtype

    device = resolve_device(bench.device)
    auto_bf16 = bench.dtype == "auto" and device.type == "cuda" and bench.family != "sdxl"
    dtype = resolve_dtype("bf16" if auto_bf16 else bench.dtype, device)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_backend("inpainter", bench.family, Path(tmp) / bench.family)
        started = time.perf_counter()
        pipe, params = _pipeline(bench, tiny, device, dtype)
        inpainter = Inpainter(pipe, str(tiny) if not bench.full else f"{bench.family} (random weights)")
    build_s = time.perf_counter() - started
    size = bench.size or inpainter.native_size
    photo, mask = sample_inputs(size)
    request = StyleParams(prompt="a red linen maxi skirt", steps=bench.steps, num_images=bench.num_images,
                          seed=0, size=size)  # fmt: skip
    log(
        f"{bench.family}: built in {build_s:.1f} s; {sum(params.values()) / 1e9:.2f} B parameters; timing ..."
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timing = time_fn(lambda: inpainter.run(photo, mask, request), device, warmup=1, repeats=bench.repeats)
    result = inpainter.run(photo, mask, request)
    return {
        "family": bench.family,
        "full_size": bench.full,
        "device": device_label(device),
        "dtype": str(dtype).removeprefix("torch."),
        "offload": bench.offload or "none",
        "work_size": list(result.work_size),
        "steps": bench.steps,
        "num_images": bench.num_images,
        "parameters": params,
        "weights_gib": round(sum(params.values()) * torch.finfo(dtype).bits / 8 / GIB, 2),
        "seconds": round(timing.median, 3),
        "seconds_per_step": round(timing.median / bench.steps, 4),
        "spread": round(timing.spread, 3),
        "peak_vram_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if device.type == "cuda" else None,
        "build_s": round(build_s, 1),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def family_table(r: dict[str, Any]) -> str:
    """The run as a markdown table for docs/PERFORMANCE.md."""
    what = "published architecture, random weights" if r["full_size"] else "tiny model (code path only)"
    peak = f"{r['peak_vram_gib']} GiB" if r["peak_vram_gib"] is not None else "n/a (CPU)"
    v = r["versions"]
    lines = [
        f"### {r['family']}: {what}",
        "",
        f"{r['device']}, {r['dtype']}, offload {r['offload']}; torch {v['torch']}, "
        f"diffusers {v['diffusers']}, transformers {v['transformers']}.",
        "",
        "| work size | steps | images | s / request (median) | s / step | spread | peak VRAM | weights |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['work_size'][0]}x{r['work_size'][1]} | {r['steps']} | {r['num_images']} | {r['seconds']} | "
        f"{r['seconds_per_step']} | {r['spread']:.0%} | {peak} | {r['weights_gib']} GiB |",
        "",
        "Parameters: " + ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in r["parameters"].items()) + ".",
    ]
    return "\n".join(lines)
