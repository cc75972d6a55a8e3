"""A combined segmenter: one backend finds the garment, another (a clothes parser) draws the protection;
neither sees the other's prompts, and the shared refinement keeps its meaning."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from restyle.segment.base import BaseSegmenter, MaskParams
from restyle.segment.combined import CombinedSegmenter


class Fixed(BaseSegmenter):
    """Probabilities from a fixed map per role; records what it was asked."""

    def __init__(self, name: str, garment: np.ndarray | None, guard: np.ndarray | None) -> None:
        self.name, self.garment, self.guard, self.asked = name, garment, guard, []

    def role_probabilities(self, image, garments, guards, params):
        self.asked.append((tuple(garments), tuple(guards)))
        if (garments and self.garment is None) or (guards and self.guard is None):
            raise AssertionError(f"{self.name} was asked for a role it does not play")
        h, w = image.size[1], image.size[0]
        g = np.stack([self.garment] * len(garments)) if garments else np.zeros((0, h, w), np.float32)
        p = np.stack([self.guard] * len(guards)) if guards else np.zeros((0, h, w), np.float32)
        return g.astype(np.float32), p.astype(np.float32)


def test_the_finder_masks_and_the_protector_protects():
    photo = Image.new("RGB", (40, 40), (120, 120, 120))
    everything = np.ones((40, 40), np.float32)
    top = np.zeros((40, 40), np.float32)
    top[:20] = 1.0
    finder, protector = Fixed("finder", everything, None), Fixed("parser", None, top)
    params = MaskParams(protect_margin=0, grow=0, feather=0, fill_holes=False)
    result = CombinedSegmenter(finder, protector).segment(photo, "the dress", protect=["face"], params=params)
    mask = np.asarray(result.mask) > 0
    assert not mask[:20].any() and mask[20:].all()  # protected top half, garment elsewhere
    assert finder.asked == [(("the dress",), ())] and protector.asked == [((), ("face",))]


@pytest.mark.parametrize("finder", ["clipseg", "sam3", "parser"])
def test_each_backend_finds_while_the_tiny_parser_protects(backend_segmenter, finder):
    combined = CombinedSegmenter(backend_segmenter(finder), backend_segmenter("parser"))
    photo = Image.new("RGB", (64, 96), (200, 180, 160))
    result = combined.segment(photo, "the dress")
    assert result.mask.size == photo.size and result.preview and combined.name.endswith("+parser-preview")
