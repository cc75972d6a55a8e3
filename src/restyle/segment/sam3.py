"""SAM 3 (Meta, "Segment Anything with Concepts") through transformers: text prompts to instance masks.

SAM 3 takes a short noun phrase ("dress") and returns every instance of that concept: per instance a score
(sigmoid of its query logit times the sigmoid of the image-level presence logit, as transformers'
`Sam3Processor.post_process_instance_segmentation` computes it) and a mask (that post-processing
binarises each instance's mask probability at MASK_THRESHOLD).

How instances become the per-pixel garment probability `refine()` expects, for one prompt:
    probability(pixel) = max over the instances whose mask covers the pixel of the instance's score;
    0 where no instance covers the pixel, and everywhere when SAM 3 finds no instance.
It is computed at SAM 3's mask resolution (288 px for its 1008 px input, the photo squashed to a square) and
resized bilinearly to the photo, which softens the edges over a few pixels. So every MaskParams field keeps
its meaning: `threshold` keeps the instances scoring above it, several garment prompts are unioned per
pixel, protect prompts are instances too (`protect_threshold` on their scores), grow / feather act on the
result, and NoGarmentFoundError reports the best instance score. Instances scoring at most
min(INSTANCE_FLOOR, threshold, protect_threshold) are dropped before the masks are combined.

Templates: SAM 3 expects short noun phrases, so its default template is "{}" alone; with several templates
the probabilities are averaged over them. Activation does not apply (SAM 3 gives probabilities).

transformers' Sam3ImageProcessor needs torchvision, which restyle does not depend on. With torchvision the
processor does the pre- and post-processing; without it `PlainSam3Io` does the same arithmetic (resize to
the processor size, rescale, normalise; scores and binarised masks as above) from the folder's
processor_config.json and CLIP tokenizer.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from PIL import Image

from restyle.errors import InvalidParameterError, ModelLoadError
from restyle.models.hub import load_pretrained
from restyle.models.tiny import is_tiny
from restyle.runtime import resolve_device, resolve_dtype
from restyle.segment.base import BaseSegmenter, MaskParams
from restyle.segment.ops import resize_map
from restyle.segment.preview import PreviewProbabilities

MASK_THRESHOLD = 0.5  # SAM 3's own binarisation of an instance's mask probability (transformers' default)
INSTANCE_FLOOR = 0.05  # instances at or under this (or a lower threshold) are not combined: 200 queries
TEXT_CONTEXT = 32  # SAM 3's text encoder has 32 positions; Sam3Processor pads every prompt to 32 tokens
SAM3_LICENSE: dict[str, Any] = {
    "license": "SAM License",  # Meta's own licence, "Last Updated: November 19, 2025"; not an OSI licence
    "hub_id": "facebook/sam3",
    "gated": True,  # the hub asks for name, date of birth, country, affiliation and acceptance first
    "terms": "https://huggingface.co/facebook/sam3/blob/main/LICENSE "
    "(same text: https://github.com/facebookresearch/sam3/blob/main/LICENSE)",
    "grants": "non-exclusive, worldwide, royalty-free licence to use, reproduce, distribute and modify the "
    "SAM Materials; redistributions must carry the licence; trade controls and use restrictions apply",
    "checked": "models/published/SOURCES-segmenters.md lists the pages read",
}


def combine_instances(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per pixel, the best score of the instances covering it; 0 where none does.

    Args:
        scores: (K,) instance scores in [0, 1].
        masks: (K, h, w) binary instance masks.

    Returns:
        (h, w) float32 probability map.
    """
    if len(scores) == 0:
        return np.zeros(masks.shape[1:], dtype=np.float32)
    weighted = scores.astype(np.float32)[:, None, None] * masks.astype(np.float32)  # (K, h, w)
    return weighted.max(axis=0)


