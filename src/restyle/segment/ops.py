"""Mask operations on numpy arrays: probability maps, threshold, grow/shrink, holes, components, feather.

Binary masks are bool arrays (H, W); soft masks are uint8 (H, W) with 255 = repaint.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage, special

ACTIVATIONS = ("sigmoid", "ndtr")  # ndtr: the standard normal CDF, as the original CLIPSeg notebook uses


def activate(logits: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """Logits to probabilities in [0, 1] with the logistic sigmoid or the normal CDF."""
    if activation == "sigmoid":
        return special.expit(logits)
    if activation == "ndtr":
        return special.ndtr(logits)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map (h, w) to `size` = (W, H)."""
    if values.shape[::-1] == tuple(size):
        return values.astype(np.float32)
    img = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate (pixels > 0) or erode (pixels < 0) by a Euclidean radius."""
    if pixels == 0 or not mask.any():
        return mask.copy()
    if pixels > 0:
        return ndimage.distance_transform_edt(~mask) <= pixels
    return ndimage.distance_transform_edt(mask) > -pixels


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Close holes fully enclosed by the mask (a print or button inside a garment)."""
    return ndimage.binary_fill_holes(mask)


def remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop connected components smaller than `min_pixels` (8-connectivity)."""
    if min_pixels <= 1 or not mask.any():
        return mask.copy()
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Soft edge outward: 255 inside, a linear ramp over `pixels` outside, 0 beyond.

    The ramp goes outward so the garment stays fully repainted and the blend happens on the
    surrounding pixels; every pixel farther than `pixels` from the mask stays exactly 0.
    """
    soft = np.where(mask, 255, 0).astype(np.uint8)
    if pixels <= 0 or not mask.any():
        return soft
    dist = ndimage.distance_transform_edt(~mask)
    ramp = np.where(dist <= pixels, np.clip(1.0 - dist / (pixels + 1), 0.0, 1.0), 0.0)
    return np.rint(ramp * 255).astype(np.uint8)


def overlay(
    image: Image.Image, mask: Image.Image, color: tuple[int, int, int] = (255, 40, 90), opacity: float = 0.55
) -> Image.Image:
    """A preview: the mask tinted over the photo (RGB)."""
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0 * opacity
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array(color, dtype=np.float32)
    return Image.fromarray(np.rint(base * (1 - alpha) + tint * alpha).astype(np.uint8), mode="RGB")
