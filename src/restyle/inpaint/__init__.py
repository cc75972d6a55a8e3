"""Inpainting: the diffusers pipeline wrapper, crop geometry and compositing."""

from restyle.inpaint.crop import composite, crop_box, fit_size
from restyle.inpaint.params import SCHEDULERS, StyleParams
from restyle.inpaint.pipeline import CancelledError, Inpainter, StyleResult, unchanged_outside

__all__ = [
    "SCHEDULERS",
    "CancelledError",
    "Inpainter",
    "StyleParams",
    "StyleResult",
    "composite",
    "crop_box",
    "fit_size",
    "unchanged_outside",
]
