"""Stable Diffusion inpainting (diffusers) with crop-and-composite and per-image seeds."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from restyle.errors import (
    InvalidImageError,
    InvalidParameterError,
    ModelLoadError,
    ModelNotFoundError,
    RestyleError,
)
from restyle.inpaint.crop import Box, composite, crop_box, prepare_crop
from restyle.inpaint.params import MAX_SEED, SCHEDULERS, StyleParams
from restyle.models.hub import load_pretrained
from restyle.runtime import resolve_device, resolve_dtype

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
    params: StyleParams
    model_id: str
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # caller's metadata (mask prompts, ...)

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
            "box": list(self.box),
            "work_size": list(self.work_size),
            "size": list(self.images[index].size),
            **self.extra,
        }


def draw_seeds(params: StyleParams) -> list[int]:
    """Per-image seeds: explicit ones, else seed + i, else random."""
    if params.seeds is not None:
        return list(params.seeds)
    base = params.seed if params.seed is not None else secrets.randbelow(MAX_SEED - params.num_images)
    return [(base + i) % (MAX_SEED + 1) for i in range(params.num_images)]


class Inpainter:
    """A loaded StableDiffusionInpaintPipeline (SD 1.5- or SD 2-inpainting layout)."""

    def __init__(self, pipe: Any, model_id: str = "") -> None:
        if pipe.unet.config.in_channels != 9:
            raise ModelLoadError(
                f"inpainter '{model_id}': its UNet takes {pipe.unet.config.in_channels} input channels; an "
                "inpainting model takes 9 (latents + mask + masked image). Use an *-inpainting model."
            )
        self.pipe = pipe
        self.model_id = model_id
        self._base_scheduler = pipe.scheduler
        self._schedulers: dict[str, Any] = {}
        self.styles: dict[str, str] = {}  # LoRA adapter name -> where it was loaded from
        pipe.set_progress_bar_config(disable=True)

    def load_style(self, name: str, path: str) -> None:
        """Load a LoRA (`pytorch_lora_weights.safetensors` or its folder) as adapter `name`.

        Adapters stay loaded side by side; `run(style=...)` switches between them (or none) per call
        without reloading the base model.
        """
        if not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidParameterError(
                f"style name {name!r}: use letters, digits, '-' and '_'", field="style"
            )
        if name in self.styles:
            raise InvalidParameterError(
                f"style {name!r} is already loaded from {self.styles[name]}", field="style"
            )
        source = Path(path).expanduser()
        if not source.exists():
            raise ModelNotFoundError(f"style {name!r}: no such LoRA file or folder: {source}")
        kwargs = {"weight_name": source.name} if source.is_file() else {}
        folder = source.parent if source.is_file() else source
        from restyle.inpaint.fast import unfuse

        if hasattr(self.pipe.unet, "_orig_mod"):  # diffusers' adapter switches skip a compiled UNet
            raise ModelLoadError(
                f"style {name!r}: LoRA styles cannot be used with fast=compile; leave compile out of --fast"
            )
        unfuse(self.pipe)  # adapters patch the separate q/k/v projections
        try:
            self.pipe.load_lora_weights(str(folder), adapter_name=name, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ModelLoadError(
                f"style {name!r}: {source} does not load as a LoRA for this model: {err}"
            ) from err
        self.styles[name] = str(source)

    def _select_style(self, style: str | None, scale: float) -> None:
        if not self.styles:
            if style is not None:
                raise InvalidParameterError(f"style: unknown {style!r}; no styles are loaded", field="style")
            return
        if style is None:
            self.pipe.disable_lora()
            return
        if style not in self.styles:
            raise InvalidParameterError(
                f"style: unknown {style!r}; loaded styles: {', '.join(sorted(self.styles))}", field="style"
            )
        self.pipe.enable_lora()
        self.pipe.set_adapters([style], adapter_weights=[scale])

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        attention_slicing: bool = False,
        vae_tiling: bool = False,
        fast: str | None = None,
    ) -> Inpainter:
        """Load a diffusers inpainting folder or hub id (local cache) onto `device`.

        On CUDA it runs in fp16 with PyTorch's scaled-dot-product (flash / memory-efficient) attention,
        which diffusers uses by default; the two switches trade speed for memory on small GPUs. `fast`
        names speed-ups from `restyle.inpaint.fast` ("channels_last,fuse_qkv", "all"; none by default).
        """
        from restyle.inpaint.fast import FastOptions, apply_fast

        options = FastOptions.parse(fast)  # refuse a typo before the slow load
        if options.fuse_qkv and attention_slicing:
            raise InvalidParameterError(
                "fast: fuse_qkv replaces the sliced attention processors; use one of fuse_qkv and "
                "attention_slicing",
                field="fast",
            )
        from diffusers import StableDiffusionInpaintPipeline

        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        pipe = load_pretrained(
            StableDiffusionInpaintPipeline,
            model_id,
            "inpainter",
            dtype=torch_dtype,
            safety_checker=None,
            requires_safety_checker=False,
        )
        pipe = pipe.to(dev)
        if attention_slicing:
            pipe.enable_attention_slicing()
        if vae_tiling:
            pipe.vae.enable_tiling()
        apply_fast(pipe, options)
        return cls(pipe, model_id)

    @property
    def native_size(self) -> int:
        """The resolution the model was trained at: UNet sample size x VAE scale factor (512 or 768)."""
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    def _scheduler(self, name: str) -> Any:
        if name not in self._schedulers:
            import diffusers

            cls_name, overrides = SCHEDULERS[name]
            self._schedulers[name] = getattr(diffusers, cls_name).from_config(
                self._base_scheduler.config, **overrides
            )
        return self._schedulers[name]

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
            params: the request (checked here).
            progress: called after every denoising step with (done, total).
            cancel: polled every step; True stops the run with CancelledError.
            style: a loaded LoRA adapter's name (see `load_style`); None runs the base model.
            style_scale: the adapter's weight (1 = as trained).

        Returns:
            StyleResult with `params.num_images` images of the input's size.
        """
        import torch

        # 1. Check inputs
        params.check()
        if mask.size != image.size:
            raise InvalidImageError(
                f"mask: mask is {mask.size[0]}x{mask.size[1]} but the image is "
                f"{image.size[0]}x{image.size[1]}",
                field="mask",
            )
        mask = mask.convert("L")
        if mask.getbbox() is None:
            raise InvalidImageError(
                "mask: the mask is empty (all black); there is nothing to repaint", field="mask"
            )
        started = time.perf_counter()
        # 2. Region to inpaint, at the model's working size
        long_side = params.size or self.native_size
        box = crop_box(mask, long_side, params.context) if params.crop else (0, 0, *image.size)
        work_image, work_mask, work_size = prepare_crop(image, mask, box, long_side)
        # 3. Seeds: one CPU generator per image, so a seed gives the same image on any device
        seeds = draw_seeds(params)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        # 4. Denoise
        if not 0.0 <= style_scale <= 2.0:
            raise InvalidParameterError(
                f"style_scale: {style_scale} is out of range [0, 2]", field="style_scale"
            )
        self._select_style(style, style_scale)
        self.pipe.scheduler = self._scheduler(params.scheduler)

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            if progress is not None:
                progress(step + 1, pipe.num_timesteps)
            if cancel is not None and cancel():
                pipe._interrupt = True
            return kwargs

        out = self.pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or None,
            image=work_image,
            mask_image=work_mask,
            width=work_size[0],
            height=work_size[1],
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            strength=params.strength,
            num_images_per_prompt=params.num_images,
            generator=generators,
            callback_on_step_end=on_step,
        )
        if getattr(self.pipe, "_interrupt", False):
            raise CancelledError("generation cancelled")
        # 5. Composite back: pixels outside the mask are the input's own bytes
        images = [composite(image, gen, mask, box) for gen in out.images]
        return StyleResult(
            images=images,
            seeds=seeds,
            mask=mask,
            box=box,
            work_size=work_size,
            params=params,
            model_id=self.model_id,
            elapsed_s=time.perf_counter() - started,
            extra={"style": style, "style_scale": style_scale} if style else {},
        )


def unchanged_outside(original: Image.Image, result: Image.Image, mask: Image.Image) -> bool:
    """True when every pixel with mask == 0 is byte-identical in `result` (a check callers can run)."""
    keep = np.asarray(mask.convert("L")) == 0
    return bool(np.array_equal(np.asarray(original.convert("RGB"))[keep], np.asarray(result)[keep]))
