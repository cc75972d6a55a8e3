"""Validation images: one photo, one mask, fixed seeds, every N steps and at the end.

Because the photo, mask, prompt and seeds never change, images from different steps differ only by
what training changed. Files carry their full recipe in the PNG metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from restyle.images import load_image, load_mask
from restyle.inpaint.params import StyleParams
from restyle.inpaint.pipeline import Inpainter
from restyle.outputs import grid, save_png
from restyle.train.config import TrainConfig
from restyle.train.data import Example
from restyle.train.masks import centre_box

log = logging.getLogger(__name__)

MASK_FILE = "mask.png"


class Validator:
    """Makes and saves the validation images of one run."""

    def __init__(
        self, config: TrainConfig, first: Example, segment_masks: dict[Path, Path], folder: Path
    ) -> None:
        c = config
        self.config, self.folder = c, folder
        self.image_path = Path(c.validation_image) if c.validation_image else first.path
        self.image = load_image(self.image_path, field="validation_image")
        self.mask = self._mask(first, segment_masks)
        self.params = StyleParams(
            prompt=c.validation_prompt or first.caption,
            steps=c.validation_inference_steps,
            num_images=len(c.validation_seeds),
            seeds=tuple(c.validation_seeds),
            size=c.resolution,
        )
        self.params.check()

    def _mask(self, first: Example, segment_masks: dict[Path, Path]) -> Image.Image:
        c = self.config
        if c.validation_mask is not None:
            return load_mask(c.validation_mask, size=self.image.size, field="validation_mask")
        if self.image_path == first.path:
            given = first.mask_path or segment_masks.get(first.path)
            if given is not None:
                return load_mask(given, size=self.image.size, field="validation_mask")
        w, h = self.image.size
        box = Image.fromarray(centre_box(256).astype(np.uint8) * 255, mode="L")
        return box.resize((w, h), Image.Resampling.NEAREST)

    def run(self, parts: Any, tag: str, autocast: Any = None) -> list[Path]:
        """Generate with the model as it is now; returns the image files written."""
        import contextlib

        import torch

        unet, text_encoder = parts.pipe.unet, parts.pipe.text_encoder
        was = unet.training, text_encoder.training
        unet.eval()
        text_encoder.eval()
        try:
            with torch.no_grad(), (autocast or contextlib.nullcontext)():
                result = Inpainter(parts.pipe, self.config.base).run(self.image, self.mask, self.params)
        finally:
            unet.train(was[0])
            text_encoder.train(was[1])
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / MASK_FILE).is_file():
            save_png(self.mask, self.folder / MASK_FILE)
        files = []
        for i, img in enumerate(result.images):
            meta = {**result.metadata(i), "validation": tag, "image": str(self.image_path), "mask": MASK_FILE}
            files.append(save_png(img, self.folder / f"{tag}-seed{result.seeds[i]}.png", meta))
        save_png(grid([self.image, *result.images]), self.folder / f"{tag}-grid.png")
        log.info("validation images: %s", self.folder / f"{tag}-grid.png")
        return files
