"""Stable Diffusion 1.5 / 2 inpainting (StableDiffusionInpaintPipeline): the original design's family.

Each distinct prompt is encoded once and the masked photo is VAE-encoded once per request (the posterior
mean), so a seed feeds only its own image's noise, alone or in any batch.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from restyle.errors import ModelLoadError
from restyle.inpaint.families.base import Adapter, Family, Limits, StepCallback, batch_kwargs, expand
from restyle.inpaint.params import MAX_SD_GUIDANCE, SCHEDULERS

SD_LIMITS = Limits(
    guidance=(0.0, MAX_SD_GUIDANCE),
    guidance_default=6.5,  # the original design's endpoint
    guidance_means="classifier-free guidance scale; 1 or less turns guidance off",
    samplers=tuple(SCHEDULERS),
)

SD = Family(
    name="sd",
    pipeline="StableDiffusionInpaintPipeline",
    class_names=("StableDiffusionInpaintPipeline",),
    hub_id="sd2-community/stable-diffusion-2-inpainting",
    license="CreativeML Open RAIL++-M (SD 2); CreativeML Open RAIL-M (SD 1.5)",
    commercial=True,  # RAIL licences allow commercial use under their use restrictions
    native=512,
    multiple=8,
    limits=SD_LIMITS,
    trainable=True,
    good_at="the original recipe: small (1.3 B), fast, fine-tunable here (DreamBooth LoRA), 512/768 px",
)


class SchedulerSwap(Adapter):
    """Samplers by name, built from the pipeline's own scheduler config and kept for reuse."""

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        self._base_scheduler = pipe.scheduler
        self._schedulers: dict[str, Any] = {}

    def set_sampler(self, name: str) -> None:
        if name not in self._schedulers:
            import diffusers

            cls_name, overrides = SCHEDULERS[name]
            self._schedulers[name] = getattr(diffusers, cls_name).from_config(
                self._base_scheduler.config, **overrides
            )
        self.pipe.scheduler = self._schedulers[name]


class UNetAdapter(SchedulerSwap):
    """SD-layout pipelines: a 9-channel UNet whose sample size gives the native size."""

    hint = "Use an *-inpainting model."

    def check(self, model_id: str) -> None:
        channels = self.pipe.unet.config.in_channels
        if channels != 9:
            raise ModelLoadError(
                f"inpainter '{model_id}': its UNet takes {channels} input channels; an inpainting model "
                f"takes 9 (latents + mask + masked image). {self.hint}"
            )

    def native_size(self, marker: dict[str, Any]) -> int:
        """UNet sample size x VAE scale factor (SD 1.5: 512, SD 2: 512 or 768, SDXL: 1024)."""
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)


class SDAdapter(UNetAdapter):
    family = SD

    def denoise(self, items: list, generators: list[Any], on_step: StepCallback) -> list[Image.Image]:
        kwargs = batch_kwargs(items, generators, on_step)
        out = self.pipe(
            **self._prompt_embeds(expand(items), items[0].params.guidance),
            masked_image_latents=self._masked_latents(items),
            **kwargs,
        )
        return list(out.images)

    def _prompt_embeds(self, rows: list, guidance: float) -> dict[str, Any]:
        """Each distinct (prompt, negative) pair encoded once, then one row per image."""
        import torch

        pairs = [(p.params.prompt, p.params.negative_prompt) for p in rows]
        unique = list(dict.fromkeys(pairs))
        with torch.no_grad():
            positive, negative = self.pipe.encode_prompt(
                [text for text, _ in unique],
                self.pipe._execution_device,
                1,
                guidance > 1.0,  # diffusers' do_classifier_free_guidance
                negative_prompt=[text for _, text in unique],
            )
        index = torch.tensor([unique.index(pair) for pair in pairs], device=positive.device)
        return {
            "prompt_embeds": positive[index],
            "negative_prompt_embeds": None if negative is None else negative[index],
        }

    def _masked_latents(self, items: list) -> Any:
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
        counts = torch.tensor([p.params.num_images for p in items], device=latents.device)
        return torch.repeat_interleave(latents, counts, dim=0)
