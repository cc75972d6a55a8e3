"""Tiny random inpainters of three more families: SDXL inpainting, FLUX.1 Fill [dev] and Qwen-Image-Edit.

Same idea as `restyle.models.tiny`: every component is the real diffusers/transformers class, shrunk and
randomly initialised, saved in the published layout with `save_pretrained`, so `<Pipeline>.from_pretrained`
and a 2-step call run on a CPU: about a second at 64 px for SDXL and FLUX; Qwen-Image-Edit's pipeline
always works at ~1 megapixel (1024 x 1024 for a square photo), so about ten.

Kept as published (`published/<family>/`, sources in `published/SOURCES-inpainters.md`): model_index.json,
the scheduler config, the text encoders' vocabulary and special-token ids, the CLIP tokenizers, latent
channels, the VAE's x8 scale factor and the 2x2 latent packing. Made up: widths and depths, and two small
tokenizers that cannot be rebuilt offline (T5's SentencePiece model, Qwen2's 151,643-token BPE), which keep
the published special tokens and ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from restyle.models.clip_bpe import PUBLISHED, write_clip_tokenizer
from restyle.models.tiny import TINY_IMAGE_SIZE, TINY_SEED, TINY_TEXT, _mark, published_config

SDXL_INPAINTING = PUBLISHED / "sdxl-inpainting"  # diffusers/stable-diffusion-xl-1.0-inpainting-0.1
FLUX_FILL = PUBLISHED / "flux1-fill-dev"  # black-forest-labs/FLUX.1-Fill-dev
QWEN_IMAGE_EDIT = PUBLISHED / "qwen-image-edit"  # Qwen/Qwen-Image-Edit
FAMILY_PIPELINES = {  # model_index.json `_class_name` -> the class restyle loads it with
    "sdxl": ("StableDiffusionXLInpaintPipeline", "StableDiffusionXLInpaintPipeline"),
    "flux-fill": ("FluxFillPipeline", "FluxFillPipeline"),
    "qwen-edit": ("QwenImageEditPipeline", "QwenImageEditInpaintPipeline"),  # published as the edit pipeline
}
LATENT = TINY_IMAGE_SIZE // 8  # 8x8 latents at 64 px: the VAEs downsample x8 like the real ones
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in google/t5-v1_1-xxl
T5_EXTRA_IDS = 100  # <extra_id_0..99> at the top of the vocabulary, as published
T5_MAX_LENGTH = 512  # FluxFillPipeline's default max_sequence_length; the published model_max_length
QWEN_BPE_SIZE = 151643  # regular tokens of the Qwen2 BPE: the special tokens start at this id
QWEN_SPECIALS = (  # Qwen2.5-VL's added tokens, ids 151643.. in this order; True = special
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
# Words the tiny BPEs learn whole, so prompts tokenize into words (not bytes) and Qwen's system prompt
# still spans the 64 tokens `prompt_template_encode_start_idx` drops, as with the real tokenizer.
TINY_CORPUS = (
    "a red silk evening dress with long sleeves, a blue denim jacket, white cotton shirt, black leather "
    "boots, floral summer skirt, wool coat, striped t-shirt, studio photo, high quality, sharp focus, "
    "fashion model, elegant, casual, vintage, modern, pattern, fabric, color, style, outfit, garment"
)


def _save_all(out: Path, parts: dict[str, Any]) -> None:
    for name, part in parts.items():
        part.save_pretrained(out / name)


def _finish(out: Path, family: str, source: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy the published model_index.json, scheduler config and `extra` files byte for byte; mark `out`."""
    for name in ("model_index.json", "scheduler/scheduler_config.json", *extra):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes((source / name).read_bytes())
    _mark(out, "inpainter", family=family)
    return out


def _text_config(folder: Path) -> dict[str, Any]:
    """A published text-encoder config without its dtype: tiny models stay float32 (transformers loads
    a saved model in the dtype its config names, fp16/bf16 in these repos)."""
    config = published_config(folder)
    return {k: v for k, v in config.items() if k not in {"torch_dtype", "dtype"}}


