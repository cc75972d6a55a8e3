"""The shared inpainting core: checks, crop at the model's native size, per-image seeds, exact composite.

Whatever family runs in between (`restyle.inpaint.families`: SD, SDXL, FLUX.1 Fill, Qwen-Image-Edit), a
request is checked against that family's ranges, cut to a crop at its native size with the aspect ratio
kept, denoised with one CPU generator per image, and pasted back so that every pixel outside the mask is
the input's own.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from restyle.errors import InvalidParameterError, RestyleError, UnusableMaskError
from restyle.inpaint.crop import Box, composite, crop_box, pad_to_bucket, prepare_crop
from restyle.inpaint.families import Adapter, Family, adapter_for
from restyle.inpaint.params import MAX_SEED, StyleParams
from restyle.inpaint.styles import StyleSet

Progress = Callable[[int, int], None]  # (step done, total steps)


class CancelledError(RestyleError):
    """The caller asked to stop a running generation."""

    status_code = 409


@dataclass
class StyleResult:
    """The variants of one request, full size, with everything needed to reproduce them."""

    images: list[Image.Image]
    seeds: list[int]
    mask: Image.Image  # the compositing mask (L)
    box: Box  # the region that was inpainted
    work_size: tuple[int, int]  # the size the model ran at
    params: StyleParams  # as run: the family's defaults filled in
    model_id: str
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # caller's metadata (mask prompts, ...)
    batch: int = 1  # requests denoised together with this one (1: alone)
    family: str = "sd"
    scores: list[dict[str, Any]] = field(default_factory=list)  # per image: colour ΔE, ... (eval/rank.py)

    def metadata(self, index: int) -> dict[str, Any]:
        """Everything that made image `index`, JSON-ready."""
        p = self.params
        return {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt,
            "seed": self.seeds[index],
            "steps": p.steps,
            "guidance": p.guidance,
            "scheduler": p.scheduler,
            "strength": p.strength,
            "inpainter": self.model_id,
            "family": self.family,
            "box": list(self.box),
            "work_size": list(self.work_size),
            "size": list(self.images[index].size),
            **self.extra,
            **(self.scores[index] if index < len(self.scores) else {}),
        }


@dataclass
class Prepared:
    """One checked request cut to its working crop: ready to denoise alone or in a batch of its `key`."""

    image: Image.Image  # the full photo (RGB)
    mask: Image.Image  # the compositing mask (L)
    params: StyleParams  # resolved: no field left to the family's default
    box: Box  # the region to inpaint, in photo pixels
    work_image: Image.Image  # the crop at working size, padded to the shape bucket
    work_mask: Image.Image  # binary, same size as work_image
    work_size: tuple[int, int]  # the crop's own working size (work_image minus its padding)
    seeds: list[int]
    style: str | None = None
    style_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    prepare_s: float = 0.0
    solo: bool = False  # the family cannot share a batch between requests

    @property
    def key(self) -> tuple[Any, ...]:
        """What requests must share to be denoised in one batch: shape, sampler settings and style."""
        p = self.params
        return (
            self.work_image.size,
            p.steps,
            p.guidance,
            p.scheduler,
            p.strength,
            self.style,
            self.style_scale,
            id(self) if self.solo else None,
        )

    @property
    def num_images(self) -> int:
        return self.params.num_images


def draw_seeds(params: StyleParams) -> list[int]:
    """Per-image seeds: explicit ones, else seed + i, else random."""
    if params.seeds is not None:
        return list(params.seeds)
    base = params.seed if params.seed is not None else secrets.randbelow(MAX_SEED - params.num_images)
    return [(base + i) % (MAX_SEED + 1) for i in range(params.num_images)]


def _marker(model_id: str) -> dict[str, Any]:
    """A restyle-built tiny model's marker (its own native size), {} for real weights."""
    from restyle.models.tiny import TINY_IMAGE_SIZE, TINY_MARKER

    try:
        marker = json.loads((Path(model_id).expanduser() / TINY_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return {"native_size": TINY_IMAGE_SIZE, **marker} if isinstance(marker, dict) else {}


class Inpainter:
    """A loaded diffusers inpainting pipeline of any family, behind one `prepare` / `run_batch`."""

    def __init__(self, pipe: Any, model_id: str = "", adapter: Adapter | None = None) -> None:
        self.adapter = adapter or adapter_for(pipe)
        self.adapter.check(model_id)
        self.pipe = pipe
        self.model_id = model_id
        self._native = self.adapter.native_size(_marker(model_id))
        self.style_set = StyleSet(self)
        self.bucket = 0  # pad working crops to multiples of this many pixels (0: exact crop size)
        pipe.set_progress_bar_config(disable=True)

    @property
    def family(self) -> Family:
        return self.adapter.family

    @property
    def styles(self) -> dict[str, str]:
        """LoRA adapter name -> where it was loaded from."""
        return self.style_set.loaded

    def load_style(self, name: str, path: str) -> None:
        """Load a LoRA (`pytorch_lora_weights.safetensors` or its folder) as adapter `name` (see StyleSet)."""
        self.style_set.load(name, path)

    @classmethod
    def from_pretrained(cls, model_id: str, **options: Any) -> Inpainter:
        """Load a diffusers inpainting folder or hub id (local cache) of any family onto a device.

        The family comes from the folder's model_index.json; see `restyle.inpaint.loading.load_pipeline`
        for the options (device, dtype, attention_slicing, vae_tiling, fast, offload, quantize).
        """
        from restyle.inpaint.loading import load_pipeline

        pipe, bucket = load_pipeline(model_id, **options)
        inpainter = cls(pipe, model_id)
        inpainter.bucket = bucket
        return inpainter

    @property
    def native_size(self) -> int:
        """The long side the model was trained at (SD 1.5 / SD 2 inpainting: 512, SDXL / FLUX: 1024)."""
        return self._native

    def describe(self) -> dict[str, Any]:
        """The family's facts and ranges with this model's native size (for /v1/models)."""
        return {**self.family.describe(), "native_size": self.native_size}

    def resolve(self, params: StyleParams) -> StyleParams:
        """`params` with this family's defaults filled in, checked against its ranges."""
        return self.family.limits.resolve(params)

    def run(
        self,
        image: Image.Image,
        mask: Image.Image,
        params: StyleParams,
        *,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
        style: str | None = None,
        style_scale: float = 1.0,
    ) -> StyleResult:
        """Repaint the masked region of `image`.

        Args:
            image: PIL RGB photo, any size.
            mask: PIL L, same size, 255 = repaint; soft values blend; 0 is never touched.
            params: the request (checked here against the family's ranges).
            progress: called after every denoising step with (done, total).
            cancel: polled every step; True stops the run with CancelledError.
            style: a loaded LoRA adapter's name (see `load_style`); None runs the base model.
            style_scale: the adapter's weight (1 = as trained).

        Returns:
            StyleResult with `params.num_images` images of the input's size.
        """
        prepared = self.prepare(image, mask, params, style=style, style_scale=style_scale)
        return self.run_batch([prepared], progress=progress, cancel=cancel)[0]

    def prepare(
        self,
        image: Image.Image,
        mask: Image.Image,
        params: StyleParams,
        *,
        style: str | None = None,
        style_scale: float = 1.0,
        extra: dict[str, Any] | None = None,
    ) -> Prepared:
        """Check a request and cut its working crop; no model runs yet (see `run_batch`)."""
        started = time.perf_counter()
        # 1. Check inputs
        params = self.resolve(params)
        if mask.size != image.size:
            raise UnusableMaskError(
                f"mask: mask is {mask.size[0]}x{mask.size[1]} but the image is "
                f"{image.size[0]}x{image.size[1]}",
                field="mask",
            )
        mask = mask.convert("L")
        if mask.getbbox() is None:
            raise UnusableMaskError(
                "mask: the mask is empty (all black); there is nothing to repaint", field="mask"
            )
        if not 0.0 <= style_scale <= 2.0:
            raise InvalidParameterError(
                f"style_scale: {style_scale} is out of range [0, 2]", field="style_scale"
            )
        self.style_set.check(style)
        # 2. Region to inpaint, at the model's working size (padded to a shape bucket when asked)
        long_side = params.size or self.native_size
        multiple = self.family.multiple
        if params.size is not None and params.size % multiple:
            raise InvalidParameterError(
                f"size: {params.size} must be a multiple of {multiple} for this model", field="size"
            )
        box = crop_box(mask, long_side, params.context) if params.crop else (0, 0, *image.size)
        work_image, work_mask, work_size = prepare_crop(image, mask, box, long_side, multiple)
        work_image, work_mask = pad_to_bucket(work_image, work_mask, self.bucket)
        return Prepared(
            image=image,
            mask=mask,
            params=params,
            box=box,
            work_image=work_image,
            work_mask=work_mask,
            work_size=work_size,
            seeds=draw_seeds(params),
            style=style,
            style_scale=style_scale if style else 1.0,
            extra=dict(extra or {}),
            prepare_s=time.perf_counter() - started,
            solo=not self.family.batch_requests,
        )

    def run_batch(
        self,
        items: list[Prepared],
        *,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[StyleResult]:
        """Denoise prepared requests of one `key` together: one batch for all their images.

        Each image keeps its own seed's CPU generator and its request's prompt, photo and mask, so a
        seed gives the same image alone or in a batch (up to floating-point rounding of the batch size).

        Returns:
            One StyleResult per item, in order.
        """
        import torch

        if not items:
            return []
        if len({p.key for p in items}) > 1:
            raise ValueError(
                "run_batch: items of different keys (size, steps, sampler or style) cannot share a batch"
            )
        started = time.perf_counter()
        first = items[0]
        self.style_set.select(first.style, first.style_scale)
        self.adapter.set_sampler(first.params.scheduler)
        # 3. One CPU generator per output image
        generators = [torch.Generator("cpu").manual_seed(s) for p in items for s in p.seeds]

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            if progress is not None:  # an adapter that calls the pipeline per image offsets step and total
                progress(step + 1, getattr(pipe, "_restyle_total", None) or pipe.num_timesteps)
            if cancel is not None and cancel():
                pipe._interrupt = True
            return kwargs

        # 4. Denoise (the family's adapter)
        images = self.adapter.denoise(items, generators, on_step)
        if getattr(self.pipe, "_interrupt", False):
            raise CancelledError("generation cancelled")
        # 5. Composite back: pixels outside the mask are the input's own bytes
        run_s = time.perf_counter() - started
        results, offset = [], 0
        for p in items:
            n = p.params.num_images
            generated = [img.crop((0, 0, *p.work_size)) for img in images[offset : offset + n]]
            offset += n
            results.append(self._result(p, generated, run_s, len(items)))
        return results

    def _result(self, p: Prepared, generated: list[Image.Image], run_s: float, batch: int) -> StyleResult:
        extra = dict(p.extra)
        if p.style:
            extra.update({"style": p.style, "style_scale": p.style_scale})
        return StyleResult(
            images=[composite(p.image, gen, p.mask, p.box) for gen in generated],
            seeds=p.seeds,
            mask=p.mask,
            box=p.box,
            work_size=p.work_size,
            params=p.params,
            model_id=self.model_id,
            elapsed_s=p.prepare_s + run_s,
            extra=extra,
            batch=batch,
            family=self.family.name,
        )


def unchanged_outside(original: Image.Image, result: Image.Image, mask: Image.Image) -> bool:
    """True when every pixel with mask == 0 is byte-identical in `result` (a check callers can run)."""
    keep = np.asarray(mask.convert("L")) == 0
    return bool(np.array_equal(np.asarray(original.convert("RGB"))[keep], np.asarray(result)[keep]))
