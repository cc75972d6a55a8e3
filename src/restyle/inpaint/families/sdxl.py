"""Stable Diffusion XL inpainting (StableDiffusionXLInpaintPipeline), 1024 px native.

Two CLIP text encoders and a 9-channel UNet; the same samplers as SD. Prompts, photos, masks and one
generator per image go to the pipeline as lists, so waiting requests share a batch and every image's
noise and masked-photo latent come from its own seed's generator.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from restyle.inpaint.families.base import Family, StepCallback, batch_kwargs, expand
from restyle.inpaint.families.sd import SD_LIMITS, UNetAdapter

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


# The SDXL inpainting pipeline's own default and the model card's advice: at exactly 1.0 the masked photo
# does not enter the starting latents at all; just below 1.0 it does. diffusers then runs
# int(steps * strength) steps, one fewer than asked, so a full repaint schedules one step more: exactly
# `steps` steps run, starting just below pure noise.
MAX_STRENGTH = 0.9999


class SDXLAdapter(UNetAdapter):
    family = SDXL
    hint = "Use diffusers/stable-diffusion-xl-1.0-inpainting-0.1 or another 9-channel SDXL inpainter."

    def denoise(self, items: list, generators: list[Any], on_step: StepCallback) -> list[Image.Image]:
        rows = expand(items)
        kwargs = batch_kwargs(items, generators, on_step)
        if kwargs["strength"] >= 1.0:
            kwargs["strength"] = MAX_STRENGTH
            kwargs["num_inference_steps"] += 1
        out = self.pipe(
            prompt=[p.params.prompt for p in rows],
            negative_prompt=[p.params.negative_prompt for p in rows],
            **kwargs,
        )
        return list(out.images)
