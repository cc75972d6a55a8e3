"""Qwen-Image-Edit (QwenImageEditInpaintPipeline): a 20 B instruction editor, Apache-2.0.

Instruction mode: the prompt is an edit ("make the dress a red linen maxi skirt") that Qwen2.5-VL reads
together with the photo crop; the mask still bounds what may change, and restyle's composite returns every
pixel outside it byte for byte. The pipeline works at about one megapixel whatever size it is given (its
own `calculate_dimensions`), so its output is resized back to the crop and `size` does not change how it
works. True classifier-free guidance (`true_cfg_scale`) with a negative prompt. The photo conditions each
request's text encoding, so requests run one at a time, and each image is its own call so that its seed
alone makes it (the pipeline draws the photo's latent from a call's first generator).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from restyle.inpaint.families.base import Adapter, Family, Limits, StepCallback, to_work_size

QWEN_EDIT = Family(
    name="qwen-edit",
    pipeline="QwenImageEditInpaintPipeline",
    class_names=("QwenImageEditPipeline", "QwenImageEditInpaintPipeline"),
    hub_id="Qwen/Qwen-Image-Edit",
    license="Apache-2.0",
    commercial=True,
    native=1024,  # the pipeline's working area: 1024 x 1024 pixels, aspect kept
    multiple=16,
    limits=Limits(
        guidance=(1.0, 20.0),
        guidance_default=4.0,  # the pipeline's true_cfg_scale default
        guidance_means="true classifier-free guidance scale (true_cfg_scale); 1 turns guidance off",
        samplers=("euler",),  # its own FlowMatchEulerDiscreteScheduler
        steps_default=50,
        min_steps=2,  # one step of its published flow-matching schedule gives NaN
    ),
    mode="instruction",
    batch_requests=False,
    good_at="edits by instruction, reading the photo (keeps identity and pose); commercial use allowed",
)


class QwenEditAdapter(Adapter):
    family = QWEN_EDIT

    def native_size(self, marker: dict[str, Any]) -> int:
        return int(marker.get("native_size", 64)) if marker else self.family.native

    def denoise(self, items: list, generators: list[Any], on_step: StepCallback) -> list[Image.Image]:
        """One pipeline call per image: the pipeline samples the photo's VAE posterior with the first
        generator of a call, so one call for n images would tie each image's noise to its place."""
        (item,) = items  # batch_requests=False: the server never groups two requests here
        params = item.params
        n = len(generators)
        images: list[Image.Image] = []
        for index, generator in enumerate(generators):

            def step(pipe: Any, i: int, t: Any, kwargs: dict, done: int = index) -> dict:
                pipe._restyle_total = pipe.num_timesteps * n  # progress over all n calls
                return on_step(pipe, done * pipe.num_timesteps + i, t, kwargs)

            out = self.pipe(
                image=item.work_image,
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or " ",  # true CFG needs a negative, even blank
                mask_image=item.work_mask,
                true_cfg_scale=params.guidance,
                num_inference_steps=params.steps,
                strength=params.strength,
                num_images_per_prompt=1,
                generator=[generator],
                callback_on_step_end=step,
            )
            if getattr(self.pipe, "_interrupt", False):  # each call resets it: stop here
                break
            images += list(out.images)
        self.pipe._restyle_total = None
        return to_work_size(images, [item] * len(images))


def has_torchvision() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def processor_without_video(folder: str) -> Any:
    """The pipeline's Qwen2VLProcessor from `folder/processor`, built without its video processor.

    transformers 5 builds Qwen2VLProcessor only with a video processor, and that needs torchvision; the edit
    pipeline never passes videos, so where torchvision is missing (CPU machines whose index has no CPU
    wheel) the processor gets the image processor and tokenizer alone, the attributes its `__call__` reads
    for images. With torchvision, `from_pretrained` loads the folder's own processor unchanged.
    """
    from pathlib import Path

    import transformers

    source = Path(folder) / "processor"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    image_processor = transformers.Qwen2VLImageProcessorPil.from_pretrained(str(source))
    processor = transformers.Qwen2VLProcessor.__new__(transformers.Qwen2VLProcessor)
    processor.image_processor, processor.tokenizer = image_processor, tokenizer
    processor.video_processor, processor.chat_template = None, None
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.video_token_id = tokenizer.convert_tokens_to_ids(processor.video_token)
    return processor
