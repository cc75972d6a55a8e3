"""Two segmenters as one: one finds the garment, the other draws the protected regions.

A clothes parser's face / hair / arm labels are a more precise protection than an open-vocabulary model's
reading of "face" or "hands", while SAM 3 or CLIPSeg find garments the parser has no label for. Each keeps
its own templates; refinement is the shared one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from restyle.segment.base import BaseSegmenter, MaskParams


class CombinedSegmenter(BaseSegmenter):
    """`finder` masks the garment prompts, `protector` the protect prompts."""

    def __init__(self, finder: BaseSegmenter, protector: BaseSegmenter) -> None:
        self.finder, self.protector = finder, protector
        self.name = f"{finder.name}+{protector.name}"
        self.model_id = finder.model_id
        self.preview = finder.preview or protector.preview
        self.license = finder.license

    def resolve_params(self, params: MaskParams | None) -> MaskParams:
        return self.finder.resolve_params(params)

    def role_probabilities(
        self, image: Image.Image, garments: tuple[str, ...], guards: tuple[str, ...], params: MaskParams
    ) -> tuple[np.ndarray, np.ndarray]:
        garment_probs, _ = self.finder.role_probabilities(image, garments, (), params)
        if not guards:
            return garment_probs, np.zeros((0, *garment_probs.shape[1:]), dtype=np.float32)
        own = self.protector.resolve_params(replace(params, templates=MaskParams().templates))
        _, protect_probs = self.protector.role_probabilities(image, (), guards, own)
        return garment_probs, protect_probs
