"""The base model's parts, what each mode trains, and how each mode writes its output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError, ModelLoadError
from restyle.inpaint.pipeline import Inpainter
from restyle.models.hub import load_pretrained
from restyle.train.config import TrainConfig

LORA_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers' load_lora_weights looks for
PREDICTION_TYPES = ("epsilon", "v_prediction")  # what the loss has a target for (noise, velocity)


@dataclass
class Parts:
    """A loaded inpainting pipeline and the training-only noise scheduler."""

    pipe: Any  # StableDiffusionInpaintPipeline; its unet/text_encoder are the modules being trained
    noise_scheduler: Any  # DDPMScheduler with the base model's noise schedule

    @property
    def unet(self) -> Any:
        return self.pipe.unet

    @property
    def text_encoder(self) -> Any:
        return self.pipe.text_encoder

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def tokenizer(self) -> Any:
        return self.pipe.tokenizer


def load_parts(base: str, device: Any) -> Parts:
    """Load the base inpainting model (hub id or folder) in fp32 onto `device`."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline

    from restyle.inpaint.families import family_for

    family = family_for(base)
    if not family.trainable:
        raise InvalidParameterError(
            f"base: {base} is a {family.name} model; restyle fine-tunes the SD family (SD 1.5 / SD 2 "
            f"inpainting) only. {family.name} models take LoRAs trained elsewhere as styles (--lora).",
            field="base",
        )
    pipe = load_pretrained(
        StableDiffusionInpaintPipeline,
        base,
        "inpainter",
        dtype=torch.float32,  # a base saved in fp16 still trains (and saves) in fp32
        safety_checker=None,
        requires_safety_checker=False,
    )
    Inpainter(pipe, base)  # refuses a non-inpainting (4-channel) UNet with a clear message
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_scheduler.config.prediction_type
    if prediction not in PREDICTION_TYPES:
        raise InvalidParameterError(
            f"base: {base} predicts {prediction!r} (scheduler prediction_type); restyle trains "
            f"{' or '.join(PREDICTION_TYPES)} models only",
            field="base",
        )
    return Parts(pipe=pipe.to(device), noise_scheduler=noise_scheduler)


def set_trainable(parts: Parts, config: TrainConfig) -> list[Any]:
    """Freeze what this mode does not train, add LoRA adapters if asked; returns the trained params."""
    import torch

    parts.vae.requires_grad_(False)
    if config.mode == "dreambooth":
        parts.unet.requires_grad_(True)
        parts.text_encoder.requires_grad_(config.train_text_encoder)
    else:
        from peft import LoraConfig

        parts.unet.requires_grad_(False)
        parts.text_encoder.requires_grad_(False)
        torch.manual_seed(config.seed)  # the adapters' A matrices start the same in every process and run
        _add_lora(parts.unet, config.lora_rank, config.lora_alpha, config.lora_targets, LoraConfig)
        if config.train_text_encoder:
            _add_lora(
                parts.text_encoder, config.lora_rank, config.lora_alpha, config.text_lora_targets, LoraConfig
            )
    if config.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            parts.text_encoder.gradient_checkpointing_enable()
    models = [parts.unet, parts.text_encoder] if config.train_text_encoder else [parts.unet]
    return [p for m in models for p in m.parameters() if p.requires_grad]


def _add_lora(model: Any, rank: int, alpha: float | None, targets: tuple[str, ...], lora_config: Any) -> None:
    names = [name for name, _ in model.named_modules()]
    absent = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]  # peft's rule
    if absent:
        raise InvalidParameterError(
            f"lora_targets: {', '.join(absent)} match no module of {type(model).__name__}",
            field="lora_targets",
        )
    model.add_adapter(
        lora_config(
            r=rank,
            lora_alpha=alpha if alpha is not None else rank,
            init_lora_weights="gaussian",
            target_modules=list(targets),
        )
    )


def save_lora(parts: Parts, config: TrainConfig, folder: Path) -> Path:
    """Write the trained adapters as diffusers' pytorch_lora_weights.safetensors (+ alpha/rank metadata)."""
    from diffusers import StableDiffusionInpaintPipeline
    from diffusers.training_utils import _collate_lora_metadata
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    modules = {"unet": parts.unet}
    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(parts.unet))}
    if config.train_text_encoder:
        modules["text_encoder"] = parts.text_encoder
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(
            get_peft_model_state_dict(parts.text_encoder)
        )
    StableDiffusionInpaintPipeline.save_lora_weights(folder, **layers, **_collate_lora_metadata(modules))
    return folder / LORA_FILE


def save_pipeline(parts: Parts, config: TrainConfig, folder: Path) -> Path:
    """Write the fine-tuned model in diffusers layout: the base model's own files (fp32, its scheduler)
    with the trained UNet, and the trained text encoder when it was trained.

    Re-reading the base (as diffusers' scripts do) keeps the frozen parts bit-exact even when training
    ran them in half precision, and drops the sampler that validation switched to.
    """
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    trained = {"unet": parts.unet}
    if config.train_text_encoder:
        trained["text_encoder"] = parts.text_encoder
    pipe = load_pretrained(
        StableDiffusionInpaintPipeline,
        config.base,
        "inpainter",
        dtype=torch.float32,
        safety_checker=None,
        requires_safety_checker=False,
        **trained,
    )
    pipe.save_pretrained(folder)
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(f"saving the model to {folder} wrote no model_index.json")
    return folder


def half_precision(parts: Parts, c: TrainConfig, dtype: Any) -> None:
    """Cast what is frozen to `dtype`; trained weights (full model or adapters) stay fp32."""
    from diffusers.training_utils import cast_training_params

    parts.vae.to(dtype=dtype)
    if not c.train_text_encoder or c.mode == "lora":
        parts.text_encoder.to(dtype=dtype)
    if c.mode == "lora":
        parts.unet.to(dtype=dtype)
        cast_training_params(parts.unet)
        if c.train_text_encoder:
            cast_training_params(parts.text_encoder)
