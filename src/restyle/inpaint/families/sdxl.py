"""Stable Diffusion XL inpainting (StableDiffusionXLInpaintPipeline), 1024 px native.

Two CLIP text encoders and a 9-channel UNet; the same samplers as SD. Prompts, photos, masks and one
generator per image go to the pipeline as lists, so waiting requests share a batch and every image's
noise and masked-photo latent come from its own seed's generator.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from restyle.errors import ModelLoadError
from restyle.inpaint.families.base import Family, StepCallback, expand
from restyle.inpaint.families.sd import SD_LIMITS, SchedulerSwap

SDXL = Family(
    name="sdxl",
    pipeline="StableDiffusionXLInpaintPipeline",
    class_names=("StableDiffusionXLInpaintPipeline",),
    hub_id="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    license="CreativeML Open RAIL++-M",
    commercial=True,  # under the licence's use restrictions
    native=1024,
    multiple=8,
    limits=SD_LIMITS,
    good_at="1024 px detail and better text following than SD 2 at 2.6 B parameters; many community LoRAs",
)


class SDXLAdapter(SchedulerSwap):
    family = SDXL

    def check(self, model_id: str) -> None:
        channels = self.pipe.unet.config.in_channels
        if channels != 9:
            raise ModelLoadError(
                f"inpainter '{model_id}': its UNet takes {channels} input channels; SDXL inpainting takes 9. "
                "Use diffusers/stable-diffusion-xl-1.0-inpainting-0.1 or another 9-channel SDXL inpainter."
            )

    def native_size(self, marker: dict[str, Any]) -> int:
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    def denoise(self, items: list, generators: list[Any], on_step: StepCallback) -> list[Image.Image]:
        rows = expand(items)
        first = items[0]
        width, height = first.work_image.size
        out = self.pipe(
            prompt=[p.params.prompt for p in rows],
            negative_prompt=[p.params.negative_prompt for p in rows],
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
        return list(out.images)
