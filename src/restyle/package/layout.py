"""What an extracted model.tar.gz holds (SageMaker puts it at /opt/ml/model).

The inpainter's diffusers folders sit at the root, an optional CLIPSeg folder in `segmenter/`, and LoRA
styles in `styles/NAME/pytorch_lora_weights.safetensors`. `code/inference.py` and `restyle serve
--model-dir` both read a model folder through `packaged_models`, so they load the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restyle.errors import ModelNotFoundError

LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class PackagedModels:
    """The models of one model folder."""

    inpainter: str  # the folder itself (model_index.json at its root)
    segmenter: str | None  # segmenter/, when packaged
    styles: tuple[tuple[str, str], ...]  # (name, LoRA file), sorted by name


def packaged_models(root: str | Path) -> PackagedModels:
    """Read a model folder laid out as restyle's model.tar.gz; a folder that is not one is an error."""
    root = Path(root).expanduser()
    if not (root / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"model dir '{root}': no model_index.json at its root (an extracted `restyle package` archive "
            "has the inpainter's folders there)",
            field="model_dir",
        )
    seg = root / "segmenter"
    styles = root / "styles"
    found = sorted(p for p in styles.iterdir() if (p / LORA_FILE).is_file()) if styles.is_dir() else []
    return PackagedModels(
        inpainter=str(root),
        segmenter=str(seg) if (seg / "config.json").is_file() else None,
        styles=tuple((p.name, str(p / LORA_FILE)) for p in found),
    )


def loaded_modules(service: Any) -> dict[str, Any]:
    """The torch modules a loaded handler (`model_fn`'s Service) runs, by the archive folder they came from.

    `restyle package verify --container` compares them with the files, so that weights a library could
    not read (and silently initialised at random) are caught.
    """
    engine = service.engine
    modules = dict(engine.inpainter.adapter.modules())
    if engine.config.segmenter and Path(str(engine.config.segmenter)).is_dir():
        model = getattr(engine.segmenter, "model", None)
        if model is not None:
            modules["segmenter"] = model
    return modules
