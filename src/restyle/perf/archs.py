"""The benchmark's models: the published architectures at full size, built with random weights.

Speed does not depend on weight values, so the real layouts (SD 1.5- and SD 2-inpainting UNet, VAE and
text encoder; CLIPSeg rd64 on ViT-B/16) are built from their configs without a model hub. `small` is a
scaled-down SD layout for CPU runs; `tiny` is restyle's preview model layout, for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from restyle.models.published_archs import ARCH_BUILDERS, PublishedArch
from restyle.models.tiny import SD_SCHEDULER

SD_VAE = dict(  # the SD 1.x / 2.x autoencoder (83 M parameters, 8x downsampling, 4 latent channels)
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)


@dataclass(frozen=True)
class Arch:
    """One inpainting model layout (diffusers/transformers config kwargs) and its native size."""

    name: str
    unet: dict[str, Any]
    text: dict[str, Any]  # CLIPTextConfig kwargs (vocabulary and special tokens are added when built)
    vae: dict[str, Any] = field(default_factory=lambda: dict(SD_VAE))
    native: int = 512
    vocab_size: int = 49408  # the real CLIP vocabulary (embedding size); the benchmark's tokenizer is smaller
    segmenter: dict[str, Any] = field(default_factory=dict)  # CLIPSegConfig kwargs; {} = rd64 ViT-B/16
    segmenter_input: int = 352  # the side CLIPSeg's processor resizes photos to


def _sd_unet(
    cross_dim: int, head_dim: Any, linear: bool, widths: tuple[int, ...] = (320, 640, 1280, 1280)
) -> dict:
    return dict(
        sample_size=64,
        in_channels=9,  # 4 noisy latents + 1 mask + 4 masked-image latents
        out_channels=4,
        layers_per_block=2,
        block_out_channels=widths,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cross_dim,
        attention_head_dim=head_dim,
        use_linear_projection=linear,
    )


ARCHS: dict[str, Arch] = {
    # stable-diffusion-v1-5/stable-diffusion-inpainting (runwayml's, mirrored): CLIP ViT-L/14 text, 8 heads
    "sd15": Arch(
        "sd15-inpainting",
        unet=_sd_unet(768, 8, linear=False),
        text=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            hidden_act="quick_gelu",
            projection_dim=768,
        ),
    ),
    # sd2-community/stable-diffusion-2-inpainting (stabilityai's, mirrored): OpenCLIP ViT-H/14 text encoder
    # (23 of 24 layers used)
    "sd2": Arch(
        "sd2-inpainting",
        unet=_sd_unet(1024, (5, 10, 20, 20), linear=True),
        text=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            hidden_act="gelu",
            projection_dim=512,
        ),
    ),
    # a quarter-width SD layout: every kind of block, small enough for a CPU
    "small": Arch(
        "small (SD layout at 1/5 width)",
        unet=_sd_unet(256, 8, linear=True, widths=(64, 128, 256, 256)),
        text=dict(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            hidden_act="quick_gelu",
            projection_dim=256,
        ),
        vae=dict(SD_VAE, block_out_channels=(32, 64, 128, 128)),
        native=256,
        vocab_size=1024,
        segmenter_input=224,
        segmenter=dict(
            text_config=dict(
                hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4
            ),
            vision_config=dict(
                hidden_size=128, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4
            ),
            projection_dim=128,
            extract_layers=(1, 3, 5),
        ),
    ),
}


def build_pipeline(arch: Arch, *, seed: int = 0) -> Any:
    """A StableDiffusionInpaintPipeline (fp32, CPU) of `arch` with random weights drawn from `seed`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    from restyle.models.tiny import build_tiny_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()  # the published CLIP BPE tokenizer (49,408 tokens)
    text = CLIPTextConfig(
        **arch.text,
        vocab_size=max(arch.vocab_size, len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=77,
    )
    return StableDiffusionInpaintPipeline(
        vae=AutoencoderKL(**arch.vae),
        text_encoder=CLIPTextModel(text),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**arch.unet),
        scheduler=EulerDiscreteScheduler(**SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(size=224, crop_size=224),
        requires_safety_checker=False,
    )


def build_segmenter_model(arch: Arch, *, seed: int = 0) -> tuple[Any, Any]:
    """CLIPSeg (rd64 refined, ViT-B/16 unless `arch` says otherwise), random weights, and its processor."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    from restyle.models.tiny import CLIPSEG_MEAN, CLIPSEG_STD, build_tiny_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    overrides = dict(arch.segmenter)
    text_config = dict(
        overrides.pop("text_config", {}),
        vocab_size=max(arch.vocab_size, len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPSegConfig(
        text_config=text_config,
        vision_config={"patch_size": 16, **overrides.pop("vision_config", {})},  # ViT-B/16
        reduce_dim=64,
        use_complex_transposed_convolution=True,  # the "refined" rd64 decoder
        **overrides,
    )
    size = arch.segmenter_input
    processor = CLIPSegProcessor(
        image_processor=ViTImageProcessor(
            size={"height": size, "width": size}, image_mean=list(CLIPSEG_MEAN), image_std=list(CLIPSEG_STD)
        ),
        tokenizer=tokenizer,
    )
    return CLIPSegForImageSegmentation(config).eval(), processor


def parameter_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


# The newer inpainter families at their published full size, as data the benchmark can name: each value
# builds the family's denoiser, VAE and text encoder(s) on the meta device (restyle.models.published_archs).
FAMILY_ARCHS: dict[str, Callable[..., PublishedArch]] = dict(ARCH_BUILDERS)