class ProcessorSam3Io:
    """Pre- and post-processing by transformers' Sam3Processor (needs torchvision)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer

    def pixels(self, image: Image.Image) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"]  # (1, 3, S, S)

    def tokens(self, texts: list[str]) -> dict[str, Any]:
        enc = self.processor(text=texts, return_tensors="pt")  # padded to TEXT_CONTEXT
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def instances(self, outputs: Any, floor: float) -> tuple[np.ndarray, np.ndarray]:
        res = self.processor.post_process_instance_segmentation(
            outputs, threshold=floor, mask_threshold=MASK_THRESHOLD
        )[0]
        return res["scores"].float().cpu().numpy(), res["masks"].cpu().numpy().astype(bool)


class PlainSam3Io:
    """The same pre- and post-processing without torchvision, from the processor's saved settings."""

    def __init__(self, tokenizer: Any, settings: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        size = settings.get("size") or {"height": 1008, "width": 1008}
        self.size = (int(size["width"]), int(size["height"]))
        self.resample = Image.Resampling(int(settings.get("resample", Image.Resampling.BILINEAR)))
        self.rescale = float(settings.get("rescale_factor", 1 / 255))
        self.mean = np.asarray(settings.get("image_mean", (0.5, 0.5, 0.5)), dtype=np.float32)
        self.std = np.asarray(settings.get("image_std", (0.5, 0.5, 0.5)), dtype=np.float32)

    def pixels(self, image: Image.Image) -> Any:
        import torch

        rgb = np.asarray(image.convert("RGB").resize(self.size, self.resample), dtype=np.float32)
        x = (rgb * self.rescale - self.mean) / self.std  # (S, S, 3)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]  # (1, 3, S, S)

    def tokens(self, texts: list[str]) -> dict[str, Any]:
        enc = self.tokenizer(texts, padding="max_length", max_length=TEXT_CONTEXT, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def instances(self, outputs: Any, floor: float) -> tuple[np.ndarray, np.ndarray]:
        scores = outputs.pred_logits[0].float().sigmoid()  # (Q,)
        if outputs.presence_logits is not None:
            scores = scores * outputs.presence_logits[0].float().sigmoid()
        keep = scores > floor
        masks = outputs.pred_masks[0][keep].float().sigmoid() > MASK_THRESHOLD  # (K, h, w)
        return scores[keep].cpu().numpy(), masks.cpu().numpy()


def load_io(model_id: str) -> ProcessorSam3Io | PlainSam3Io:
    """Sam3Processor where torchvision is installed, else the plain equivalent from the same files."""
    from transformers import CLIPTokenizer

    from restyle.segment import read_model_json

    if importlib.util.find_spec("torchvision") is not None:
        from transformers import Sam3Processor

        return ProcessorSam3Io(load_pretrained(Sam3Processor, model_id, "segmenter"))
    tokenizer = load_pretrained(CLIPTokenizer, model_id, "segmenter")
    config = read_model_json(model_id, "processor_config.json")
    if config is None:
        raise ModelLoadError(f"segmenter '{model_id}': a SAM 3 folder needs its processor_config.json")
    return PlainSam3Io(tokenizer, config.get("image_processor", config))


class Sam3Segmenter(BaseSegmenter):
    """Sam3Model + its processor (`facebook/sam3` or a local folder): instance masks to probabilities."""

    name = "sam3"
    license = SAM3_LICENSE["license"]
    default_templates = ("{}",)  # SAM 3 takes short noun phrases, not "a photo of ..." sentences

    def __init__(self, model: Any, io: ProcessorSam3Io | PlainSam3Io, model_id: str = "") -> None:
        self.model = model.eval()
        self.io = io
        self.model_id = model_id

    @classmethod
    def from_pretrained(cls, model_id: str, *, device: str = "auto", dtype: str = "auto") -> Sam3Segmenter:
        """Load from a hub id (local cache) or a folder in transformers layout.

        Args:
            model_id: `facebook/sam3` (gated: accept the SAM License on the hub, then pull) or a folder.
            device: "auto", "cpu", "cuda", ...
            dtype: "auto" (bf16 on CUDA: fp32's range at half the memory; fp32 elsewhere) or a DTYPES name.
        """
        from transformers import Sam3Model

        dev = resolve_device(device)
        torch_dtype = resolve_dtype("bf16" if dtype == "auto" and dev.type == "cuda" else dtype, dev)
        model = load_pretrained(Sam3Model, model_id, "segmenter", dtype=torch_dtype)
        io = load_io(model_id)
        if cls is Sam3Segmenter and is_tiny(model_id):
            cls = PreviewSam3Segmenter  # a restyle-built random model: placeholder masks (preview)
        return cls(model.to(dev), io, model_id)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def check_length(self, texts: list[str], field: str) -> None:
        """SAM 3 reads at most TEXT_CONTEXT tokens; a longer prompt is an error naming `field`."""
        if not texts:
            return
        for text, ids in zip(texts, self.io.tokenizer(texts)["input_ids"]):
            if len(ids) > TEXT_CONTEXT:
                raise InvalidParameterError(
                    f"{field}: {text!r} is {len(ids)} tokens; SAM 3 reads at most {TEXT_CONTEXT}. Give a "
                    "short noun phrase, e.g. 'red dress'.",
                    field=field,
                )

    def text_probabilities(
        self, image: Image.Image, texts: list[str], floor: float = INSTANCE_FLOOR
    ) -> np.ndarray:
        """(len(texts), H, W) float32: per pixel, the best score of the instances SAM 3 finds for each text.

        One vision pass for the photo, then one detector pass per text on the shared image features.
        """
        import torch

        w, h = image.size
        if not texts:
            return np.zeros((0, h, w), dtype=np.float32)
        pixels = self.io.pixels(image).to(self.device, self.model.dtype)
        tokens = {k: v.to(self.device) for k, v in self.io.tokens(texts).items()}
        maps = []
        with torch.inference_mode():
            vision = self.model.get_vision_features(pixel_values=pixels)
            for i in range(len(texts)):
                out = self.model(
                    vision_embeds=vision,
                    input_ids=tokens["input_ids"][i : i + 1],
                    attention_mask=tokens["attention_mask"][i : i + 1],
                )
                scores, masks = self.io.instances(out, floor)
                maps.append(resize_map(combine_instances(scores, masks), image.size))
        return np.stack(maps).astype(np.float32)

    def role_probabilities(
        self, image: Image.Image, garments: tuple[str, ...], guards: tuple[str, ...], params: MaskParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """Garment and protect probabilities from SAM 3's instances (see the module docstring)."""
        roles = [[t.format(p) for p in prompts for t in params.templates] for prompts in (garments, guards)]
        self.check_length(roles[0], "garment")
        self.check_length(roles[1], "protect")
        floor = min(INSTANCE_FLOOR, *params.thresholds(len(garments)), params.protect_threshold)
        probs = self.text_probabilities(image, [*roles[0], *roles[1]], floor)  # ((P + Q) * T, H, W)
        probs = probs.reshape(len(garments) + len(guards), len(params.templates), *probs.shape[1:]).mean(1)
        return probs[: len(garments)], probs[len(garments) :]


class PreviewSam3Segmenter(PreviewProbabilities, Sam3Segmenter):
    """Sam3Segmenter on a tiny restyle-built model (preview mode): placeholder masks, labelled so."""

    name = "sam3-preview"