def _tiny_clip(folder: Path, projection: bool = False):  # -> CLIPTextModel(WithProjection)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig.from_dict(_text_config(folder) | TINY_TEXT | {"projection_dim": 32})
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_tiny_sdxl(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny SDXL inpainting pipeline (9-channel UNet with SDXL's text-time embedding, two CLIPs).

    Args:
        out: folder to write (diffusers layout, loads with `StableDiffusionXLInpaintPipeline`).
        seed: torch seed for the random weights.

    Returns:
        `out`. model_index.json, the Euler scheduler and both CLIP tokenizers are the published files.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet_config = published_config(SDXL_INPAINTING / "unet")
    unet = UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=unet_config["in_channels"],  # 9: 4 noisy + 1 mask + 4 masked-image latents
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        cross_attention_dim=2 * TINY_TEXT["hidden_size"],  # both encoders' hidden states, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 size/crop ids x 8 + pooled text (as 6x256+1280)
        norm_num_groups=8,
    )
    vae_config = published_config(SDXL_INPAINTING / "vae")
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),  # four levels: x8 as published
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=vae_config["latent_channels"],
        norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE,
        scaling_factor=vae_config["scaling_factor"],
        force_upcast=vae_config["force_upcast"],
    )
    out = Path(out)
    parts = {
        "unet": unet,
        "vae": vae,
        "text_encoder": _tiny_clip(SDXL_INPAINTING / "text_encoder"),
        "text_encoder_2": _tiny_clip(SDXL_INPAINTING / "text_encoder_2", projection=True),
    }
    _save_all(out, parts)
    for name in ("tokenizer", "tokenizer_2"):  # CLIP BPE; tokenizer_2 pads with "!" (OpenCLIP), as published
        write_clip_tokenizer(out / name, SDXL_INPAINTING / name)
    return _finish(out, "sdxl", SDXL_INPAINTING)


def build_tiny_t5_tokenizer(out: Path):  # -> T5TokenizerFast
    """A small T5 Unigram tokenizer: T5's ids for <pad>/</s>/<unk> (0/1/2) and its 100 <extra_id_N> sentinels.

    The SentencePiece model of google/t5-v1_1-xxl is not available offline, so the vocabulary in between is
    small: the printable ASCII characters, word-start pieces and the words of `TINY_CORPUS`, scored by length
    so that whole words win. `model_max_length` is the published 512.

    Args:
        out: folder to write (`save_pretrained` layout).

    Returns:
        The tokenizer, as loaded back from `out`.
    """
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # a v5 alias of T5Tokenizer

    chars = [chr(c) for c in range(33, 127)]
    words = sorted({w.strip(",.") for w in TINY_CORPUS.split()} - {""})
    pieces = ["▁", *chars, *(f"▁{c}" for c in chars), *(f"▁{w}" for w in words)]
    vocab = [(s, 0.0) for s in T5_SPECIALS] + [(p, -10.0 + len(p)) for p in dict.fromkeys(pieces)]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(T5_EXTRA_IDS))]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=T5_EXTRA_IDS, model_max_length=T5_MAX_LENGTH)
    tokenizer.save_pretrained(out)
    return T5TokenizerFast.from_pretrained(out)


