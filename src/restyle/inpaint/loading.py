"""Loading an inpainting pipeline of any family: device, dtype, memory switches and speed-ups."""

from __future__ import annotations

import logging
from typing import Any

from restyle.config import check_memory_options
from restyle.errors import InvalidParameterError
from restyle.inpaint.families import Family, family_for
from restyle.models.hub import load_pretrained
from restyle.runtime import resolve_device, resolve_dtype

log = logging.getLogger("restyle")
BUCKET = 64  # shape bucket (pixels) of fast=buckets / compile: at 512 px, 8 x 8 crop shapes, not 64 x 64
QUANTIZED_PARTS = {  # the big components of each family: what a 4-/8-bit load shrinks
    "sd": ("unet",),
    "sdxl": ("unet", "text_encoder_2"),
    "flux-fill": ("transformer", "text_encoder_2"),
    "qwen-edit": ("transformer", "text_encoder"),
}


def quantization_config(family: Family, quantize: str, dtype: Any) -> Any:
    """diffusers' PipelineQuantizationConfig for `quantize` (bitsandbytes), or None."""
    if not quantize:
        return None
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise InvalidParameterError(
            f"quantize: {quantize} needs bitsandbytes (pip install 'bitsandbytes>=0.45')", field="quantize"
        )
    from diffusers.quantizers import PipelineQuantizationConfig

    if quantize == "4bit":
        backend = "bitsandbytes_4bit"
        kwargs: dict[str, Any] = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": dtype,
        }
    else:
        backend, kwargs = "bitsandbytes_8bit", {"load_in_8bit": True}
    return PipelineQuantizationConfig(
        quant_backend=backend, quant_kwargs=kwargs, components_to_quantize=list(QUANTIZED_PARTS[family.name])
    )


def local_folder(model_id: str) -> str:
    """The folder that holds `model_id`'s files: itself, or its snapshot in the local Hugging Face cache."""
    from pathlib import Path

    from restyle.errors import ModelNotFoundError
    from restyle.models.hub import not_found_message, resolve_cached

    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    found = resolve_cached(model_id)
    if found is None:
        raise ModelNotFoundError(not_found_message("inpainter", model_id))
    from huggingface_hub import snapshot_download

    return str(snapshot_download(found, local_files_only=True))


def load_pipeline(
    model_id: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attention_slicing: bool = False,
    vae_tiling: bool = False,
    fast: str | None = None,
    offload: str = "",
    quantize: str = "",
) -> tuple[Any, int]:
    """Load `model_id` with its family's pipeline class; returns (pipe, shape bucket).

    On CUDA, dtype auto is fp16 for SD / SDXL and bf16 for FLUX and Qwen-Image (which overflow in fp16).
    `offload` keeps components on the CPU until they run (model: whole components, sequential: layer by
    layer, slowest, least memory); `quantize` loads the big components in 8 or 4 bits (bitsandbytes, CUDA).
    `fast` names speed-ups from `restyle.inpaint.fast` (UNet families only).
    """
    import diffusers

    from restyle.inpaint.fast import FastOptions, apply_fast

    options = FastOptions.parse(fast)  # refuse a typo before the slow load
    check_memory_options(offload, quantize)
    if options.fuse_qkv and attention_slicing:
        raise InvalidParameterError(
            "fast: fuse_qkv replaces the sliced attention processors; use one of fuse_qkv and "
            "attention_slicing",
            field="fast",
        )
    family = family_for(model_id)
    if family.name not in ("sd", "sdxl") and (options.channels_last or options.fuse_qkv or options.compile):
        raise InvalidParameterError(
            f"fast: channels_last, fuse_qkv and compile are measured for UNet models; {family.name} takes "
            "buckets only",
            field="fast",
        )
    dev = resolve_device(device)
    if (offload or quantize) and dev.type != "cuda":  # both trade GPU memory; a CPU run has none to save
        log.warning("offload/quantize: ignored on %s (they save GPU memory)", dev.type)
        offload = quantize = ""
    if dtype == "auto" and dev.type == "cuda" and family.name in ("flux-fill", "qwen-edit"):
        dtype = "bf16"
    torch_dtype = resolve_dtype(dtype, dev)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if family.name == "sd":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    quant = quantization_config(family, quantize, torch_dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if family.name == "qwen-edit":
        from restyle.inpaint.families.qwen import has_torchvision, processor_without_video

        if not has_torchvision():
            kwargs["processor"] = processor_without_video(local_folder(model_id))
    pipe = load_pretrained(getattr(diffusers, family.pipeline), model_id, "inpainter", **kwargs)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=dev)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=dev)
    else:  # bitsandbytes put the quantized parts on the GPU; .to moves the rest (and leaves those)
        pipe = pipe.to(dev)
    if attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
    if vae_tiling:
        pipe.vae.enable_tiling()
    if family.name in ("sd", "sdxl"):
        apply_fast(pipe, options)
    return pipe, BUCKET if options.buckets or options.compile else 0
