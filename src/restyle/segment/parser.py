"""A human/clothes parser as a segmenter: SegFormer fine-tuned on ATR (`mattmdjaga/segformer_b2_clothes`).

A parser labels every pixel with one of a fixed set of classes (18 for ATR: Upper-clothes, Skirt, Pants,
Dress, Face, Hair, the arms, ...); it reads no text. A prompt names labels through the fashion vocabulary
of `restyle.segment.labels` ("the red dress" -> Dress; an unknown garment is an InvalidParameterError
listing the labels and the words known). The probability of a prompt at a pixel is the softmax probability
summed over its labels, the logits upsampled bilinearly to the photo first (at most WORK_SIDE pixels on the
long side; the summed map is then resized to the photo). Protect prompts map the same way, so the default
protection (face, hands, hair) uses the parser's precise Face, Hair and arm labels. Templates and the
activation do not apply: the label set is closed and the model gives probabilities.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from PIL import Image

from restyle.models.hub import load_pretrained
from restyle.models.tiny import is_tiny
from restyle.runtime import resolve_device, resolve_dtype
from restyle.segment.base import BaseSegmenter, MaskParams
from restyle.segment.labels import resolve_labels
from restyle.segment.ops import resize_map
from restyle.segment.preview import PreviewProbabilities

WORK_SIDE = 1024  # long side of the label probabilities; a 40 MP photo x 18 labels would not fit in memory
PARSER_LICENSE: dict[str, Any] = {
    "license": "MIT",  # the model card's `license: mit` (changed from wtfpl on 2023-04-20, commit ad526ff)
    "hub_id": "mattmdjaga/segformer_b2_clothes",
    "gated": False,
    "terms": "https://huggingface.co/mattmdjaga/segformer_b2_clothes (model card); training code: "
    "github.com/mattmdjaga/segformer_b2_clothes LICENSE (MIT, 2023 mattmdjaga)",
    "data": "fine-tuned on the ATR human parsing dataset (mattmdjaga/human_parsing_dataset)",
}


def _processor_class() -> Any:
    """SegformerImageProcessor, or its PIL twin where torchvision (its default backend) is missing."""
    import transformers

    pil = getattr(transformers, "SegformerImageProcessorPil", None)  # transformers 5
    if pil is not None and importlib.util.find_spec("torchvision") is None:
        return pil
    return transformers.SegformerImageProcessor


def work_size(size: tuple[int, int], side: int = WORK_SIDE) -> tuple[int, int]:
    """`size` (W, H) scaled down so its long side is at most `side`."""
    w, h = size
    scale = min(1.0, side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


class ClothesParser(BaseSegmenter):
    """SegformerForSemanticSegmentation + its image processor, prompts mapped to its labels."""

    name = "parser"
    license = PARSER_LICENSE["license"]
    default_templates = ("{}",)  # the prompt's own words are what maps to labels

    def __init__(self, model: Any, processor: Any, model_id: str = "") -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        id2label = model.config.id2label
        self.labels: tuple[str, ...] = tuple(str(id2label[i]) for i in range(len(id2label)))

    @classmethod
    def from_pretrained(cls, model_id: str, *, device: str = "auto", dtype: str = "auto") -> ClothesParser:
        """Load from a hub id (local cache) or a folder in transformers layout.

        Args:
            model_id: `mattmdjaga/segformer_b2_clothes` or a folder.
            device: "auto", "cpu", "cuda", ...
            dtype: "auto" (fp32: the model is small) or a DTYPES name.
        """
        from transformers import SegformerForSemanticSegmentation

        dev = resolve_device(device)
        torch_dtype = resolve_dtype("fp32" if dtype == "auto" else dtype, dev)
        model = load_pretrained(SegformerForSemanticSegmentation, model_id, "segmenter", dtype=torch_dtype)
        processor = load_pretrained(_processor_class(), model_id, "segmenter")
        if cls is ClothesParser and is_tiny(model_id):
            cls = PreviewClothesParser  # a restyle-built random model: placeholder masks (preview)
        return cls(model.to(dev), processor, model_id)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def group_probabilities(self, image: Image.Image, groups: list[tuple[str, ...]]) -> np.ndarray:
        """(len(groups), H, W) float32: per pixel, the softmax probability summed over each group's labels."""
        import torch

        w, h = image.size
        if not groups:
            return np.zeros((0, h, w), dtype=np.float32)
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        work_w, work_h = work_size(image.size)
        index = {label: i for i, label in enumerate(self.labels)}
        with torch.inference_mode():
            logits = self.model(pixel_values=pixels).logits.float()  # (1, L, S/4, S/4)
            logits = torch.nn.functional.interpolate(
                logits, size=(work_h, work_w), mode="bilinear", align_corners=False
            )
            probs = logits.softmax(dim=1)[0]  # (L, h, w)
            sums = [probs[[index[label] for label in group]].sum(0).cpu().numpy() for group in groups]
        return np.stack([resize_map(s, image.size) for s in sums]).astype(np.float32)

    def role_probabilities(
        self, image: Image.Image, garments: tuple[str, ...], guards: tuple[str, ...], params: MaskParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """Garment and protect probabilities from the labels their words name (templates do not apply)."""
        groups = [resolve_labels(p, self.labels, "garment") for p in garments]
        groups += [resolve_labels(p, self.labels, "protect") for p in guards]  # errors before the model runs
        probs = self.group_probabilities(image, groups)
        return probs[: len(garments)], probs[len(garments) :]


class PreviewClothesParser(PreviewProbabilities, ClothesParser):
    """ClothesParser on a tiny restyle-built model (preview mode): placeholder masks, labelled so."""

    name = "parser-preview"