def build_tiny_flux_fill(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny FLUX.1 Fill [dev] pipeline: 384-channel transformer, 16-channel VAE, CLIP-L and T5.

    Args:
        out: folder to write (diffusers layout, loads with `FluxFillPipeline`).
        seed: torch seed for the random weights.

    Returns:
        `out`. As published: model_index.json, the flow-matching scheduler, the CLIP tokenizer, the
        transformer's in/out channels (384 = 64 latents + 64 masked-image latents + 256 mask, packed 2x2)
        and guidance embedding, the VAE's 16 latent channels, scale and shift, T5's ids and 32,128 rows.
    """
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tr_config = published_config(FLUX_FILL / "transformer")
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=tr_config["in_channels"],
        out_channels=tr_config["out_channels"],
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # the tiny T5's d_model
        pooled_projection_dim=TINY_TEXT["hidden_size"],  # the tiny CLIP's pooled output
        guidance_embeds=tr_config["guidance_embeds"],
        axes_dims_rope=(4, 4, 8),  # sums to the head dim, as (16, 56, 56) sums to 128
    )
    vae_config = published_config(FLUX_FILL / "vae")
    vae_keys = ("latent_channels", "scaling_factor", "shift_factor", "use_quant_conv", "use_post_quant_conv")
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE,
        **{k: vae_config[k] for k in vae_keys},
    )
    t5 = _text_config(FLUX_FILL / "text_encoder_2")
    t5.update(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2)
    out = Path(out)
    parts = {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": _tiny_clip(FLUX_FILL / "text_encoder"),
        "text_encoder_2": T5EncoderModel(T5Config.from_dict(t5)),
    }
    _save_all(out, parts)
    write_clip_tokenizer(out / "tokenizer", FLUX_FILL / "tokenizer")
    build_tiny_t5_tokenizer(out / "tokenizer_2")
    return _finish(out, "flux-fill", FLUX_FILL)


def _qwen_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE learned from the edit pipeline's prompt template and `TINY_CORPUS`.

    Every word of the template is learned whole, so its system prompt is 64 tokens as with Qwen2's real
    BPE (the pipeline drops exactly those). Ids past the learned ones are unreachable fillers up to 151,643,
    so the special tokens keep their published ids (<|image_pad|> = 151655, ...).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = "|".join(re.escape(token) for token, _ in QWEN_SPECIALS)
    texts = [*re.split(specials, _qwen_template().replace("{}", "")), TINY_CORPUS, TINY_CORPUS.title()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = _qwen_pre_tokenizer()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=4096, initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab |= {f"<|tiny_unused_{i}|>": i for i in range(len(vocab), QWEN_BPE_SIZE)}
    return vocab, [(a, b) for a, b in model["merges"]]


def _qwen_template() -> str:
    """The prompt template of diffusers' Qwen-Image-Edit pipelines (set in `__init__`: read from its code)."""
    from diffusers import QwenImageEditInpaintPipeline

    constants = QwenImageEditInpaintPipeline.__init__.__code__.co_consts
    return next(c for c in constants if isinstance(c, str) and c.startswith("<|im_start|>system"))


def _qwen_pre_tokenizer():  # -> the pre-tokenizer transformers' Qwen2Tokenizer builds
    from tokenizers import Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_tiny_qwen_tokenizer(out: Path):  # -> Qwen2TokenizerFast
    """A small Qwen2 byte-level BPE with Qwen2.5-VL's 22 added tokens at their published ids (151643..151664).

    Args:
        out: folder to write (`save_pretrained` layout).

    Returns:
        The tokenizer, as loaded back from `out`; eos <|im_end|>, pad <|endoftext|>, as Qwen2.5-VL-Instruct.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast  # type: ignore[attr-defined]  # v5 alias

    vocab, merges = _qwen_bpe()
    # eos first as <|endoftext|> so that the added tokens get their ids in the published order
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges, model_max_length=131072)
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN_SPECIALS])
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.save_pretrained(out)
    return Qwen2TokenizerFast.from_pretrained(out)


def _tiny_qwen_vl():  # -> Qwen2_5_VLForConditionalGeneration
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = _text_config(QWEN_IMAGE_EDIT / "text_encoder")
    config.pop("architectures", None)
    vision = config.pop("vision_config")
    text: dict[str, Any] = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2
    )
    text.update(num_key_value_heads=1, rope_scaling={"mrope_section": [2, 3, 3], "rope_type": "default"})
    config.update(text, max_window_layers=2)  # mrope sections sum to half the head dim (16, 24, 24: 128)
    vision.update(depth=2, hidden_size=16, intermediate_size=24, num_heads=2, out_hidden_size=32)
    vision.update(fullatt_block_indexes=[1])
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config, vision_config=vision)).eval()


def build_tiny_qwen_edit(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny Qwen-Image-Edit pipeline (Qwen2.5-VL text encoder, Qwen-Image VAE and MMDiT).

    Args:
        out: folder to write (diffusers layout; model_index.json names `QwenImageEditPipeline` as published,
            load it with `QwenImageEditInpaintPipeline` to inpaint).
        seed: torch seed for the random weights.

    Returns:
        `out`. As published: model_index.json, scheduler, processor image config (patch 14, merge 2, pixel
        bounds), the VL encoder's vocabulary and token ids, the VAE's 16 latent channels and x8 scale
        (3 downsampling levels) with its latent mean/std, the transformer's 64 = 16x2x2 packed channels.
    """
    import torch
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    torch.manual_seed(seed)
    tr_config = published_config(QWEN_IMAGE_EDIT / "transformer")
    transformer = QwenImageTransformer2DModel(
        patch_size=tr_config["patch_size"],
        in_channels=tr_config["in_channels"],
        out_channels=tr_config["out_channels"],
        num_layers=1,  # every step sees 2 x 4096 image tokens: the pipeline always works at ~1 MP
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # the tiny VL encoder's hidden size
        guidance_embeds=tr_config["guidance_embeds"],
        axes_dims_rope=(4, 6, 6),  # sums to the head dim, as (16, 56, 56) sums to 128
    )
    vae_config = published_config(QWEN_IMAGE_EDIT / "vae")
    keep = ("z_dim", "dim_mult", "temperal_downsample", "latents_mean", "latents_std")
    # base_dim 1: the VAE runs three times per call at 1024 x 1024 and is most of a tiny call's time
    vae = AutoencoderKLQwenImage(base_dim=1, num_res_blocks=1, **{k: vae_config[k] for k in keep})
    out = Path(out)
    _save_all(out, {"transformer": transformer, "vae": vae, "text_encoder": _tiny_qwen_vl()})
    tokenizer = build_tiny_qwen_tokenizer(out / "tokenizer")
    # The processor folder as published: the image processor's config beside the tokenizer's files. Written
    # by parts: transformers' Qwen2VLProcessor cannot be built without torchvision (its video processor).
    tokenizer.save_pretrained(out / "processor")
    return _finish(out, "qwen-edit", QWEN_IMAGE_EDIT, ("processor/preprocessor_config.json",))


TINY_BUILDERS = {  # restyle's family name -> builder
    "sdxl": build_tiny_sdxl,
    "flux-fill": build_tiny_flux_fill,
    "qwen-edit": build_tiny_qwen_edit,
}


def build_tiny_lora_for(family: str, folder: Path, out: Path, seed: int = 1, rank: int = 4) -> Path:
    """Write a random LoRA for the tiny `family` model in `folder` to `out/pytorch_lora_weights.safetensors`.

    Both LoRA matrices are random (not the usual zero B), so loading it visibly changes the output.

    Args:
        family: "sdxl" (UNet LoRA) or "flux-fill" (transformer LoRA).
        folder: a folder written by `build_tiny_sdxl` / `build_tiny_flux_fill`.
        out: folder to write, with the pipeline class's own `save_lora_weights`.
        seed: torch seed for the LoRA weights.
        rank: LoRA rank (and alpha).

    Returns:
        The path of the written safetensors file.
    """
    import diffusers
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    kinds = {"sdxl": ("unet", "UNet2DConditionModel"), "flux-fill": ("transformer", "FluxTransformer2DModel")}
    if family not in kinds:
        raise ValueError(f"family: no LoRA for {family!r}; choose one of {sorted(kinds)}")
    part, cls = kinds[family]
    torch.manual_seed(seed)
    model = getattr(diffusers, cls).from_pretrained(Path(folder) / part)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
    pipeline = getattr(diffusers, FAMILY_PIPELINES[family][1])
    pipeline.save_lora_weights(Path(out), **{f"{part}_lora_layers": layers})
    return Path(out) / "pytorch_lora_weights.safetensors"
