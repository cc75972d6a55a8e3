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
    InvalidParameterError,
    ModelLoadError,
    ModelNotFoundError,
    RestyleError,
    UnusableMaskError,
)
from restyle.inpaint.crop import Box, composite, crop_box, pad_to_bucket, prepare_crop
from restyle.inpaint.params import MAX_SEED, SCHEDULERS, StyleParams
from restyle.models.hub import load_pretrained
from restyle.runtime import resolve_device, resolve_dtype

BUCKET = 64  # shape bucket (pixels): at 512 px, 8 crop widths x 8 heights instead of 64 x 64
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
    batch: int = 1  # requests denoised together with this one (1: alone)

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


@dataclass
class Prepared:
    """One checked request cut to its working crop: ready to denoise alone or in a batch of its `key`."""

    image: Image.Image  # the full photo (RGB)
    mask: Image.Image  # the compositing mask (L)
    params: StyleParams
    box: Box  # the region to inpaint, in photo pixels
    work_image: Image.Image  # the crop at working size, padded to the shape bucket
    work_mask: Image.Image  # binary, same size as work_image
    work_size: tuple[int, int]  # the crop's own working size (work_image minus its padding)
    seeds: list[int]
    style: str | None = None
    style_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    prepare_s: float = 0.0

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
        self.bucket = 0  # pad working crops to multiples of this many pixels (0: exact crop size)
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

    def _check_style(self, style: str | None) -> None:
        if style is None or style in self.styles:
            return
        if not self.styles:
            raise InvalidParameterError(f"style: unknown {style!r}; no styles are loaded", field="style")
        raise InvalidParameterError(
            f"style: unknown {style!r}; loaded styles: {', '.join(sorted(self.styles))}", field="style"
        )

    def _select_style(self, style: str | None, scale: float) -> None:
        self._check_style(style)
        if not self.styles:
            return
        if style is None:
            self.pipe.disable_lora()
            return
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
        inpainter = cls(pipe, model_id)
        inpainter.bucket = BUCKET if options.buckets or options.compile else 0
        return inpainter

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
        params.check()
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
        self._check_style(style)
        # 2. Region to inpaint, at the model's working size (padded to a shape bucket when asked)
        long_side = params.size or self.native_size
        box = crop_box(mask, long_side, params.context) if params.crop else (0, 0, *image.size)
        work_image, work_mask, work_size = prepare_crop(image, mask, box, long_side)
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
        )

    def run_batch(
        self,
        items: list[Prepared],
        *,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[StyleResult]:
        """Denoise prepared requests of one `key` together: one UNet batch for all their images.

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
        self._select_style(first.style, first.style_scale)
        self.pipe.scheduler = self._scheduler(first.params.scheduler)
        # 3. One entry per output image: its request's prompt, photo, mask; one CPU generator per seed
        counts = [p.params.num_images for p in items]
        expand = [p for p in items for _ in range(p.params.num_images)]
        generators = [torch.Generator("cpu").manual_seed(s) for p in items for s in p.seeds]

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            if progress is not None:
                progress(step + 1, pipe.num_timesteps)
            if cancel is not None and cancel():
                pipe._interrupt = True
            return kwargs

        # 4. Denoise
        width, height = first.work_image.size
        out = self.pipe(
            **self._prompt_embeds(expand, first.params.guidance),
            image=[p.work_image for p in expand],
            mask_image=[p.work_mask for p in expand],
            masked_image_latents=self._masked_latents(items, counts),
            width=width,
            height=height,
            num_inference_steps=first.params.steps,
            guidance_scale=first.params.guidance,
            strength=first.params.strength,
            num_images_per_prompt=1,
            generator=generators,
            callback_on_step_end=on_step,
        )
        if getattr(self.pipe, "_interrupt", False):
            raise CancelledError("generation cancelled")
        # 5. Composite back: pixels outside the mask are the input's own bytes
        run_s = time.perf_counter() - started
        results, offset = [], 0
        for p, n in zip(items, counts, strict=True):
            generated = [img.crop((0, 0, *p.work_size)) for img in out.images[offset : offset + n]]
            offset += n
            results.append(self._result(p, generated, run_s, len(items)))
        return results

    def _prompt_embeds(self, expand: list[Prepared], guidance: float) -> dict[str, Any]:
        """Each distinct (prompt, negative) pair encoded once, then one row per image."""
        import torch

        pairs = [(p.params.prompt, p.params.negative_prompt) for p in expand]
        unique = list(dict.fromkeys(pairs))
        with torch.no_grad():
            positive, negative = self.pipe.encode_prompt(
                [text for text, _ in unique],
                self.pipe._execution_device,
                1,
                guidance > 1.0,  # diffusers' do_classifier_free_guidance
                negative_prompt=[text for _, text in unique],
            )
        rows = torch.tensor([unique.index(pair) for pair in pairs], device=positive.device)
        return {
            "prompt_embeds": positive[rows],
            "negative_prompt_embeds": None if negative is None else negative[rows],
        }

    def _masked_latents(self, items: list[Prepared], counts: list[int]) -> Any:
        """The photo outside the mask in latent space: one VAE encode per request, not per image.

        It is the VAE posterior's mean, so no generator is drawn from: each image's seed feeds only its own
        noise, alone or in any batch. (diffusers would encode every image and sample with its generator.)
        """
        import torch

        pipe = self.pipe
        width, height = items[0].work_image.size
        pixels = pipe.image_processor.preprocess([p.work_image for p in items], height=height, width=width)
        keep = pipe.mask_processor.preprocess([p.work_mask for p in items], height=height, width=width) < 0.5
        vae = pipe.vae
        masked = (pixels * keep).to(device=pipe._execution_device, dtype=vae.dtype)  # (R, 3, H, W)
        with torch.no_grad():
            latents = vae.encode(masked).latent_dist.mode() * vae.config.scaling_factor  # (R, 4, H/8, W/8)
        return torch.repeat_interleave(latents, torch.tensor(counts, device=latents.device), dim=0)

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
        )


def unchanged_outside(original: Image.Image, result: Image.Image, mask: Image.Image) -> bool:
    """True when every pixel with mask == 0 is byte-identical in `result` (a check callers can run)."""
    keep = np.asarray(mask.convert("L")) == 0
    return bool(np.array_equal(np.asarray(original.convert("RGB"))[keep], np.asarray(result)[keep]))
