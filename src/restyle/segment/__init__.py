"""Text to mask: segmenter backends behind one interface, and mask operations."""

from __future__ import annotations

from typing import Any

from restyle.segment.base import BaseSegmenter, MaskParams, MaskResult, refine

SEGMENTERS: dict[str, str] = {"clipseg": "restyle.segment.clipseg:ClipSegSegmenter"}


def load_segmenter(model_id: str, *, backend: str = "clipseg", **kwargs: Any) -> BaseSegmenter:
    """Load a segmenter backend by name (a plain registry: CLIPSeg is the only one so far)."""
    import importlib

    from restyle.errors import InvalidParameterError

    if backend not in SEGMENTERS:
        raise InvalidParameterError(
            f"segmenter backend: unknown {backend!r}; known: {', '.join(SEGMENTERS)}", field="backend"
        )
    module, cls = SEGMENTERS[backend].split(":")
    return getattr(importlib.import_module(module), cls).from_pretrained(model_id, **kwargs)


__all__ = ["SEGMENTERS", "BaseSegmenter", "MaskParams", "MaskResult", "load_segmenter", "refine"]
