"""What every inpainter family shares: its facts, its parameter ranges, and the adapter signature.

An adapter wraps one diffusers pipeline class behind one call (`denoise`), in the spirit of k-diffusion's
one-signature samplers: the shared core (`restyle.inpaint.pipeline`) cuts the crop, draws the seeds and
composites the result, whatever family runs in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from restyle.errors import InvalidParameterError

if TYPE_CHECKING:
    from restyle.inpaint.params import StyleParams
    from restyle.inpaint.pipeline import Prepared

StepCallback = Callable[[Any, int, Any, dict], dict]  # diffusers' callback_on_step_end


@dataclass(frozen=True)
class Limits:
    """A family's parameter ranges and defaults: checked in one place (`check`), published by /v1/models."""

    guidance: tuple[float, float]  # accepted range of `guidance`
    guidance_default: float  # what a request without `guidance` runs at
    guidance_means: str  # what the number is for this family (CFG scale, distilled guidance, ...)
    samplers: tuple[str, ...]  # accepted `scheduler` names (restyle.inpaint.params.SCHEDULERS keys)
    negative_prompt: bool = True  # False: the model has no negative prompt (distilled guidance)
    steps_default: int = 25
    min_steps: int = 1  # Qwen-Image's published scheduler gives NaN pictures from a single step

    def resolve(self, params: StyleParams) -> StyleParams:
        """`params` with this family's defaults filled in, checked against its ranges.

        Raises:
            InvalidParameterError naming the field, the family and its range.
        """
        from restyle.prompts.vocabulary import DEFAULT_NEGATIVE

        guidance = self.guidance_default if params.guidance is None else params.guidance
        steps = self.steps_default if params.steps is None else params.steps
        negative = params.negative_prompt
        if not self.negative_prompt:
            if negative not in (None, "", DEFAULT_NEGATIVE):
                raise InvalidParameterError(
                    "negative_prompt: this model has no negative prompt (its guidance is distilled); "
                    "leave negative_prompt out",
                    field="negative_prompt",
                )
            negative = ""
        elif negative is None:
            negative = DEFAULT_NEGATIVE
        resolved = replace(params, guidance=guidance, steps=steps, negative_prompt=negative)
        resolved.check()
        if steps < self.min_steps:
            raise InvalidParameterError(
                f"steps: {steps} is below this model's minimum of {self.min_steps}", field="steps"
            )
        lo, hi = self.guidance
        if not lo <= guidance <= hi:
            raise InvalidParameterError(
                f"guidance: {guidance} is out of range [{lo}, {hi}] for this model ({self.guidance_means})",
                field="guidance",
            )
        if resolved.scheduler not in self.samplers:
            raise InvalidParameterError(
                f"scheduler: {resolved.scheduler!r} is not available for this model; choose one of "
                f"{', '.join(self.samplers)}",
                field="scheduler",
            )
        return resolved

    def describe(self) -> dict[str, Any]:
        """JSON-ready ranges (for /v1/models and the studio)."""
        return {
            "guidance": list(self.guidance),
            "guidance_default": self.guidance_default,
            "guidance_means": self.guidance_means,
            "schedulers": list(self.samplers),
            "negative_prompt": self.negative_prompt,
            "steps_default": self.steps_default,
            "min_steps": self.min_steps,
        }


@dataclass(frozen=True)
class Family:
    """One pipeline family: what it is, where it comes from, what it may be used for."""

    name: str  # restyle's name: sd, sdxl, flux-fill, qwen-edit
    pipeline: str  # the diffusers class restyle loads it with
    class_names: tuple[str, ...]  # model_index.json `_class_name`s that are this family
    hub_id: str  # the published model restyle documents for it
    license: str  # the licence of those weights, as published
    commercial: bool  # does that licence allow commercial use
    native: int  # native long side when the model does not say (the pipeline's default size)
    multiple: int  # working sizes are multiples of this (VAE factor x latent packing)
    limits: Limits
    mode: str = "describe"  # describe: the prompt describes the new garment; instruction: it is an edit
    batch_requests: bool = True  # waiting requests may share one denoising batch
    lora: bool = True  # LoRA styles load through diffusers' loaders
    trainable: bool = False  # `restyle train` fine-tunes it
    gated: bool = False  # the hub repo asks users to accept its licence before download
    good_at: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "pipeline": self.pipeline,
            "hub_id": self.hub_id,
            "license": self.license,
            "commercial_use": self.commercial,
            "gated": self.gated,
            "mode": self.mode,
            "batches_requests": self.batch_requests,
            "lora": self.lora,
            "trainable": self.trainable,
            "limits": self.limits.describe(),
        }


class Adapter:
    """The per-family calls on one loaded pipeline. Subclasses set `family` and implement `denoise`."""

    family: Family

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def check(self, model_id: str) -> None:
        """Refuse a pipeline this family cannot inpaint with (ModelLoadError)."""

    def native_size(self, marker: dict[str, Any]) -> int:
        """The long side the model was trained at (a tiny model's marker says its own)."""
        return int(marker.get("native_size") or self.family.native)

    def modules(self) -> dict[str, Any]:
        """The torch modules that hold weights, by component folder (the archive check compares them)."""
        return {
            name: module
            for name, module in self.pipe.components.items()
            if hasattr(module, "state_dict") and hasattr(module, "parameters")
        }

    @property
    def denoiser(self) -> Any:
        """The network that runs every step (UNet or transformer)."""
        unet = getattr(self.pipe, "unet", None)
        return unet if unet is not None else self.pipe.transformer

    def set_sampler(self, name: str) -> None:
        """Use sampler `name` (one of `family.limits.samplers`) for the next call; the default keeps the
        pipeline's own scheduler, which is the only one flow-matching families list."""

    def denoise(
        self,
        items: list[Prepared],
        generators: list[Any],
        on_step: StepCallback,
    ) -> list[Image.Image]:
        """Run the pipeline once for `items` (one key; one row per output image, in order).

        Args:
            items: prepared requests: work_image, work_mask, params (resolved), num_images each.
            generators: one CPU generator per output image, in order.
            on_step: diffusers' callback_on_step_end (progress and cancel).

        Returns:
            One image per output, each of its item's `work_image` size.
        """
        raise NotImplementedError


def batch_kwargs(items: list[Prepared], generators: list[Any], on_step: StepCallback) -> dict[str, Any]:
    """The call arguments every batching family takes alike: one photo, mask and generator per image."""
    rows = expand(items)
    first = items[0]
    width, height = first.work_image.size
    return dict(
        image=[p.work_image for p in rows],
        mask_image=[p.work_mask for p in rows],
        width=width,
        height=height,
        num_inference_steps=first.params.steps,
        guidance_scale=first.params.guidance,
        strength=first.params.strength,
        num_images_per_prompt=1,
        generator=generators,
        callback_on_step_end=on_step,
    )


def expand(items: list[Prepared]) -> list[Prepared]:
    """One entry per output image (an item repeated num_images times), in order."""
    return [p for p in items for _ in range(p.params.num_images)]


def to_work_size(images: list[Image.Image], rows: list[Prepared]) -> list[Image.Image]:
    """Images a pipeline returned at its own size, brought to each row's padded work size."""
    return [
        img if img.size == p.work_image.size else img.resize(p.work_image.size, Image.Resampling.LANCZOS)
        for img, p in zip(images, rows, strict=True)
    ]
