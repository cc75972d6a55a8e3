"""Timing, FLOP counting, matmul peak and memory: the benchmark's instruments.

On CUDA every timing is taken with CUDA events after a synchronise, so queued kernels are counted; on
the CPU with perf_counter. Each figure is the median of `repeats` runs after `warmup` runs.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Seconds of each measured run; the median is the figure reported."""

    runs: tuple[float, ...]
    peak_bytes: int | None = None  # CUDA: peak allocated during the runs; CPU: None (see process_peak_rss)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median: how steady the runs were."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median else 0.0


def synchronize(device: Any) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], device: Any, *, warmup: int = 1, repeats: int = 3) -> Timing:
    """Run `fn` warmup + repeats times; time the repeats (CUDA events on GPU)."""
    import torch

    cuda = getattr(device, "type", device) == "cuda"
    for _ in range(warmup):
        fn()
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            runs.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    return Timing(tuple(runs), peak)


def process_peak_rss() -> int:
    """The process's resident-memory high-water mark in bytes (the CPU's only peak figure)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def matmul_peak(device: Any, dtype: Any, *, n: int | None = None, repeats: int = 5) -> float:
    """Measured dense matmul throughput in FLOP/s: the ceiling the denoising loop is compared with."""
    import torch

    cuda = getattr(device, "type", device) == "cuda"
    n = n or (8192 if cuda else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    loops = 20 if cuda else 3

    def run() -> None:
        for _ in range(loops):
            torch.mm(a, b)

    timing = time_fn(run, device, warmup=1, repeats=repeats)
    return 2.0 * n**3 * loops / min(timing.runs)


def unet_flops(unet: Any, batch: int, latent_hw: tuple[int, int], seq_len: int = 77) -> int:
    """FLOPs of one UNet call (torch's FlopCounterMode: matmuls and convolutions), on the UNet's device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    p = next(unet.parameters())
    h, w = latent_hw
    sample = torch.randn(batch, unet.config.in_channels, h, w, device=p.device, dtype=p.dtype)
    context = torch.randn(batch, seq_len, unet.config.cross_attention_dim, device=p.device, dtype=p.dtype)
    timestep = torch.tensor([500] * batch, device=p.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, timestep, encoder_hidden_states=context)
    return int(counter.get_total_flops())


class StepClock:
    """Times the denoising loop from the pipeline's step callbacks (excludes the first step's set-up).

    Use `callback` as `callback_on_step_end`; `per_step` is the median seconds between consecutive steps.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self.marks: list[Any] = []

    def callback(self, pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        import torch

        if getattr(self.device, "type", self.device) == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())
        return kwargs

    def per_step(self) -> float:
        if len(self.marks) < 2:
            raise ValueError("the step clock needs at least 2 steps")
        if getattr(self.device, "type", self.device) == "cuda":
            self.marks[-1].synchronize()
            gaps = [a.elapsed_time(b) / 1000.0 for a, b in zip(self.marks, self.marks[1:])]
        else:
            gaps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return statistics.median(gaps)
