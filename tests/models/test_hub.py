import json

import pytest

from restyle.config import ModelConfig
from restyle.errors import ModelLoadError, ModelNotFoundError
from restyle.inpaint import Inpainter
from restyle.models import is_available, is_tiny, resolve_or_preview
from restyle.models.tiny import TINY_MARKER
from restyle.segment.clipseg import ClipSegSegmenter


def test_tiny_models_have_real_layouts(tiny_models):
    inp = tiny_models["inpainter"]
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler", "feature_extractor"} <= {
        p.name for p in inp.iterdir()
    }
    assert json.loads((inp / "unet" / "config.json").read_text())["in_channels"] == 9
    assert (tiny_models["segmenter"] / "processor_config.json").is_file()
    assert is_tiny(inp) and is_tiny(tiny_models["segmenter"])


def test_uncached_hub_id_names_model_and_both_fixes():
    with pytest.raises(ModelNotFoundError) as info:
        Inpainter.from_pretrained("stabilityai/stable-diffusion-2-inpainting", device="cpu")
    msg = str(info.value)
    assert "stabilityai/stable-diffusion-2-inpainting" in msg
    assert "restyle models pull" in msg and "--inpainter" in msg and "RESTYLE_INPAINTER" in msg


def test_unknown_folder_is_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        ClipSegSegmenter.from_pretrained(str(tmp_path / "missing" / "seg"), device="cpu")


def test_folder_of_the_wrong_kind(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(ModelLoadError, match="does not load as a diffusers inpainting pipeline folder"):
        Inpainter.from_pretrained(str(tmp_path / "junk"), device="cpu")


def test_preview_fallback_builds_tiny_models_once(tmp_path):
    res = resolve_or_preview(ModelConfig())
    assert res.preview and set(res.missing) == {ModelConfig().segmenter, ModelConfig().inpainter}
    assert (
        is_available(res.config.inpainter)
        and (tmp_path / "restyle-cache" / "tiny" / "inpainter" / TINY_MARKER).is_file()
    )
    again = resolve_or_preview(ModelConfig())
    assert again.config == res.config


def test_real_models_are_used_when_present(tiny_models):
    cfg = ModelConfig(segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]))
    res = resolve_or_preview(cfg)
    assert not res.preview and res.config == cfg


def test_download_patterns_take_the_diffusers_layout_only():
    from restyle.models.hub import download_patterns

    files = [
        "512-inpainting-ema.ckpt",
        "512-inpainting-ema.safetensors",
        "model_index.json",
        "README.md",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ]
    got = set(download_patterns(files))
    assert got == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    }


def test_download_patterns_for_a_transformers_repo():
    from restyle.models.hub import download_patterns

    files = [
        "config.json",
        "pytorch_model.bin",
        "preprocessor_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "special_tokens_map.json",
        "README.md",
        "extra/other.bin",
    ]
    assert set(download_patterns(files)) == set(files) - {"README.md", "extra/other.bin"}
