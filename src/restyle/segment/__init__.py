"""Text to mask: segmenter backends behind one interface, and mask operations.

Which backend loads a model is read from the model itself, not from a flag: `load_segmenter` opens the
folder's config.json (a local folder, or a hub id's snapshot in the local Hugging Face cache) and maps its
`model_type` (else its `architectures`) to a backend: clipseg -> CLIPSeg, sam3 / sam3_video -> SAM 3,
segformer -> the clothes parser. A hub id that is not on this machine falls back to `KNOWN_HUB_IDS`, else
to CLIPSeg, whose loader then says how to fetch it. `backend=` overrides the detection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError, ModelLoadError
from restyle.segment.base import BaseSegmenter, MaskParams, MaskResult, refine

SEGMENTERS: dict[str, str] = {
    "clipseg": "restyle.segment.clipseg:ClipSegSegmenter",
    "sam3": "restyle.segment.sam3:Sam3Segmenter",
    "parser": "restyle.segment.parser:ClothesParser",
}
MODEL_TYPES: dict[str, str] = {  # config.json model_type -> backend
    "clipseg": "clipseg",
    "sam3": "sam3",
    "sam3_video": "sam3",  # facebook/sam3's own config: the detector inside is what restyle loads
    "segformer": "parser",
}
ARCHITECTURES: dict[str, str] = {  # config.json architectures prefix -> backend, when model_type says nothing
    "CLIPSeg": "clipseg",
    "Sam3": "sam3",
    "Segformer": "parser",
}
KNOWN_HUB_IDS: dict[str, str] = {  # lower-cased hub id -> backend, for ids whose files are not here
    "cidas/clipseg-rd64-refined": "clipseg",
    "cidas/clipseg-rd64": "clipseg",
    "cidas/clipseg-rd16": "clipseg",
    "facebook/sam3": "sam3",
    "mattmdjaga/segformer_b2_clothes": "parser",
    "mattmdjaga/segformer_b0_clothes": "parser",
    "sayeed99/segformer_b3_clothes": "parser",
}
# Each backend's weights licence as its publisher states it (models/published/SOURCES-segmenters.md).
LICENSES: dict[str, str] = {
    "clipseg": "Apache-2.0 (CIDAS/clipseg-rd64-refined model card; the original code is MIT, which its "
    "LICENSE says does not cover the weights)",
    "sam3": "SAM License (Meta's own licence; the hub repo is gated)",
    "parser": "MIT (mattmdjaga/segformer_b2_clothes model card and training repo)",
}


def read_model_json(model_id: str, name: str = "config.json") -> dict[str, Any] | None:
    """A JSON file of a model folder, or of a hub id's snapshot in the local cache; None when not here.

    Args:
        model_id: a folder or a hub id (an alias's cache entry serves it too, as for the weights).
        name: the file, e.g. "config.json" or "processor_config.json".

    Raises:
        ModelLoadError: the file is there but is not a JSON object.
    """
    from restyle.models.hub import resolve_cached

    folder = Path(model_id).expanduser()
    path: Path | None = folder / name if folder.is_dir() else None
    if path is None:
        from huggingface_hub import try_to_load_from_cache

        cached = resolve_cached(model_id)
        found = try_to_load_from_cache(cached, name) if cached else None
        path = Path(found) if isinstance(found, str) else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"segmenter '{model_id}': {name} is not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise ModelLoadError(f"segmenter '{model_id}': {name} is not a JSON object")
    return data


def backend_for_config(config: dict[str, Any], model_id: str = "") -> str:
    """The backend for a model's config.json: by `model_type`, else by `architectures`.

    Raises:
        ModelLoadError: naming the model_type and the ones restyle knows.
    """
    model_type = config.get("model_type")
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[str(model_type)]
    archs = (config.get("architectures") or []) if model_type is None else []  # a stated type is final
    for arch in archs:
        backend = next((b for prefix, b in ARCHITECTURES.items() if str(arch).startswith(prefix)), None)
        if backend:
            return backend
    raise ModelLoadError(
        f"segmenter '{model_id}': its config.json says model_type {model_type!r} "
        f"(architectures {config.get('architectures')!r}), which no restyle segmenter loads. Known model "
        f"types: {', '.join(MODEL_TYPES)} (backends: {', '.join(SEGMENTERS)})."
    )


def detect_backend(model_id: str) -> str:
    """The backend that loads `model_id`, read from its config.json; a hub id not here uses KNOWN_HUB_IDS.

    Returns:
        A key of SEGMENTERS ("clipseg" when nothing tells: its loader then reports what is missing).
    """
    config = read_model_json(model_id)
    if config is None:
        return KNOWN_HUB_IDS.get(model_id.lower(), "clipseg")
    return backend_for_config(config, model_id)


def load_segmenter(model_id: str, *, backend: str | None = None, **kwargs: Any) -> BaseSegmenter:
    """Load the segmenter for `model_id`, the backend chosen from its config.json.

    Args:
        model_id: a folder in transformers layout or a hub id (local cache).
        backend: force a backend (a key of SEGMENTERS); None detects it from the model.
        **kwargs: passed to the backend's `from_pretrained` (device, dtype).

    Returns:
        A BaseSegmenter (the preview class for a tiny restyle-built folder).
    """
    import importlib

    if backend is None:
        backend = detect_backend(model_id)
    if backend not in SEGMENTERS:
        raise InvalidParameterError(
            f"segmenter backend: unknown {backend!r}; known: {', '.join(SEGMENTERS)}", field="backend"
        )
    module, cls = SEGMENTERS[backend].split(":")
    return getattr(importlib.import_module(module), cls).from_pretrained(model_id, **kwargs)


__all__ = [
    "KNOWN_HUB_IDS",
    "LICENSES",
    "MODEL_TYPES",
    "SEGMENTERS",
    "BaseSegmenter",
    "MaskParams",
    "MaskResult",
    "backend_for_config",
    "detect_backend",
    "load_segmenter",
    "read_model_json",
    "refine",
]
