"""Model resolution: a local folder or a hub id in the Hugging Face cache, with errors that say what to do.

Loading never downloads by surprise: weights come from a folder or from the local cache that
`restyle models pull` fills. Set RESTYLE_ALLOW_DOWNLOAD=1 to let `from_pretrained` fetch on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from restyle.config import ModelConfig
from restyle.errors import ModelLoadError, ModelNotFoundError

ROLES = {
    # role -> (CLI flag, env variable, what the folder must hold)
    "segmenter": ("--segmenter", "RESTYLE_SEGMENTER", "a transformers CLIPSeg folder"),
    "inpainter": ("--inpainter", "RESTYLE_INPAINTER", "a diffusers inpainting pipeline folder"),
}


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or os.sep + os.sep in model_id


def downloads_allowed() -> bool:
    """True when RESTYLE_ALLOW_DOWNLOAD is set and the hub is not switched off (HF_HUB_OFFLINE)."""
    off = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    return not off and os.environ.get("RESTYLE_ALLOW_DOWNLOAD", "").lower() in {"1", "true", "yes", "on"}


def not_found_message(role: str, model_id: str) -> str:
    flag, env, what = ROLES[role]
    return (
        f"{role} '{model_id}' is not available: it is not a local folder and its weights are not in the "
        f"Hugging Face cache. Fix it one of two ways: run `restyle models pull {flag} {model_id}` on a "
        f"machine that reaches the hub, or point {flag} (or {env}) at {what}."
    )


def load_pretrained(cls: Any, model_id: str, role: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(model_id)` from a folder or the local cache; errors become RestyleErrors.

    Args:
        cls: a transformers/diffusers class with `from_pretrained`.
        model_id: hub id ("org/name") or a folder path.
        role: "segmenter" or "inpainter", for the messages.
        **kwargs: passed to `from_pretrained` (torch_dtype, ...).
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        try:
            return cls.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(
                f"{role} '{model_id}': the folder exists but does not load as {ROLES[role][2]}: {err}"
            ) from err
    if _looks_like_path(model_id) or path.exists():
        raise ModelNotFoundError(
            f"{role} '{model_id}': no such folder. Point {ROLES[role][0]} at {ROLES[role][2]} "
            "or give a hub id."
        )
    try:
        return cls.from_pretrained(model_id, local_files_only=not downloads_allowed(), **kwargs)
    except OSError as err:
        raise ModelNotFoundError(not_found_message(role, model_id)) from err


def is_available(model_id: str) -> bool:
    """Cheap check: a folder, or a hub id whose config is in the local cache."""
    if Path(model_id).expanduser().is_dir():
        return True
    if _looks_like_path(model_id):
        return False
    from huggingface_hub import try_to_load_from_cache

    for name in ("model_index.json", "config.json"):
        hit = try_to_load_from_cache(model_id, name)
        if isinstance(hit, str):
            return True
    return False


_WANTED = (".json", ".txt", ".model", ".safetensors", ".bin")  # configs, tokenizers, weights
_DUPLICATES = (".fp16.", "non_ema")  # variants of weights the default layout already has


def _folder(name: str) -> str:
    return name.rpartition("/")[0]


def download_patterns(files: list[str]) -> list[str]:
    """Which files of a hub repo to fetch: the loadable layout only, not every checkpoint beside it.

    Diffusers repos (model_index.json) get their component folders, not root-level single-file checkpoints
    or fp16/non-EMA duplicates; transformers repos get their root files. Safetensors are preferred; .bin
    weights are fetched only where a folder has no safetensors.
    """
    diffusers_layout = "model_index.json" in files

    def in_layout(name: str) -> bool:
        if diffusers_layout:
            return name == "model_index.json" or (bool(_folder(name)) and "/" not in _folder(name))
        return "/" not in name

    candidates = [
        f for f in files if f.endswith(_WANTED) and not any(d in f for d in _DUPLICATES) and in_layout(f)
    ]
    with_safetensors = {_folder(f) for f in candidates if f.endswith(".safetensors")}
    return [f for f in candidates if not (f.endswith(".bin") and _folder(f) in with_safetensors)]


def pull(model_id: str) -> str:
    """Download a hub model's loadable files into the Hugging Face cache; returns the snapshot folder."""
    from huggingface_hub import HfApi, snapshot_download

    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    try:
        files = HfApi().list_repo_files(model_id)
        return str(snapshot_download(model_id, allow_patterns=download_patterns(files)))
    except Exception as err:  # the hub client raises many types; all mean "could not fetch"
        raise ModelNotFoundError(f"could not download '{model_id}' from the hub: {err}") from err


def cache_dir() -> Path:
    """restyle's own cache (tiny preview models): $RESTYLE_CACHE, else ~/.cache/restyle."""
    env = os.environ.get("RESTYLE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "restyle"


@dataclass(frozen=True)
class Resolved:
    """The model configuration to run, and whether it is the tiny-model preview."""

    config: ModelConfig
    preview: bool
    missing: tuple[str, ...] = ()  # the real models that were not available


def resolve_or_preview(config: ModelConfig) -> Resolved:
    """Use the configured models when available; otherwise fall back to tiny models (preview mode).

    The tiny models are built once into `cache_dir()/tiny` (about a second, a few MB).
    """
    from restyle.models.tiny import TINY_MARKER, build_tiny_models

    missing = tuple(m for m in (config.segmenter, config.inpainter) if not is_available(m))
    if not missing:
        return Resolved(config, preview=False)
    tiny = cache_dir() / "tiny"
    if not all((tiny / part / TINY_MARKER).is_file() for part in ("segmenter", "inpainter")):
        build_tiny_models(tiny)
    cfg = replace(config, segmenter=str(tiny / "segmenter"), inpainter=str(tiny / "inpainter"))
    return Resolved(cfg, preview=True, missing=missing)
