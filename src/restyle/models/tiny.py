"""Tiny, randomly initialised models built offline, saved in the same layouts as the real ones.

They exercise every loading and inference path of restyle (tests, preview mode) without a model hub.
Their outputs are meaningless pictures: they are not a stand-in for real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_MARKER = "restyle_tiny.json"  # present in a folder built here; lets the app label preview mode
TINY_SEED = 0
TINY_IMAGE_SIZE = 64  # CLIPSeg input side and inpainter native size of the tiny models
CLIPSEG_MEAN = (0.485, 0.456, 0.406)  # the normalisation CLIPSeg was trained with
CLIPSEG_STD = (0.229, 0.224, 0.225)
SD_SCHEDULER = (
    dict(  # EulerDiscreteScheduler as Stable Diffusion's inpainting models (and the original) set it
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
)


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (as in GPT-2/CLIP)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = [b for b in range(256) if b not in printable]
    codes = printable + [256 + i for i in range(len(extra))]
    return [chr(c) for c in codes]


def build_tiny_tokenizer():  # -> CLIPTokenizer
    """A character-level CLIP tokenizer (byte-level BPE with no merges): every text is encodable."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_config_kwargs(tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
    )


def _mark(folder: Path, kind: str) -> None:
    (folder / TINY_MARKER).write_text(json.dumps({"kind": kind, "seed": TINY_SEED, "random_weights": True}))


def build_tiny_segmenter(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny CLIPSegForImageSegmentation + CLIPSegProcessor to `out` (transformers layout)."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    config = CLIPSegConfig(
        text_config=_text_config_kwargs(tokenizer),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=TINY_IMAGE_SIZE,
            patch_size=8,
        ),
        projection_dim=32,
        extract_layers=[0, 1, 2],
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    model = CLIPSegForImageSegmentation(config).eval()
    image_processor = ViTImageProcessor(
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        image_mean=list(CLIPSEG_MEAN),
        image_std=list(CLIPSEG_STD),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    _mark(out, "segmenter")
    return out


def build_tiny_inpainter(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny StableDiffusionInpaintPipeline to `out` (diffusers layout, 9-channel UNet, VAE x8)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 8,
        in_channels=9,  # 4 noisy latents + 1 mask + 4 masked-image latents
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 32, 32, 32],  # four levels: scale factor 8, as in SD
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        sample_size=TINY_IMAGE_SIZE,
        norm_num_groups=8,
    )
    tokenizer = build_tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config_kwargs(tokenizer), projection_dim=32))
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULER)
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(size=224, crop_size=224),
        requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out)  # type: ignore[attr-defined]
    _mark(out, "inpainter")
    return out


def build_tiny_lora(inpainter: Path, out: Path, seed: int = 1, rank: int = 4) -> Path:
    """Write a random UNet LoRA for the tiny inpainter to `out/pytorch_lora_weights.safetensors`.

    Both LoRA matrices are random (not the usual zero B), so loading it visibly changes the output.
    """
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(Path(inpainter) / "unet")
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionInpaintPipeline.save_lora_weights(Path(out), unet_lora_layers=layers)
    return Path(out) / "pytorch_lora_weights.safetensors"


def build_tiny_models(out: Path, seed: int = TINY_SEED) -> dict[str, Path]:
    """Write `out/segmenter` and `out/inpainter`; returns both paths."""
    out = Path(out)
    return {
        "segmenter": build_tiny_segmenter(out / "segmenter", seed),
        "inpainter": build_tiny_inpainter(out / "inpainter", seed),
    }


def is_tiny(folder: str | Path) -> bool:
    """True for a folder written by this module (random weights, preview only)."""
    return (Path(folder) / TINY_MARKER).is_file()
