"""FLUX.1 Fill [dev] (FluxFillPipeline): a 12 B rectified-flow transformer trained for inpainting.

Its guidance is distilled into the model (an embedding, about 30 for Fill; not classifier-free guidance),
so there is no negative prompt and one forward pass per step. It samples with its own flow-matching Euler
scheduler. Photos, masks, prompts and one generator per image go to the pipeline as lists, so waiting
requests share a batch.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from restyle.inpaint.families.base import Adapter, Family, Limits, StepCallback, batch_kwargs, expand

FLUX_FILL = Family(
    name="flux-fill",
    pipeline="FluxFillPipeline",
    class_names=("FluxFillPipeline",),
    hub_id="black-forest-labs/FLUX.1-Fill-dev",
    license="FLUX.1 [dev] Non-Commercial License",
    commercial=False,
    gated=True,
    native=1024,  # the pipeline's default_sample_size (128) x the VAE's 8
    multiple=16,  # VAE factor 8 x the 2x2 packing of latents into tokens
    limits=Limits(
        guidance=(1.0, 100.0),
        guidance_default=30.0,  # Black Forest Labs' and diffusers' value for Fill
        guidance_means="distilled guidance strength (an input of the model, not classifier-free guidance)",
        samplers=("euler",),  # its own FlowMatchEulerDiscreteScheduler
        negative_prompt=False,
        steps_default=50,
    ),
    good_at="the most faithful fills of the open models (fabric, folds, light), 1024 px; non-commercial",
)
MAX_T5_TOKENS = 512  # FLUX.1 [dev] reads up to 512 T5 tokens


class FluxFillAdapter(Adapter):
    family = FLUX_FILL

    def native_size(self, marker: dict[str, Any]) -> int:
        if marker:
            return int(marker.get("native_size", 64))
        return int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)

    def denoise(self, items: list, generators: list[Any], on_step: StepCallback) -> list[Image.Image]:
        out = self.pipe(
            prompt=[p.params.prompt for p in expand(items)],
            max_sequence_length=MAX_T5_TOKENS,
            **batch_kwargs(items, generators, on_step),
        )
        return list(out.images)
