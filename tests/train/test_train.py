"""Both training modes end to end on the tiny inpainter (CPU, 64 px, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from restyle.errors import InvalidImageError, InvalidParameterError
from restyle.inpaint import Inpainter
from restyle.outputs import read_metadata
from restyle.train.tracking import read_log

from .conftest import draw_photo, train

LAYOUT = {"feature_extractor", "scheduler", "text_encoder", "tokenizer", "unet", "vae", "model_index.json"}


def _max_change(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _losses(out: Path) -> list[float]:
    return [row["loss"] for row in read_log(out / "logs") if "loss" in row]


def _rerun(inpainter: Inpainter, folder: Path, **style) -> list[np.ndarray]:
    """Re-make the final validation images from the recipe in their PNG metadata."""
    from restyle.images import load_image, load_mask
    from restyle.inpaint import StyleParams

    metas = [read_metadata(p) for p in sorted(folder.glob("final-seed*.png"))]
    image = load_image(metas[0]["image"])
    mask = load_mask(folder / "mask.png", size=image.size)
    params = StyleParams(
        prompt=metas[0]["prompt"],
        negative_prompt=metas[0]["negative_prompt"],
        steps=metas[0]["steps"],
        num_images=len(metas),
        seeds=tuple(m["seed"] for m in metas),
        size=max(metas[0]["work_size"]),
    )
    return [np.asarray(im) for im in inpainter.run(image, mask, params, **style).images]


def test_dreambooth_with_prior_and_text_encoder(train_config, tiny_models, tmp_path):
    class_dir = tmp_path / "class"
    config = train_config(
        mode="dreambooth",
        class_dir=class_dir,
        class_prompt="a model in a skirt",
        num_class_images=3,
        train_text_encoder=True,
        checkpointing_steps=2,
        validation_steps=2,
    )
    result = train(config)
    out = config.output_dir
    # class images were generated from the base model, with their recipe
    generated = sorted(class_dir.glob("generated-*.png"))
    assert len(generated) == 3
    assert read_metadata(generated[0])["prompt"] == "a model in a skirt"
    # a diffusers folder at the output root, with no intermediate checkpoints left
    assert {p.name for p in out.iterdir()} >= LAYOUT
    assert not list(out.glob("checkpoint-*")) and not list(out.glob("*.partial"))
    assert result.steps == 4 and len(_losses(out)) == 4
    assert (out / "validation" / "step-000002-seed0.png").is_file()
    assert (out / "validation" / "final-seed1.png").is_file()
    summary = json.loads((out / "restyle_train.json").read_text())
    assert summary["mode"] == "dreambooth" and summary["steps"] == 4
    # both the UNet and the text encoder moved away from the base
    base = Path(tiny_models["inpainter"])
    for part, name in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model")):
        before = load_file(base / part / f"{name}.safetensors")
        after = load_file(out / part / f"{name}.safetensors")
        assert _max_change(before, after) > 0, part


def test_dreambooth_output_loads_and_changes_the_result(train_config, inpainter, tmp_path):
    config = train_config(mode="dreambooth", max_train_steps=6)
    train(config)
    tuned = Inpainter.from_pretrained(str(config.output_dir), device="cpu")
    image, mask = draw_photo(0)
    from restyle.inpaint import StyleParams

    params = StyleParams(prompt="a striped skirt", steps=2, num_images=1, seed=3, size=64)
    before = np.asarray(inpainter.run(image, mask, params).images[0], dtype=float)
    after = np.asarray(tuned.run(image, mask, params).images[0], dtype=float)
    assert np.abs(after - before).mean() > 0.5
    outside = np.asarray(mask) == 0  # still nothing outside the mask is touched
    assert np.array_equal(after[outside], np.asarray(image, dtype=float)[outside])


def test_dreambooth_output_packages(train_config, tmp_path):
    from restyle.package.archive import build_archive, inspect_archive

    config = train_config(mode="dreambooth", max_train_steps=2, keep_checkpoints=True, checkpointing_steps=1)
    train(config)
    assert (config.output_dir / "checkpoint-1").is_dir()  # kept on request
    assert (config.output_dir / "checkpoint-2").is_dir()  # the last step too: a longer run resumes it
    build_archive(config.output_dir, tmp_path / "model.tar.gz")
    names = inspect_archive(tmp_path / "model.tar.gz")
    assert "model_index.json" in names and "unet/config.json" in names
    assert not [n for n in names if n.startswith(("checkpoint-", "validation/", "logs/", "masks/"))]


def test_lora_round_trip_with_text_encoder_and_prior(train_config, tiny_models, tmp_path):
    config = train_config(
        mode="lora",
        class_dir=tmp_path / "class",
        class_prompt="a model in a skirt",
        num_class_images=2,
        train_text_encoder=True,
        learning_rate=5e-2,  # large, so the adapter visibly changes the tiny model's output
        max_train_steps=5,
    )
    result = train(config)
    lora = config.output_dir / "pytorch_lora_weights.safetensors"
    assert result.output == lora
    keys = load_file(lora).keys()
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    assert not any("base_layer" in k for k in keys)  # adapters only, not another copy of the model
    # a fresh base with the adapter reproduces the images made at the end of training, exactly
    fresh = Inpainter.from_pretrained(str(tiny_models["inpainter"]), device="cpu")
    plain = _rerun(fresh, config.output_dir / "validation")
    fresh.load_style("sks", str(lora))
    styled = _rerun(fresh, config.output_dir / "validation", style="sks")
    trained = [
        np.asarray(Image.open(p)) for p in sorted((config.output_dir / "validation").glob("final-seed*"))
    ]
    for got, want in zip(styled, trained, strict=True):
        assert np.array_equal(got, want)
    # switching it off returns exactly the base model's images
    unloaded = _rerun(fresh, config.output_dir / "validation", style=None)
    for got, want in zip(unloaded, plain, strict=True):
        assert np.array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(styled, plain, strict=True))


@pytest.mark.parametrize(
    "mode, extra",
    [
        ("dreambooth", {}),
        ("lora", {"lora_rank": 8, "lora_targets": ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")}),
    ],
)
def test_loss_falls_when_overfitting(train_config, instance_dir, mode, extra):
    for extra_photo in list(instance_dir.glob("look-[1-5].png")):  # one photo: pure memorisation
        extra_photo.unlink()
    config = train_config(
        mode=mode,
        max_train_steps=60,
        learning_rate=1e-3 if mode == "dreambooth" else 1e-2,
        min_images=1,
        **extra,
    )
    train(config)
    losses = _losses(config.output_dir)
    assert len(losses) == 60
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.7 * first, (first, last)  # measured: dreambooth 0.90 -> 0.30, lora 0.98 -> 0.53


def test_resume_after_a_crash_matches_uninterrupted(train_config, tmp_path, monkeypatch):
    import dataclasses

    from accelerate.state import AcceleratorState

    from restyle.train.trainer import Trainer

    full = train_config(mode="dreambooth", max_train_steps=6, output_dir=tmp_path / "full")
    train(full)
    AcceleratorState._reset_state(True)
    crashing = train_config(
        mode="dreambooth", max_train_steps=6, checkpointing_steps=3, output_dir=tmp_path / "split"
    )
    real_step = Trainer._micro_step

    def crash_at_5(self, batch, step, micro):
        if step == 4:  # the fifth step: after checkpoint-3, before the end
            raise RuntimeError("simulated crash")
        return real_step(self, batch, step, micro)

    monkeypatch.setattr(Trainer, "_micro_step", crash_at_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashing)
    assert (crashing.output_dir / "checkpoint-3").is_dir()
    assert not (crashing.output_dir / "model_index.json").exists()  # no half-written output
    monkeypatch.setattr(Trainer, "_micro_step", real_step)
    AcceleratorState._reset_state(True)
    result = train(dataclasses.replace(crashing, resume_from_checkpoint="latest"))
    assert result.resumed_from == 3 and result.steps == 6
    name = "unet/diffusion_pytorch_model.safetensors"
    assert _max_change(load_file(full.output_dir / name), load_file(crashing.output_dir / name)) == 0.0
    steps = [row["step"] for row in read_log(crashing.output_dir / "logs") if "loss" in row]
    assert steps == [1, 2, 3, 4, 4, 5, 6]  # the crashed run logged step 4 before dying; the resume redid it


@pytest.mark.parametrize(
    "change, key",
    [
        ({"lora_rank": 8}, "lora_rank"),
        ({"lora_alpha": 2.0}, "lora_alpha"),
        ({"learning_rate": 1e-5}, "learning_rate"),
        ({"use_8bit_adam": True}, "use_8bit_adam"),
        ({"seed": 5}, "seed"),
    ],
)
def test_resume_refuses_a_different_run(train_config, change, key):
    import dataclasses

    first = train_config(max_train_steps=2, checkpointing_steps=1, keep_checkpoints=True)
    train(first)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    other = dataclasses.replace(first, max_train_steps=4, resume_from_checkpoint="latest", **change)
    with pytest.raises(InvalidParameterError) as err:
        train(other)
    assert err.value.field == "resume_from_checkpoint" and key in str(err.value)


def test_a_base_saved_in_fp16_trains_in_fp32(train_config, tiny_models, tmp_path):
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    half = tmp_path / "half"
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(tiny_models["inpainter"]), safety_checker=None)
    pipe.to(torch.float16).save_pretrained(half)
    result = train(train_config(base=str(half), train_text_encoder=True, max_train_steps=2))
    assert result.steps == 2 and np.isfinite(result.final_loss)


def test_prior_preservation_without_class_images_is_refused(train_config, tmp_path):
    (tmp_path / "empty").mkdir()
    config = train_config(class_dir=tmp_path / "empty", class_prompt="a skirt", num_class_images=0)
    with pytest.raises(InvalidParameterError) as err:
        train(config)
    assert err.value.field == "class_dir" and "--num-class-images" in str(err.value)


def test_a_failed_final_validation_keeps_the_model(train_config, monkeypatch):
    from restyle.errors import RestyleError
    from restyle.train.validation import Validator

    def broken(self, parts, tag, autocast=None):
        raise RestyleError("validation broke")

    monkeypatch.setattr(Validator, "run", broken)
    config = train_config(mode="dreambooth", max_train_steps=2)
    train(config)
    assert (config.output_dir / "model_index.json").is_file()


def test_mask_files_are_checked_before_any_model_loads(train_config, instance_dir, tmp_path):
    from PIL import Image as PILImage

    PILImage.new("L", (50, 50), 255).save(instance_dir / "masks" / "look-1.png")  # a square: another shape
    (instance_dir / "masks" / "look-2.png").write_bytes(b"not a png")
    config = train_config(base=str(tmp_path / "no-such-model"))
    with pytest.raises(InvalidImageError) as err:
        train(config)
    assert err.value.field == "mask_dir"
    assert "look-1.png" in str(err.value) and "look-2.png" in str(err.value)


def test_bf16_and_gradient_checkpointing_on_cpu(train_config, tiny_models, tmp_path):
    import shutil

    base = tmp_path / "base"  # the tiny base with another sampler than the one validation switches to
    shutil.copytree(tiny_models["inpainter"], base)
    sched = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    sched["_class_name"] = "PNDMScheduler"
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    index = json.loads((base / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "PNDMScheduler"]
    (base / "model_index.json").write_text(json.dumps(index))
    config = train_config(
        base=str(base),
        mode="dreambooth",
        mixed_precision="bf16",
        gradient_checkpointing=True,
        max_train_steps=2,
        validation_steps=1,
    )
    train(config)
    out = config.output_dir
    unet = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert {str(t.dtype) for t in unet.values()} == {"torch.float32"}  # saved like the base model
    # the parts training ran in bf16 are saved bit-exact from the base, with the base's own sampler
    for part, name in (("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        before, after = (
            load_file(base / part / f"{name}.safetensors"),
            load_file(out / part / f"{name}.safetensors"),
        )
        assert _max_change(before, after) == 0.0, part
    assert json.loads((out / "model_index.json").read_text())["scheduler"][1] == "PNDMScheduler"


def test_fp16_on_cpu_is_refused(train_config):
    with pytest.raises(InvalidParameterError) as err:
        train(train_config(mixed_precision="fp16"))
    assert err.value.field == "mixed_precision"


def test_8bit_adam(train_config):
    config = train_config(use_8bit_adam=True, max_train_steps=2)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(InvalidParameterError) as err:
            train(config)
        assert err.value.field == "use_8bit_adam" and "pip install" in str(err.value)
    else:
        result = train(config)
        assert result.steps == 2


def test_bad_images_are_named_before_any_model_loads(train_config, instance_dir, tmp_path):
    (instance_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (20, 30)).save(instance_dir / "thumb.jpg")
    config = train_config(base=str(tmp_path / "no-such-model"))  # loading it would fail differently
    with pytest.raises(InvalidImageError) as err:
        train(config)
    assert err.value.field == "instance_dir"
    assert "broken.png" in str(err.value) and "thumb.jpg" in str(err.value)
    assert not config.output_dir.exists()


def test_segment_masks_from_the_garment_prompt(train_config, monkeypatch, tmp_path):
    from restyle.segment.base import BaseSegmenter

    class SkirtFinder(BaseSegmenter):
        """Finds 'the skirt' exactly where the photos have it; nothing for anything else."""

        def logits(self, image, texts):
            _, mask = draw_photo(0, image.size)
            hit = np.where(np.asarray(mask) > 0, 8.0, -8.0).astype(np.float32)
            return np.stack([hit if "skirt" in t else np.full_like(hit, -8.0) for t in texts])

    monkeypatch.setattr("restyle.segment.load_segmenter", lambda *a, **k: SkirtFinder())
    config = train_config(masks=(("segment", 1.0),), garment="the skirt", max_train_steps=2)
    train(config)
    cached = sorted((config.output_dir / "masks").glob("the-skirt-*/*.png"))
    assert len(cached) == 6
    _, want = draw_photo(0)
    got = np.asarray(Image.open(cached[0])) > 127
    want = np.asarray(want) > 0
    assert (got & want).sum() / want.sum() > 0.95  # the cached mask is the skirt ...
    assert got.sum() < 2 * want.sum()  # ... grown a little by the usual refinement, not the whole photo
    # the validation mask is the first photo's user mask (user masks win over segmenter ones)
    assert (config.output_dir / "validation" / "mask.png").is_file()
