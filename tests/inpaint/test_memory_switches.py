"""--offload / --quantize: checked before anything loads, ignored (with a warning) where there is no GPU
memory to save, carried by the env and the archive, and run for real on a GPU (marked `gpu`)."""

from __future__ import annotations

import logging

import pytest

from restyle.errors import InvalidParameterError


def test_unknown_values_are_refused_by_name(monkeypatch):
    from restyle.config import load_model_config

    with pytest.raises(InvalidParameterError, match="quantize: must be one of 8bit, 4bit"):
        load_model_config(quantize="4bits")
    monkeypatch.setenv("RESTYLE_OFFLOAD", "gpu")
    with pytest.raises(InvalidParameterError, match="offload: must be one of model, sequential"):
        load_model_config()
    monkeypatch.setenv("RESTYLE_OFFLOAD", "model")
    monkeypatch.setenv("RESTYLE_QUANTIZE", "4bit")
    assert (load_model_config().offload, load_model_config().quantize) == ("model", "4bit")


def test_on_the_cpu_both_are_ignored_with_a_warning(family_folder, caplog):
    from restyle.inpaint.loading import load_pipeline

    with caplog.at_level(logging.WARNING, logger="restyle"):
        pipe, _ = load_pipeline(
            str(family_folder("flux-fill")), device="cpu", offload="model", quantize="4bit"
        )
    assert type(pipe).__name__ == "FluxFillPipeline" and "ignored on cpu" in caplog.text
    assert pipe.transformer.device.type == "cpu"


def test_quantizing_without_bitsandbytes_says_what_to_install(monkeypatch):
    import importlib.util

    import torch

    from restyle.inpaint.families import FLUX_FILL
    from restyle.inpaint.loading import quantization_config

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(InvalidParameterError, match="needs bitsandbytes"):
        quantization_config(FLUX_FILL, "4bit", torch.bfloat16)


def test_the_big_families_quantize_their_big_parts():
    import torch

    from restyle.inpaint.families import FLUX_FILL, QWEN_EDIT
    from restyle.inpaint.loading import quantization_config

    flux = quantization_config(FLUX_FILL, "4bit", torch.bfloat16)
    assert sorted(flux.components_to_quantize) == ["text_encoder_2", "transformer"]
    assert quantization_config(QWEN_EDIT, "8bit", torch.bfloat16).quant_backend == "bitsandbytes_8bit"


def test_a_flux_archive_brings_bitsandbytes_for_quantize_and_an_sd_one_does_not():
    from restyle.package.archive import QUANTIZE_DEP, requirements

    assert QUANTIZE_DEP in requirements(quantizable=True)
    assert "bitsandbytes" not in requirements()


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["sdxl", "flux-fill"])
@pytest.mark.parametrize(("offload", "quantize"), [("", "4bit"), ("model", ""), ("model", "4bit")])
def test_each_switch_runs_a_request_on_the_gpu(family_folder, family, offload, quantize):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from PIL import Image

    from restyle.inpaint import Inpainter, StyleParams, unchanged_outside

    inpainter = Inpainter.from_pretrained(
        str(family_folder(family)), device="cuda", offload=offload, quantize=quantize
    )
    photo, mask = Image.new("RGB", (64, 64), (120, 90, 80)), Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = inpainter.run(photo, mask, StyleParams(prompt="a red dress", steps=2, num_images=1, seed=0))
    assert unchanged_outside(photo, result.images[0], mask)
