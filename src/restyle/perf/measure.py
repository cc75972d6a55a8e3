"""Timing, FLOP counting, matmul peak, memory and the device's name: the benchmarks' instruments.

On CUDA every timing is taken with CUDA events after a synchronise, so queued kernels are counted; on
the CPU with perf_counter. Each figure is the median of `repeats` runs after `warmup` runs.
"""

from __future__ import annotations

import platform
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
    peak_bytes: int | None = None  # CUDA: peak allocated during the runs above what was resident before
    # (the loaded models); CPU: None (see process_peak_rss)

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


def _is_cuda(device: Any) -> bool:
    return getattr(device, "type", device) == "cuda"


def _once(fn: Callable[[], Any], device: Any) -> float:
    """Seconds of one call; on CUDA between two events, so queued kernels are included."""
    import torch

    if _is_cuda(device):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class _Peak:
    """CUDA memory allocated at the peak of the runs, above what was resident when they began."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = _is_cuda(device)
        if self.cuda:
            torch.cuda.synchronize()
            self.resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    def bytes(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated() - self.resident) if self.cuda else None


def time_fn(fn: Callable[[], Any], device: Any, *, warmup: int = 1, repeats: int = 3) -> Timing:
    """Run `fn` warmup + repeats times; time the repeats (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    peak = _Peak(device)
    runs = tuple(_once(fn, device) for _ in range(repeats))
    return Timing(runs, peak.bytes())


def time_pair(
    a: Callable[[], Any], b: Callable[[], Any], device: Any, *, warmup: int = 1, repeats: int = 3
) -> tuple[Timing, Timing]:
    """Time two recipes in alternation (a, b, a, b, ...), so drift and clocks favour neither."""
    for _ in range(warmup):
        a()
        b()
    synchronize(device)
    runs: tuple[list[float], list[float]] = ([], [])
    peaks: list[int | None] = [None, None]
    if _is_cuda(device):
        for i, fn in enumerate((a, b)):
            peak = _Peak(device)
            fn()  # one run of each alone for its memory peak, outside the timed runs
            peaks[i] = peak.bytes()
    for _ in range(repeats):
        runs[0].append(_once(a, device))
        runs[1].append(_once(b, device))
    return Timing(tuple(runs[0]), peaks[0]), Timing(tuple(runs[1]), peaks[1])


def process_peak_rss() -> int:
    """The process's resident-memory high-water mark in bytes (the CPU's only peak figure)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def device_label(device: Any = None) -> str:
    """The GPU's name, or the CPU's architecture and torch's thread count (`device` None: cuda if present)."""
    import torch

    cuda = torch.cuda.is_available() if device is None else getattr(device, "type", device) == "cuda"
    if cuda:
        return torch.cuda.get_device_name(device if device is not None else 0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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
    return 2.0 * n**3 * loops / timing.median  # the median, like every other figure it is compared with


def unet_flops(unet: Any, batch: int, latent_hw: tuple[int, int], seq_len: int = 77) -> int:
    """FLOPs of one UNet call (torch's FlopCounterMode: matmuls, convolutions, attention).

    Counted on a copy of the UNet on the meta device: no memory, no compute, the same count on every
    machine (on a real CPU the fused attention kernel has no FLOP formula and would count as 0).
    """
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    config = getattr(unet, "_orig_mod", unet).config
    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(config)
        h, w = latent_hw
        sample = torch.randn(batch, config.in_channels, h, w)
        context = torch.randn(batch, seq_len, config.cross_attention_dim)
        timestep = torch.full((batch,), 500)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(sample, timestep, encoder_hidden_states=context)
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
