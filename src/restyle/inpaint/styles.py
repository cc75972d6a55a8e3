"""LoRA styles on a loaded inpainter, through diffusers' LoRA loaders (peft adapters side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError


class StyleSet:
    """The LoRA adapters loaded on one pipeline; `select` switches between them (or none) per call."""

    def __init__(self, inpainter: Any) -> None:
        self.inpainter = inpainter
        self.loaded: dict[str, str] = {}  # adapter name -> where it was loaded from

    def load(self, name: str, path: str) -> None:
        """Load a LoRA (`pytorch_lora_weights.safetensors` or its folder) as adapter `name`.

        Adapters stay loaded side by side; `select` switches between them per call without reloading
        the base model. LoRAs trained elsewhere for SDXL / FLUX load through those pipelines' loaders.
        """
        family = self.inpainter.family
        if not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidParameterError(
                f"style name {name!r}: use letters, digits, '-' and '_'", field="style"
            )
        if name in self.loaded:
            raise InvalidParameterError(
                f"style {name!r} is already loaded from {self.loaded[name]}", field="style"
            )
        if not family.lora:
            raise ModelLoadError(f"style {name!r}: {family.name} models take no LoRA styles here")
        source = Path(path).expanduser()
        if not source.exists():
            raise ModelNotFoundError(f"style {name!r}: no such LoRA file or folder: {source}")
        kwargs = {"weight_name": source.name} if source.is_file() else {}
        folder = source.parent if source.is_file() else source
        pipe = self.inpainter.pipe
        if hasattr(self.inpainter.adapter.denoiser, "_orig_mod"):  # adapter switches skip compiled nets
            raise ModelLoadError(
                f"style {name!r}: LoRA styles cannot be used with fast=compile; leave compile out of --fast"
            )
        if hasattr(pipe, "unet"):
            from restyle.inpaint.fast import unfuse

            unfuse(pipe)  # adapters patch the separate q/k/v projections
        try:
            pipe.load_lora_weights(str(folder), adapter_name=name, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ModelLoadError(
                f"style {name!r}: {source} does not load as a LoRA for this {family.name} model: {err}"
            ) from err
        self.loaded[name] = str(source)

    def check(self, style: str | None) -> None:
        if style is None or style in self.loaded:
            return
        if not self.loaded:
            raise InvalidParameterError(f"style: unknown {style!r}; no styles are loaded", field="style")
        raise InvalidParameterError(
            f"style: unknown {style!r}; loaded styles: {', '.join(sorted(self.loaded))}", field="style"
        )

    def select(self, style: str | None, scale: float) -> None:
        """Run the next call with `style` at weight `scale`, or the base model (None)."""
        self.check(style)
        if not self.loaded:
            return
        pipe = self.inpainter.pipe
        if style is None:
            pipe.disable_lora()
            return
        pipe.enable_lora()
        pipe.set_adapters([style], adapter_weights=[scale])
