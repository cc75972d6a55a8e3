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

from restyle.errors import InvalidImageError
from restyle.images import load_image, load_mask
from restyle.inpaint.params import StyleParams
from restyle.inpaint.pipeline import Inpainter
from restyle.outputs import grid, save_png
from restyle.train.config import TrainConfig
from restyle.train.data import Example, read_mask
from restyle.train.masks import centre_box

log = logging.getLogger(__name__)

MASK_FILE = "mask.png"


class Validator:
    """Makes and saves the validation images of one run."""

    def __init__(self, config: TrainConfig, first: Example, folder: Path) -> None:
        """Read and check the photo and mask now, before any model loads."""
        c = config
        self.config, self.folder = c, folder
        self.image_path = Path(c.validation_image) if c.validation_image else first.path
        self.image = load_image(self.image_path, field="validation_image")
        self._first = first
        self.mask: Image.Image | None = None  # None: decided once segmenter masks exist (use_segment_masks)
        if c.validation_mask is not None:
            self.mask = load_mask(c.validation_mask, size=self.image.size, field="validation_mask")
        elif self.image_path == first.path and first.mask_path is not None:
            given = read_mask(first.mask_path, self.image.size)
            self.mask = given if given.getbbox() is not None else None  # empty: fall back like training
        self.params = StyleParams(
            prompt=c.validation_prompt or first.caption,
            steps=c.validation_inference_steps,
            num_images=len(c.validation_seeds),
            seeds=tuple(c.validation_seeds),
            size=c.resolution,
        )
        self.params.check()
        if self.mask is not None and self.mask.getbbox() is None:
            raise InvalidImageError(
                f"validation_mask: the mask for {self.image_path.name} is empty (all black)",
                field="validation_mask",
            )

    def use_segment_masks(self, segment_masks: dict[Path, Path]) -> None:
        """Settle the mask: the given one, else the segmenter's for the photo, else its centre."""
        if self.mask is not None:
            return
        found = segment_masks.get(self.image_path)
        if found is not None:
            self.mask = read_mask(found, self.image.size)
            return
        w, h = self.image.size
        box = Image.fromarray(centre_box(256).astype(np.uint8) * 255, mode="L")
        self.mask = box.resize((w, h), Image.Resampling.NEAREST)

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
                assert self.mask is not None, "use_segment_masks() settles the mask before the first run"
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
