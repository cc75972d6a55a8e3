"""Speed-ups for a loaded inpainting pipeline, each one a switch the benchmark measures.

They change how the same weights are laid out and called, never what is computed (outputs match the
plain pipeline within floating-point rounding; the benchmark checks it). diffusers already runs
PyTorch's scaled-dot-product attention (flash / memory-efficient kernels) by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from restyle.errors import InvalidParameterError

RECOMPILE_LIMIT = 64  # compiled UNet graphs kept: 7 buckets x several batch sizes fit
FAST_OPTIONS = ("channels_last", "fuse_qkv", "compile", "buckets")


@dataclass(frozen=True)
class FastOptions:
    """Which speed-ups to apply (all off: the plain diffusers pipeline)."""

    channels_last: bool = False  # NHWC convolutions: faster cuDNN kernels on tensor-core GPUs
    fuse_qkv: bool = False  # one projection matmul for q, k, v (k, v in cross-attention) instead of three
    compile: bool = False  # torch.compile the UNet (first call per shape compiles: warm up before serving)
    buckets: bool = False  # pad crops to multiples of 64 px: fewer shapes to compile, more requests batch

    @classmethod
    def parse(cls, text: str | None) -> FastOptions:
        """'channels_last,fuse_qkv' -> FastOptions; '' or None -> none; 'all' -> every option."""
        if not text:
            return cls()
        names = FAST_OPTIONS if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in FAST_OPTIONS]
        if unknown:
            raise InvalidParameterError(
                f"fast: unknown option(s) {', '.join(unknown)}; choose from {', '.join(FAST_OPTIONS)}, all",
                field="fast",
            )
        return cls(**{n: True for n in names})

    def label(self) -> str:
        on = [n for n in FAST_OPTIONS if getattr(self, n)]
        return "+".join(on) if on else "plain"


def apply_fast(pipe: Any, options: FastOptions) -> Any:
    """Apply `options` to `pipe` in place (UNet and VAE); returns the pipe."""
    import torch

    if options.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options.fuse_qkv:
        pipe.unet.fuse_qkv_projections()
        pipe.vae.fuse_qkv_projections()
    if options.compile:
        # one static graph per (shape bucket, batch size): more than dynamo's default 8 before it falls
        # back to running uncompiled
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        pipe.unet = torch.compile(pipe.unet, fullgraph=False, dynamic=False)
    return pipe


def unfuse(pipe: Any) -> None:
    """Back to separate q/k/v projections (LoRA adapters patch those, not the fused matrix)."""
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    if getattr(unet, "original_attn_processors", None) is not None:
        unet.unfuse_qkv_projections()
        unet.original_attn_processors = None
