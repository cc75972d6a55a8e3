"""The published full-size architectures, built on the meta device, have the published parameter counts.

Two checks per component:
- exact: the count summed over the real checkpoints' tensors (figures quoted below, with where they are
  published). Tolerance 0: the configs are the published ones, so any difference is a wrong config value
  (a missing layer, a width, a channel count), and every such mistake changes the count.
- headline: the rounded figure of the model card or report (e.g. "12B"). Tolerance: half a unit of its last
  digit, since that is all the rounding says; it guards the exact figures against a typo.
"""

from __future__ import annotations

import pytest

from restyle.models.published_archs import ARCH_BUILDERS, PublishedArch

SDXL_UNET_BASE = 2_567_463_684  # SDXL base 1.0 UNet, as counted from its checkpoint (public training logs)
SDXL_INPAINT_EXTRA = (
    320 * (9 - 4) * 3 * 3
)  # conv_in takes 9 channels, not 4: 5 more 3x3 filters per 320 outputs
FLUX_DEV_TRANSFORMER = 11_901_408_320  # FLUX.1 [dev] transformer, counted from flux1-dev.safetensors
FLUX_FILL_EXTRA = 3072 * (384 - 64)  # x_embedder: Linear(384 -> 3072) instead of Linear(64 -> 3072)
EXACT = {
    ("sdxl", "unet"): SDXL_UNET_BASE + SDXL_INPAINT_EXTRA,  # 2,567,478,084
    ("sdxl", "vae"): 83_653_863,  # the SD / SDXL AutoencoderKL
    ("sdxl", "text_encoder"): 123_060_480,  # CLIP ViT-L/14 text tower
    ("sdxl", "text_encoder_2"): 694_659_840,  # OpenCLIP ViT-bigG/14 text tower with projection
    ("flux-fill", "transformer"): FLUX_DEV_TRANSFORMER + FLUX_FILL_EXTRA,  # 11,902,391,360
    ("flux-fill", "vae"): 83_819_683,  # the FLUX.1 AutoencoderKL (16 latent channels)
    ("flux-fill", "text_encoder"): 123_060_480,  # CLIP ViT-L/14 text tower
    ("flux-fill", "text_encoder_2"): 4_762_310_656,  # T5 v1.1 XXL encoder
    ("qwen-edit", "transformer"): 20_430_401_088,  # Qwen-Image MMDiT (40.86 GB of bf16 shards)
    ("qwen-edit", "vae"): 126_892_531,  # Qwen-Image VAE (the Wan 2.1 layout, 16 latent channels)
    ("qwen-edit", "text_encoder"): 8_292_166_656,  # Qwen2.5-VL-7B-Instruct, vision tower included
}
# (family, component) -> (rounded published figure, its last digit's unit, where it is published)
HEADLINE = {
    ("sdxl", "unet"): (2.6e9, 1e8, "SDXL report, arXiv:2307.01952, Table 1: 2.6B UNet"),
    ("flux-fill", "transformer"): (12e9, 1e9, "FLUX.1 model cards: a 12 billion parameter transformer"),
    ("flux-fill", "text_encoder_2"): (4.76e9, 1e7, "T5-XXL encoder, 4.76B in public model listings"),
    ("qwen-edit", "transformer"): (20e9, 1e9, "Qwen-Image-Edit model card: built on the 20B Qwen-Image"),
    ("qwen-edit", "text_encoder"): (8.29e9, 1e7, "Qwen/Qwen2.5-VL-7B-Instruct on the hub: 8.29B params"),
}
COMPONENTS = {
    "sdxl": ["unet", "vae", "text_encoder", "text_encoder_2"],
    "flux-fill": ["transformer", "vae", "text_encoder", "text_encoder_2"],
    "qwen-edit": ["transformer", "vae", "text_encoder"],
}


@pytest.fixture(scope="module")
def archs() -> dict[str, PublishedArch]:
    return {family: build() for family, build in ARCH_BUILDERS.items()}


@pytest.fixture(scope="module")
def counts(archs: dict[str, PublishedArch]) -> dict[tuple[str, str], int]:
    return {(f, name): n for f, arch in archs.items() for name, n in arch.parameter_counts().items()}


def test_every_family_builds_its_components_on_the_meta_device(archs):
    assert {f: list(a.components) for f, a in archs.items()} == COMPONENTS
    for arch in archs.values():
        for module in arch.components.values():
            assert all(p.is_meta for p in module.parameters())  # shapes only: no memory, no weights
            assert all(b.is_meta for b in module.buffers())


@pytest.mark.parametrize("key", list(EXACT), ids=lambda k: "/".join(k))
def test_parameter_count_is_the_published_checkpoints(counts, key):
    assert counts[key] == EXACT[key]


@pytest.mark.parametrize("key", list(HEADLINE), ids=lambda k: "/".join(k))
def test_parameter_count_rounds_to_the_published_figure(counts, key):
    figure, unit, _source = HEADLINE[key]
    assert abs(counts[key] - figure) <= unit / 2


def test_the_inpainting_checkpoints_differ_from_their_base_only_in_the_input_layer(archs):
    unet = archs["sdxl"].components["unet"]
    assert unet.conv_in.weight.shape == (320, 9, 3, 3)  # 4 noisy + 1 mask + 4 masked-image latents
    transformer = archs["flux-fill"].components["transformer"]
    assert transformer.x_embedder.weight.shape == (3072, 384)  # 64 latents + 64 masked image + 256 mask
    assert transformer.proj_out.weight.shape == (64, 3072)  # predicts the 64 packed latent channels only


def test_the_published_families_keep_their_vae_scale_and_latent_channels(archs):
    sdxl, flux, qwen = (archs[f].components["vae"] for f in ("sdxl", "flux-fill", "qwen-edit"))
    assert (len(sdxl.config.block_out_channels), sdxl.config.latent_channels) == (4, 4)  # x8, 4 channels
    assert (len(flux.config.block_out_channels), flux.config.latent_channels) == (4, 16)  # x8, 16 channels
    assert (2 ** len(qwen.config.temperal_downsample), qwen.config.z_dim) == (8, 16)  # x8, 16 channels


def test_the_benchmark_names_the_families():
    from restyle.perf.archs import ARCHS, FAMILY_ARCHS

    assert set(FAMILY_ARCHS) == {"sdxl", "flux-fill", "qwen-edit"}
    assert not set(FAMILY_ARCHS) & set(ARCHS)  # the SD entries stay as they were
    assert FAMILY_ARCHS["sdxl"] is ARCH_BUILDERS["sdxl"]
