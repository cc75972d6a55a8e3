"""The preview segmenter: the tiny random CLIPSeg plus a placeholder body layout.

A tiny randomly initialised CLIPSeg scores every text alike, so the protected regions (face, hands, hair)
cover whatever it finds and nothing is left at the default settings: "find the garment" could never be
tried in preview mode. Here its logits (standardised, so they still shape the mask and every model path
still runs) are added to a fixed layout of a standing person: garment prompts score high over the torso
and hips, protect prompts over the head.
The masks this gives are placeholders, labelled `preview` in every MaskResult; they say nothing about
the photo. Real weights never go through this class. The tiny SAM 3 and clothes-parser previews
(`PreviewSam3Segmenter`, `PreviewClothesParser`) lay the same layout over their probabilities with
`preview_probabilities`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import special

from restyle.segment.base import MaskParams
from restyle.segment.clipseg import ClipSegSegmenter

# (centre x, centre y, radius x, radius y, peak logit) as fractions of the photo, for each role
GARMENT_LAYOUT = (0.5, 0.48, 0.24, 0.24, 3.0)  # torso and hips: ~20% of a portrait photo at 0.4
PROTECT_LAYOUT = (0.5, 0.13, 0.09, 0.08, 3.0)  # the head
MODEL_WEIGHT = 0.5  # how much the tiny model's own (standardised) logits move the placeholder's edge


def layout_logits(size: tuple[int, int], layout: tuple[float, float, float, float, float]) -> np.ndarray:
    """An elliptic logit field (H, W): `peak` at the centre, 0 on the ellipse, falling outside it."""
    cx, cy, rx, ry, peak = layout
    w, h = size
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    d2 = ((xs[None, :] - cx) / rx) ** 2 + ((ys[:, None] - cy) / ry) ** 2
    return np.clip(peak * (1.0 - d2), -8.0, peak)


def _standardised(logits: np.ndarray) -> np.ndarray:
    if not len(logits):  # no prompts of this role (a combined segmenter asks each for one role only)
        return logits
    flat = logits.reshape(len(logits), -1)
    mean, std = flat.mean(1, keepdims=True), flat.std(1, keepdims=True) + 1e-6
    return ((flat - mean) / std).reshape(logits.shape)


class PreviewClipSegSegmenter(ClipSegSegmenter):
    """ClipSegSegmenter on a tiny restyle-built model (preview mode): placeholder masks, labelled so."""

    name = "clipseg-preview"
    preview = True

    def role_logits(
        self, image: Image.Image, garments: list[str], guards: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        garment_logits, guard_logits = super().role_logits(image, garments, guards)
        g = garment_logits
        if len(garments):
            g = layout_logits(image.size, GARMENT_LAYOUT) + MODEL_WEIGHT * _standardised(garment_logits)
        p = guard_logits
        if len(guards):
            p = layout_logits(image.size, PROTECT_LAYOUT) + MODEL_WEIGHT * _standardised(guard_logits)
        return g.astype(np.float32), np.asarray(p, dtype=np.float32)


def _probability_logits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float32), 1e-4, 1.0 - 1e-4)
    return np.log(p / (1.0 - p))


def preview_probabilities(
    size: tuple[int, int], garment_probs: np.ndarray, guard_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The placeholder layout for a tiny model that gives probabilities (SAM 3, a clothes parser).

    As for CLIPSeg: the model's own output (as logits, standardised) moves the edge of the layout, garment
    prompts score high over the torso and hips, protect prompts over the head; a model that finds nothing
    (a random SAM 3 detects no instance) leaves the plain layout.

    Args:
        size: the photo's (W, H).
        garment_probs: the tiny model's garment probabilities (P, H, W).
        guard_probs: its protect probabilities (Q, H, W); Q may be 0.

    Returns:
        Garment and protect probabilities of the same shapes.
    """
    g = np.asarray(garment_probs, dtype=np.float32)
    if len(garment_probs):
        shift = MODEL_WEIGHT * _standardised(_probability_logits(garment_probs))
        g = special.expit(layout_logits(size, GARMENT_LAYOUT) + shift)
    p = np.asarray(guard_probs, dtype=np.float32)
    if len(guard_probs):
        shift = MODEL_WEIGHT * _standardised(_probability_logits(guard_probs))
        p = special.expit(layout_logits(size, PROTECT_LAYOUT) + shift)
    return g.astype(np.float32), p.astype(np.float32)


class PreviewProbabilities:
    """Mixin for the tiny-model previews of backends that give probabilities (SAM 3, a clothes parser):
    the backend's own probabilities, then the placeholder layout (`preview_probabilities`)."""

    preview = True

    def role_probabilities(
        self, image: Image.Image, garments: tuple[str, ...], guards: tuple[str, ...], params: MaskParams
    ) -> tuple[np.ndarray, np.ndarray]:
        garment, guard = super().role_probabilities(image, garments, guards, params)  # type: ignore[misc]
        return preview_probabilities(image.size, garment, guard)
