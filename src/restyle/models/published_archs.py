"""Published full-size architectures of the SDXL, FLUX.1 Fill and Qwen-Image-Edit inpainters, on "meta".

Each builder reads the vendored config.json files of `published/<family>/` (sources in
`published/SOURCES-inpainters.md`) and builds the denoiser, the VAE and the text encoder(s) with the real
diffusers/transformers classes under `torch.device("meta")`: shapes only, no memory, no weights, a second or
so. The benchmark (`restyle.perf.archs.FAMILY_ARCHS`) names them; the tests check the parameter counts against
the published figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restyle.models.clip_bpe import PUBLISHED
from restyle.models.tiny import published_config

SDXL_INPAINTING = PUBLISHED / "sdxl-inpainting"
FLUX_FILL = PUBLISHED / "flux1-fill-dev"
QWEN_IMAGE_EDIT = PUBLISHED / "qwen-image-edit"


@dataclass(frozen=True)
class PublishedArch:
    """One family's components at full size on the meta device, and what the pipeline needs to run them."""

    family: str  # restyle's name: "sdxl", "flux-fill", "qwen-edit"
    pipeline: str  # the diffusers class restyle loads the published repo with
    components: dict[str, Any] = field(default_factory=dict)  # name -> module, parameters on "meta"
    native: int = 1024  # the side the model was trained at

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (tied weights counted once), as `{name: count}`."""
        return {name: parameter_count(module) for name, module in self.components.items()}


def parameter_count(module: Any) -> int:
    """Number of distinct parameters of `module` (a tied embedding counts once)."""
    return sum(p.numel() for p in module.parameters())


def _diffusers(cls_name: str, folder: Path) -> Any:
    import diffusers

    return getattr(diffusers, cls_name).from_config(published_config(folder))


def _transformers(cls_name: str, config_cls: str, folder: Path) -> Any:
    import transformers

    config = getattr(transformers, config_cls).from_dict(published_config(folder))
    return getattr(transformers, cls_name)(config)


def _on_meta(build: Callable[[], dict[str, Any]], device: str = "meta", dtype: Any = None) -> dict[str, Any]:
    """Run `build` with every parameter created on `device` ("meta": no storage at all) in `dtype`."""
    import torch

    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)  # built in bf16 / fp16 directly: a 20 B model never exists in fp32
    try:
        with torch.device(device):
            return build()
    finally:
        torch.set_default_dtype(previous)


def build_sdxl_arch(device: str = "meta", dtype: Any = None) -> PublishedArch:
    """SDXL inpainting 0.1: 9-channel UNet, SDXL VAE, CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text encoders.

    Args:
        device, dtype: where and in what the components are built ("meta": shapes only; the benchmark
            builds them on the GPU with random weights).

    Returns:
        The four components (`unet`, `vae`, `text_encoder`, `text_encoder_2`) on `device`.
    """
    folder = SDXL_INPAINTING

    def build() -> dict[str, Any]:
        return {
            "unet": _diffusers("UNet2DConditionModel", folder / "unet"),
            "vae": _diffusers("AutoencoderKL", folder / "vae"),
            "text_encoder": _transformers("CLIPTextModel", "CLIPTextConfig", folder / "text_encoder"),
            "text_encoder_2": _transformers(
                "CLIPTextModelWithProjection", "CLIPTextConfig", folder / "text_encoder_2"
            ),
        }

    return PublishedArch("sdxl", "StableDiffusionXLInpaintPipeline", _on_meta(build, device, dtype))


def build_flux_fill_arch(device: str = "meta", dtype: Any = None) -> PublishedArch:
    """FLUX.1 Fill [dev]: the 384-channel FLUX.1 transformer, the 16-channel VAE, CLIP ViT-L/14 and T5-XXL.

    Args:
        device, dtype: as `build_sdxl_arch`.

    Returns:
        The four components (`transformer`, `vae`, `text_encoder`, `text_encoder_2`) on `device`.
    """
    folder = FLUX_FILL

    def build() -> dict[str, Any]:
        return {
            "transformer": _diffusers("FluxTransformer2DModel", folder / "transformer"),
            "vae": _diffusers("AutoencoderKL", folder / "vae"),
            "text_encoder": _transformers("CLIPTextModel", "CLIPTextConfig", folder / "text_encoder"),
            "text_encoder_2": _transformers("T5EncoderModel", "T5Config", folder / "text_encoder_2"),
        }

    return PublishedArch("flux-fill", "FluxFillPipeline", _on_meta(build, device, dtype))


def build_qwen_edit_arch(device: str = "meta", dtype: Any = None) -> PublishedArch:
    """Qwen-Image-Edit: the 60-layer Qwen-Image MMDiT, its VAE and Qwen2.5-VL-7B (vision tower included).

    Args:
        device, dtype: as `build_sdxl_arch`.

    Returns:
        The three components (`transformer`, `vae`, `text_encoder`) on `device`.
    """
    folder = QWEN_IMAGE_EDIT

    def build() -> dict[str, Any]:
        return {
            "transformer": _diffusers("QwenImageTransformer2DModel", folder / "transformer"),
            "vae": _diffusers("AutoencoderKLQwenImage", folder / "vae"),
            "text_encoder": _transformers(
                "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig", folder / "text_encoder"
            ),
        }

    return PublishedArch("qwen-edit", "QwenImageEditInpaintPipeline", _on_meta(build, device, dtype))


ARCH_BUILDERS: dict[str, Callable[..., PublishedArch]] = {  # (device="meta", dtype=None) -> PublishedArch
    "sdxl": build_sdxl_arch,
    "flux-fill": build_flux_fill_arch,
    "qwen-edit": build_qwen_edit_arch,
}
