"""CLIPSeg (Lüddecke & Ecker) through transformers: text-prompted segmentation logits."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from restyle.models.hub import load_pretrained
from restyle.models.tiny import is_tiny
from restyle.runtime import resolve_device, resolve_dtype
from restyle.segment.base import BaseSegmenter
from restyle.segment.ops import resize_map


def pad_to_square(
    image: Image.Image, fill: tuple[int, int, int]
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Letterbox to a square (CLIPSeg's decoder is square-only) so the photo is not squashed.

    Returns the square image and the box (left, top, right, bottom) the photo occupies in it.
    """
    w, h = image.size
    side = max(w, h)
    left, top = (side - w) // 2, (side - h) // 2
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, (left, top))
    return square, (left, top, left + w, top + h)


class ClipSegSegmenter(BaseSegmenter):
    """CLIPSegForImageSegmentation + CLIPSegProcessor (`CIDAS/clipseg-rd64-refined` or a local folder)."""

    name = "clipseg"
    license = "Apache-2.0"  # CIDAS/clipseg-rd64-refined's model card (the original code is MIT)

    def __init__(self, model: Any, processor: Any, model_id: str = "") -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        mean = getattr(processor.image_processor, "image_mean", None) or (0.485, 0.456, 0.406)
        self._fill = tuple(round(m * 255) for m in mean)  # pads read as zero after normalisation

    @classmethod
    def from_pretrained(cls, model_id: str, *, device: str = "auto", dtype: str = "auto") -> ClipSegSegmenter:
        """Load from a hub id (local cache) or a folder in transformers layout."""
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        dev = resolve_device(device)
        # CLIPSeg is small: fp32 unless asked otherwise keeps masks stable across devices.
        torch_dtype = resolve_dtype("fp32" if dtype == "auto" else dtype, dev)
        model = load_pretrained(CLIPSegForImageSegmentation, model_id, "segmenter", dtype=torch_dtype)
        processor = load_pretrained(CLIPSegProcessor, model_id, "segmenter")
        if cls is ClipSegSegmenter and is_tiny(model_id):
            from restyle.segment.preview import PreviewClipSegSegmenter

            cls = PreviewClipSegSegmenter  # a restyle-built random model: placeholder masks (preview)
        return cls(model.to(dev), processor, model_id)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def logits(self, image: Image.Image, texts: list[str]) -> np.ndarray:
        """(len(texts), H, W) logits at the photo's size; one batched forward pass."""
        import torch

        square, (left, top, right, bottom) = pad_to_square(image, self._fill)  # type: ignore[arg-type]
        inputs = self.processor(
            text=texts, images=[square] * len(texts), padding=True, truncation=True, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model(**inputs).logits.float()  # (N, S, S), or (S, S) when N == 1
        side = out.shape[-1]
        out = out.reshape(len(texts), side, side).cpu().numpy()
        scale = side / square.size[0]
        box = [round(left * scale), round(top * scale), round(right * scale), round(bottom * scale)]
        crops = [o[box[1] : max(box[3], box[1] + 1), box[0] : max(box[2], box[0] + 1)] for o in out]
        return np.stack([resize_map(c, image.size) for c in crops])
