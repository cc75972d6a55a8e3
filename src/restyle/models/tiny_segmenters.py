"""Tiny, randomly initialised SAM 3 and clothes-parser segmenters, built offline through the real classes.

Like `restyle.models.tiny`: saved with `save_pretrained` in the layout of the real repos, loaded by the same
`from_pretrained` path as real weights, marked with restyle_tiny.json (kind "segmenter", plus "backend") so
that they load as the preview segmenters. Only widths and depths are shrunk; the vocabulary (CLIP BPE,
49,408 tokens, SAM 3's 32-token context), the parser's 18 ATR labels, its 512-pixel processor and SAM 3's
200 object queries stay as the configs in `published/` give them (published/SOURCES-segmenters.md).

One documented change for speed: the tiny SAM 3 takes 224-pixel inputs (ViT grid 16, masks 64 px) where
the real one takes 1008 (grid 72, masks 288); SAM 3 ties its ViT's position grid to the input size, so the
processor and the model config change together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restyle.models.clip_bpe import PUBLISHED, write_clip_tokenizer
from restyle.models.tiny import CLIPSEG_RD64_REFINED, TINY_MARKER, TINY_SEED, _mark, published_config

SAM3_DEFAULTS = PUBLISHED / "sam3"  # transformers' Sam3Config / Sam3Processor defaults: no copy was found
SEGFORMER_B2_CLOTHES = PUBLISHED / "segformer-b2-clothes"  # mattmdjaga/segformer_b2_clothes' configs
TINY_SAM3_SIZE = 224  # input side of the tiny SAM 3 (the real one: 1008), a multiple of its patch 14
TINY_WIDTH = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)


def _shrunk(sub: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**sub, **TINY_WIDTH, **extra}


def tiny_sam3_config() -> dict[str, Any]:
    """transformers' SAM 3 config with every width and depth shrunk and a 224-pixel ViT.

    Kept: the CLIP vocabulary and 32-token context, patch 14, the 336-pixel pretraining grid (so position
    embeddings are tiled, as for the real model), the FPN scale factors, 200 object queries, activations.
    """
    config = published_config(SAM3_DEFAULTS, "config.defaults.json")
    grid = TINY_SAM3_SIZE // 14
    vision = config["vision_config"]
    vision["backbone_config"] = _shrunk(
        vision["backbone_config"],
        num_hidden_layers=2,
        image_size=TINY_SAM3_SIZE,
        window_size=8,
        global_attn_indexes=[1],
    )
    vision.update(fpn_hidden_size=32, backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2])
    config["text_config"] = _shrunk(config["text_config"], num_hidden_layers=2, projection_dim=32)
    for key in ("geometry_encoder_config", "detr_encoder_config", "detr_decoder_config"):
        config[key] = _shrunk(config[key], num_layers=1)
    config["mask_decoder_config"] = {
        **config["mask_decoder_config"],
        "hidden_size": 32,
        "num_attention_heads": 2,
    }
    return config


def tiny_sam3_processor_config() -> dict[str, Any]:
    """The SAM 3 processor settings at TINY_SAM3_SIZE; masks at 4x the ViT grid, as the real 288 = 4 x 72."""
    config = published_config(SAM3_DEFAULTS, "processor_config.defaults.json")
    mask = TINY_SAM3_SIZE // 14 * 4
    config["image_processor"].update(
        size={"height": TINY_SAM3_SIZE, "width": TINY_SAM3_SIZE}, mask_size={"height": mask, "width": mask}
    )
    config["target_size"] = TINY_SAM3_SIZE
    return config


def _mark_backend(folder: Path, backend: str) -> None:
    """tiny.py's marker, plus the backend it was built for."""
    _mark(folder, "segmenter")
    marker = json.loads((folder / TINY_MARKER).read_text())
    (folder / TINY_MARKER).write_text(json.dumps({**marker, "backend": backend}))


def build_tiny_sam3(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny Sam3Model to `out` (transformers layout: config, weights, processor, tokenizer).

    The tokenizer is CLIP's published BPE (`write_clip_tokenizer`, no download) with CLIPSeg's tokenizer
    configs; processor_config.json is Sam3Processor's layout at TINY_SAM3_SIZE.

    Returns:
        `out`, loadable with `Sam3Model.from_pretrained` / `Sam3Segmenter.from_pretrained`.
    """
    import torch
    from transformers import Sam3Config, Sam3Model

    torch.manual_seed(seed)
    model = Sam3Model(Sam3Config.from_dict(tiny_sam3_config())).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps(tiny_sam3_processor_config(), indent=2) + "\n")
    write_clip_tokenizer(out, CLIPSEG_RD64_REFINED)
    _mark_backend(out, "sam3")
    return out


def tiny_parser_config() -> dict[str, Any]:
    """The published segformer_b2_clothes config with widths and depths shrunk; labels, patch sizes,
    strides and reduction ratios as published."""
    config = published_config(SEGFORMER_B2_CLOTHES)
    config.update(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], decoder_hidden_size=16)
    config.update(num_attention_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2])
    return config


def build_tiny_parser(out: Path, seed: int = TINY_SEED) -> Path:
    """Write a tiny SegformerForSemanticSegmentation (18 ATR labels) to `out`, random weights.

    preprocessor_config.json is the published one (512x512, ImageNet mean/std).

    Returns:
        `out`, loadable with `ClothesParser.from_pretrained`.
    """
    import shutil

    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(SegformerConfig.from_dict(tiny_parser_config())).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    shutil.copyfile(SEGFORMER_B2_CLOTHES / "preprocessor_config.json", out / "preprocessor_config.json")
    _mark_backend(out, "parser")
    return out
