"""Device and dtype choice, shared by the segmenter and the inpainter."""

from __future__ import annotations

from typing import Any

from restyle.errors import InvalidParameterError

DTYPES = ("auto", "fp32", "fp16", "bf16")


def resolve_device(name: str = "auto") -> Any:
    """'auto' -> cuda when present, else mps, else cpu; other names are passed to torch.device."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InvalidParameterError(f"device: {err}", field="device") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            "device: cuda was asked for but no CUDA device is visible", field="device"
        )
    return device


def resolve_dtype(name: str, device: Any) -> Any:
    """'auto' -> fp16 on cuda, fp32 elsewhere (half precision on CPU is slow and lossy)."""
    import torch

    if name not in DTYPES:
        raise InvalidParameterError(f"dtype: must be one of {', '.join(DTYPES)}, got {name!r}", field="dtype")
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
