"""Tiny, randomly initialised models built offline, saved in the same layouts as the real ones.

They exercise every loading and inference path of restyle (tests, preview mode) without a model hub.
Only the weights are made up: scheduler, tokenizer, processors and model_index.json are the published
files (`published/`), so samplers, prompt truncation at 77 tokens and CLIPSeg's 352-pixel input behave as
with real weights. Their outputs are meaningless pictures: they are not a stand-in for real weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from restyle.models.clip_bpe import PUBLISHED, write_clip_tokenizer

TINY_MARKER = "restyle_tiny.json"  # present in a folder built here; lets the app label preview mode
TINY_SEED = 0
TINY_FORMAT = 2  # the marker's layout version; 2: published scheduler, CLIP BPE tokenizer, 352-pixel CLIPSeg
TINY_IMAGE_SIZE = 64  # native size of the tiny inpainter (the tiny CLIPSeg takes CLIPSeg's own 352)
CLIPSEG_MEAN = (0.485, 0.456, 0.406)  # the normalisation CLIPSeg was trained with
CLIPSEG_STD = (0.229, 0.224, 0.225)
# Everything but the weights comes from the published repos (published/SOURCES.md says which snapshot):
SD2_INPAINTING = PUBLISHED / "sd2-inpainting"  # Stability AI's SD 2 inpainting repo, snapshot 81a84f49
SD15_INPAINTING = PUBLISHED / "sd15-inpainting"  # Runway's SD 1.5 inpainting repo, commit caac1048
CLIPSEG_RD64_REFINED = PUBLISHED / "clipseg-rd64-refined"  # CIDAS/clipseg-rd64-refined, reconstructed
SD_SCHEDULER = dict(  # EulerDiscreteScheduler as the published PNDM / DDIM configs resolve to it ("linspace")
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    prediction_type="epsilon",
    trained_betas=None,
)
TINY_TEXT = dict(  # the tiny text encoders' sizes; vocabulary, ids and context stay the published ones
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
)


def published_config(folder: Path, name: str = "config.json") -> dict[str, Any]:
    """A published JSON file as a dict, without the keys that only say who wrote it."""
    config = json.loads((folder / name).read_text())
    return {k: v for k, v in config.items() if k not in {"_name_or_path", "transformers_version"}}


def _copy_published(source: Path, out: Path, names: tuple[str, ...]) -> None:
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, out / name)


def build_tiny_tokenizer():  # -> CLIPTokenizer
    """The published CLIP BPE tokenizer (49,408 tokens, 77-token context), as CLIPSeg's repo has it."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp, CLIPSEG_RD64_REFINED))


def _mark(folder: Path, kind: str, family: str | None = None) -> None:
    marker = {"kind": kind, "seed": TINY_SEED, "random_weights": True, "format": TINY_FORMAT}
    if family is not None:  # which inpainter family (restyle.models.tiny_families); absent: SD 2
        marker["family"] = family
    (folder / TINY_MARKER).write_text(json.dumps(marker))


def tiny_clipseg_config() -> dict[str, Any]:
    """The published rd64-refined config with every width and depth shrunk.

    Kept as published: vocabulary and special-token ids, the vision input 224 with patch 16 (so 352-pixel
    inputs interpolate the position embeddings, as with the real weights), the refined decoder head
    (`use_complex_transposed_convolution`), activations and the conditional layer.
    """
    config = published_config(CLIPSEG_RD64_REFINED)
    config["text_config"].update(TINY_TEXT)
    config["vision_config"].update(TINY_TEXT, num_hidden_layers=3)
    config.update(projection_dim=32, extract_layers=[0, 1, 2], reduce_dim=16, decoder_intermediate_size=32)
    return config


def build_tiny_segmenter(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny CLIPSegForImageSegmentation to `out` (transformers layout), random weights.

    The processor and tokenizer files are the published CLIPSeg ones (352x352 input, CLIP BPE).
    """
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(CLIPSegConfig.from_dict(tiny_clipseg_config())).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _copy_published(CLIPSEG_RD64_REFINED, out, ("preprocessor_config.json",))
    write_clip_tokenizer(out, CLIPSEG_RD64_REFINED)
    _mark(out, "segmenter")
    return out


def build_tiny_inpainter(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny SD 2 inpainting pipeline to `out` (diffusers layout, 9-channel UNet, VAE x8).

    UNet, VAE and text encoder are tiny and random; model_index.json, the scheduler, the feature extractor
    and the tokenizer are the published SD 2 inpainting files, so every sampler resolves as with real weights.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 8,
        in_channels=9,  # 4 noisy latents + 1 mask + 4 masked-image latents
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_TEXT["hidden_size"],
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
    text_config = published_config(SD2_INPAINTING / "text_encoder") | TINY_TEXT | {"projection_dim": 32}
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(text_config))
    out = Path(out)
    parts: dict[str, Any] = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    for name, part in parts.items():
        part.save_pretrained(out / name)
    names = (
        "model_index.json",
        "scheduler/scheduler_config.json",
        "feature_extractor/preprocessor_config.json",
    )
    _copy_published(SD2_INPAINTING, out, names)
    write_clip_tokenizer(out / "tokenizer", SD2_INPAINTING / "tokenizer")
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


def is_current_tiny(folder: str | Path) -> bool:
    """True for a tiny folder of this module's layout; one an older restyle built (a stale preview cache,
    with the old character-level tokenizer and "leading" Euler schedule) answers False."""
    try:
        return json.loads((Path(folder) / TINY_MARKER).read_text()).get("format") == TINY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


INPAINTER_FAMILIES = ("sd", "sdxl", "flux-fill", "qwen-edit")  # restyle.inpaint.families, in that order
SEGMENTER_BACKENDS = ("clipseg", "sam3", "parser")  # restyle.segment backends


def build_tiny_backend(role: str, name: str, out: Path, seed: int = TINY_SEED) -> Path:
    """Write one tiny model of backend `name` (an inpainter family or a segmenter backend) to `out`."""
    if role == "inpainter":
        if name == "sd":
            return build_tiny_inpainter(out, seed)
        from restyle.models.tiny_families import TINY_BUILDERS

        return TINY_BUILDERS[name](out, seed)
    if name == "clipseg":
        return build_tiny_segmenter(out, seed)
    from restyle.models import tiny_segmenters

    builder = {"sam3": tiny_segmenters.build_tiny_sam3, "parser": tiny_segmenters.build_tiny_parser}[name]
    return builder(out, seed)


def build_tiny_backends(
    out: Path,
    inpainters: tuple[str, ...] = INPAINTER_FAMILIES,
    segmenters: tuple[str, ...] = SEGMENTER_BACKENDS,
    seed: int = TINY_SEED,
) -> dict[str, Path]:
    """Write a tiny model of every named backend: `out/segmenter` and `out/inpainter` for the original
    pair (clipseg, sd), `out/segmenter-NAME` and `out/inpainter-NAME` for the others.

    Returns:
        "role" or "role-NAME" -> folder.
    """
    out = Path(out)
    built: dict[str, Path] = {}
    for role, names, default in (("segmenter", segmenters, "clipseg"), ("inpainter", inpainters, "sd")):
        for name in names:
            key = role if name == default else f"{role}-{name}"
            built[key] = build_tiny_backend(role, name, out / key, seed)
    return built
