"""The inference benchmark's harness on CPU: architectures, instruments, cases, report, CLI, speed-ups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from restyle.errors import InvalidParameterError
from restyle.inpaint.fast import FastOptions, apply_fast, unfuse
from restyle.perf.archs import ARCHS, SD_VAE, parameter_count
from restyle.perf.measure import StepClock, Timing, matmul_peak, time_fn, unet_flops


def _meta_params(cls: Any, **kwargs: Any) -> int:
    import torch

    with torch.device("meta"):
        return parameter_count(cls(**kwargs))


@pytest.mark.parametrize(
    ("arch", "unet", "text_m"),
    # the published text-to-image UNets have 859,520,964 and 865,910,724 parameters; the inpainting
    # ones add 5 input channels to conv_in: 5 x 320 x 3 x 3 = 14,400 more
    [("sd15", 859_535_364, 123.06), ("sd2", 865_925_124, 340.39)],
)
def test_full_size_layouts_match_the_published_models(arch: str, unet: int, text_m: float) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    a = ARCHS[arch]
    assert _meta_params(UNet2DConditionModel, **a.unet) == unet
    text = CLIPTextConfig(**a.text, vocab_size=a.vocab_size, max_position_embeddings=77)
    assert _meta_params(CLIPTextModel, config=text) / 1e6 == pytest.approx(text_m, abs=0.01)
    assert _meta_params(AutoencoderKL, **SD_VAE) / 1e6 == pytest.approx(83.65, abs=0.01)
    assert a.unet["in_channels"] == 9 and a.native == 512


def test_clipseg_rd64_refined_layout() -> None:
    import torch

    from restyle.perf.archs import build_segmenter_model

    with torch.device("meta"):
        model, processor = build_segmenter_model(ARCHS["sd2"])
    vision = model.config.vision_config
    assert (vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (16, 768, 12)  # ViT-B/16
    assert model.config.reduce_dim == 64 and model.config.use_complex_transposed_convolution
    assert processor.image_processor.size == {"height": 352, "width": 352}  # CLIPSeg's input side


def test_time_fn_takes_the_median_of_the_repeats() -> None:
    calls = []
    timing = time_fn(lambda: calls.append(1), "cpu", warmup=2, repeats=5)
    assert len(calls) == 7 and len(timing.runs) == 5
    assert Timing((1.0, 3.0, 2.0)).median == 2.0
    assert Timing((1.0, 3.0, 2.0)).spread == 1.0


def test_unet_flops_scale_with_batch_and_area_and_count_attention(tiny_models: dict[str, Path]) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    unet = UNet2DConditionModel.from_pretrained(tiny_models["inpainter"] / "unet")
    one = unet_flops(unet, 1, (8, 8), seq_len=77)
    assert unet_flops(unet, 2, (8, 8), seq_len=77) == 2 * one  # every op is per sample
    assert unet_flops(unet, 1, (16, 16), seq_len=77) > 3 * one  # convolutions grow with the area
    # counted on the CPU itself, the fused attention kernel has no FLOP formula: the meta count is larger
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(torch.randn(1, 9, 8, 8), torch.tensor([500]), encoder_hidden_states=torch.randn(1, 77, 32))
    assert one > counter.get_total_flops() > 0


def test_matmul_peak_is_a_plausible_rate() -> None:
    import torch

    small = matmul_peak("cpu", torch.float32, n=64, repeats=3)
    large = matmul_peak("cpu", torch.float32, n=512, repeats=3)
    assert large > small  # a bigger matmul uses the cores better: the peak is measured, not assumed


def test_step_clock_measures_between_steps() -> None:
    import time

    clock = StepClock("cpu")
    for step in range(4):
        clock.callback(None, step, None, {})
        time.sleep(0.02)
    assert 0.015 < clock.per_step() < 0.2
    with pytest.raises(ValueError):
        StepClock("cpu").per_step()


def test_fast_options_parse_and_refuse() -> None:
    assert FastOptions.parse("channels_last, fuse_qkv") == FastOptions(channels_last=True, fuse_qkv=True)
    assert FastOptions.parse("all") == FastOptions(True, True, True, True)
    assert FastOptions.parse("buckets").label() == "buckets"
    assert FastOptions.parse("").label() == "plain"
    with pytest.raises(InvalidParameterError, match="fast: unknown option"):
        FastOptions.parse("channels_last,flash")


def _run(inpainter: Any, photo: Any, mask: Any) -> np.ndarray:
    from restyle.inpaint.params import StyleParams

    params = StyleParams(prompt="a red linen skirt", steps=3, num_images=1, seed=5, size=64)
    return np.asarray(inpainter.run(photo, mask, params).images[0], dtype=np.int16)


def test_speedups_keep_the_output_and_lora_still_works(
    tiny_models: dict[str, Path], tmp_path: Path, photo: Any, box_mask: Any
) -> None:
    from restyle.inpaint.pipeline import Inpainter
    from restyle.models.tiny import build_tiny_lora

    plain = Inpainter.from_pretrained(str(tiny_models["inpainter"]), device="cpu")
    fast = Inpainter.from_pretrained(
        str(tiny_models["inpainter"]), device="cpu", fast="channels_last,fuse_qkv"
    )
    assert fast.pipe.unet.original_attn_processors is not None  # fused
    a, b = _run(plain, photo, box_mask), _run(fast, photo, box_mask)
    assert np.abs(a - b).max() <= 2  # same computation, float rounding only
    # a LoRA patches the separate q/k/v projections: loading one unfuses, and the style applies
    lora = build_tiny_lora(tiny_models["inpainter"], tmp_path / "lora")
    fast.load_style("s", str(lora))
    plain.load_style("s", str(lora))
    assert fast.pipe.unet.original_attn_processors is None
    from restyle.inpaint.params import StyleParams

    params = StyleParams(prompt="a red linen skirt", steps=3, num_images=1, seed=5, size=64)
    styled_fast = np.asarray(fast.run(photo, box_mask, params, style="s").images[0], dtype=np.int16)
    styled_plain = np.asarray(plain.run(photo, box_mask, params, style="s").images[0], dtype=np.int16)
    assert np.abs(styled_fast - styled_plain).max() <= 2
    assert np.abs(styled_fast - b).max() > 10  # the style changed the picture
    unfuse(fast.pipe)  # idempotent


def test_apply_fast_plain_changes_nothing(tiny_models: dict[str, Path]) -> None:
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_models["inpainter"])
    processors = dict(pipe.unet.attn_processors)
    apply_fast(pipe, FastOptions())
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == {
        k: type(v) for k, v in processors.items()
    }
    assert getattr(pipe.unet, "original_attn_processors", None) is None  # not fused
    assert pipe.unet.conv_in.weight.is_contiguous()  # not channels_last
    apply_fast(pipe, FastOptions(channels_last=True))
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_with_styles_and_fuse_with_slicing_are_refused(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from restyle.errors import ModelLoadError
    from restyle.inpaint.pipeline import Inpainter
    from restyle.models.tiny import build_tiny_lora

    with pytest.raises(InvalidParameterError, match="fuse_qkv replaces the sliced attention"):
        Inpainter.from_pretrained(
            str(tiny_models["inpainter"]), device="cpu", fast="fuse_qkv", attention_slicing=True
        )
    compiled = Inpainter.from_pretrained(str(tiny_models["inpainter"]), device="cpu", fast="compile")
    lora = build_tiny_lora(tiny_models["inpainter"], tmp_path / "lora")
    with pytest.raises(ModelLoadError, match="cannot be used with fast=compile"):
        compiled.load_style("s", str(lora))
    assert compiled.styles == {}


@pytest.fixture(scope="module")
def tiny_bench() -> Any:
    from restyle.perf.cases import Bench, BenchConfig

    return Bench(BenchConfig.for_cpu("tiny"))


def test_cases_time_both_recipes_on_the_same_inputs(tiny_bench: Any) -> None:
    case = tiny_bench.case_end_to_end(1, with_mask=False)
    assert case.images == 3 and case.baseline is not None
    assert len(case.restyle.runs) == len(case.baseline.runs) == tiny_bench.config.repeats
    # restyle works on the crop at the photo's 2:3 shape, the original on a square
    assert case.extra["baseline_work"] == [192, 192] and case.extra["restyle_work"] == [128, 192]
    same = tiny_bench.case_same_geometry(1)
    assert same.extra["restyle_work"] == same.extra["baseline_work"] == [192, 192]
    photo, mask = __import__("restyle.perf.cases", fromlist=["sample_inputs"]).sample_inputs(192)
    base = tiny_bench.run_baseline(photo, mask, 192, 2, 3)
    mine = tiny_bench.run_restyle(photo, mask, 192, 2, 3)
    assert [im.size for im in base] == [(192, 192)] * 3  # the original squashes to a square
    assert [im.size for im in mine.images] == [photo.size] * 3  # restyle keeps the photo's shape


def test_equivalence_and_loop_figures(tiny_bench: Any) -> None:
    eq = tiny_bench.equivalence()
    assert eq["passed"] and eq["finite"] and eq["psnr_db"] > 40 and eq["max_abs_diff"] <= 4
    assert eq["noise_floor_psnr_db"] == float("inf")  # the CPU is deterministic
    loop = tiny_bench.loop_efficiency(2)
    mine, base = loop["restyle"], loop["baseline"]
    assert mine["work_size"] == [80, 128] and base["work_size"] == [128, 128]
    assert mine["unet_flops_per_step"] < base["unet_flops_per_step"]  # fewer pixels, fewer FLOPs
    for side in (mine, base):
        assert 0 < side["s_per_step"] * loop["steps"] < side["total_s"]  # the loop is part of the run


def test_equivalence_fails_on_a_different_model(tiny_bench: Any) -> None:
    import torch

    unet = tiny_bench.restyle.pipe.unet
    saved = {k: v.clone() for k, v in unet.state_dict().items()}
    try:
        with torch.no_grad():
            unet.conv_out.weight.mul_(3.0)  # a "speed-up" that changes the computation
        eq = tiny_bench.equivalence()
        assert not eq["passed"] and eq["psnr_db"] < eq["psnr_required_db"]
    finally:
        unet.load_state_dict(saved)


def test_requests_case_batches_what_the_original_runs_call_by_call(tiny_bench: Any) -> None:
    case = tiny_bench.case_requests(3)
    assert case.images == 3 and case.name.startswith("3 requests x 1 image")
    assert case.baseline is not None and case.restyle.median > 0 and case.baseline.median > 0


def test_segmentation_and_host_cases(tiny_bench: Any) -> None:
    assert tiny_bench.case_segment().restyle.median > 0
    host = tiny_bench.case_host()
    assert host.baseline is None and len(host.restyle.runs) >= 5


def test_cli_writes_json_and_its_own_section(tmp_path: Path) -> None:
    from restyle.cli import app

    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# Performance\n\n<!-- bench:train -->\nkeep me\n<!-- /bench:train -->\n")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", "infer", "--arch", "tiny", "--repeats", "1", "--json", str(out), "--write", str(doc)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    names = [c["name"] for c in data["cases"]]
    assert any(n.startswith("mask + 1 image") for n in names) and any(n.startswith("3 images") for n in names)
    assert any(n.startswith("batch 2") for n in names) and any("segmentation" in n for n in names)
    assert any(n.startswith("2 requests x 1 image") for n in names)
    assert data["environment"]["torch"] and data["equivalence"]["psnr_db"] > 40
    text = doc.read_text()
    assert "keep me" in text and "<!-- bench:infer-tiny -->" in text and "| case |" in text
    assert "A CPU run" in text  # the caveat travels with a CPU table


def test_cli_refuses_unknown_arch_and_fast() -> None:
    from restyle.cli import app

    bad = CliRunner().invoke(app, ["bench", "infer", "--arch", "sd3"])
    assert isinstance(bad.exception, InvalidParameterError) and "arch: unknown 'sd3'" in str(bad.exception)
    bad = CliRunner().invoke(app, ["bench", "infer", "--arch", "tiny", "--fast", "flash"])
    assert isinstance(bad.exception, InvalidParameterError) and "fast: unknown option" in str(bad.exception)


@pytest.mark.gpu
def test_the_harness_on_cuda() -> None:
    """Run by a GPU session (`pytest -m gpu`): CUDA events, peaks above resident memory, fp16 equivalence."""
    import dataclasses

    import torch

    from restyle.perf.cases import Bench, BenchConfig

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    bench = Bench(dataclasses.replace(BenchConfig.for_cpu("tiny"), device="cuda"))
    case = bench.case_end_to_end(0, with_mask=True)
    assert case.restyle.peak_bytes is not None and case.restyle.peak_bytes > 0
    assert all(r > 0 for r in case.restyle.runs)
    assert bench.equivalence()["passed"]
    assert bench.loop_efficiency(2)["restyle"]["s_per_step"] > 0


@pytest.mark.gpu
def test_no_host_sync_inside_the_denoising_loop_on_cuda() -> None:
    """Run by a GPU session: from the first step's end to the last step's end, nothing in restyle's loop
    (UNet, guidance, sampler step, our callback) may wait for the GPU; CUDA's sync debug mode raises if so."""
    import dataclasses

    import torch

    from restyle.perf.cases import Bench, BenchConfig, sample_inputs

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    bench = Bench(dataclasses.replace(BenchConfig.for_cpu("tiny"), device="cuda"))
    photo, mask = sample_inputs(64)
    steps = 6

    def watch(done: int, total: int) -> None:
        torch.cuda.set_sync_debug_mode("error" if done < total else "default")

    try:
        bench.restyle.run(photo, mask, bench.params(64, steps, 2), progress=watch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
