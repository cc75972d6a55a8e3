"""The reference script's command line (diffusers' train_dreambooth_inpaint.py) runs as it is written.

Every flag of that script is either honoured under its own spelling or refused with a reason; none is
silently ignored. The original design's training command runs verbatim, scaled down only in model,
steps, resolution and class images.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from restyle.cli import app
from restyle.errors import InvalidParameterError, RestyleError

from .conftest import draw_photo

runner = CliRunner()

# every flag of the reference script's argparse, in its order
REFERENCE_FLAGS = (
    "pretrained_model_name_or_path",
    "tokenizer_name",
    "instance_data_dir",
    "class_data_dir",
    "instance_prompt",
    "class_prompt",
    "with_prior_preservation",
    "prior_loss_weight",
    "num_class_images",
    "output_dir",
    "seed",
    "resolution",
    "center_crop",
    "train_text_encoder",
    "train_batch_size",
    "sample_batch_size",
    "num_train_epochs",
    "max_train_steps",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "learning_rate",
    "scale_lr",
    "lr_scheduler",
    "lr_warmup_steps",
    "use_8bit_adam",
    "adam_beta1",
    "adam_beta2",
    "adam_weight_decay",
    "adam_epsilon",
    "max_grad_norm",
    "push_to_hub",
    "hub_token",
    "hub_model_id",
    "logging_dir",
    "mixed_precision",
    "local_rank",
    "checkpointing_steps",
    "resume_from_checkpoint",
)
REFUSED = {"tokenizer_name", "num_train_epochs", "push_to_hub", "hub_token", "hub_model_id", "local_rank"}


def _train_command():
    return typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]


def _value(param) -> list[str]:
    """A valid command-line value for option `param` (none for a flag)."""
    return [] if param.is_flag else ["1"]  # "1" parses as every type the options have


def _parse(args: list[str]):
    return _train_command().make_context("train", ["dreambooth", *args])


def _given(ctx, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def test_every_option_takes_its_snake_case_spelling_in_both_forms() -> None:
    options = [p for p in _train_command().params if p.param_type_name == "option" and p.name != "help"]
    assert len(options) > 50
    for param in options:
        long = max((o for o in param.opts if o.startswith("--")), key=len)
        snake = "--" + long[2:].replace("-", "_")
        value = _value(param)
        forms = [[snake, *value]] + ([[f"{snake}={value[0]}"]] if value else [])
        for args in forms:
            ctx = _parse(args)
            assert _given(ctx, param.name), args


@pytest.mark.parametrize("flag", REFERENCE_FLAGS)
def test_every_reference_flag_is_accepted_by_the_parser(flag: str) -> None:
    param = {
        "pretrained_model_name_or_path": "base",
        "instance_data_dir": "instance_dir",
        "class_data_dir": "class_dir",
    }.get(flag, flag)
    found = next(p for p in _train_command().params if p.name == param)
    ctx = _parse([f"--{flag}", *_value(found)])
    assert _given(ctx, param)


@pytest.mark.parametrize("flag", sorted(REFUSED))
def test_reference_flags_restyle_does_not_take_are_refused_with_a_reason(flag: str, tmp_path: Path) -> None:
    found = next(p for p in _train_command().params if p.name == flag)
    args = ["train", "dreambooth", "--instance-prompt", "sks skirt", f"--{flag}", *_value(found)]
    with pytest.raises(InvalidParameterError) as err:
        runner.invoke(app, args, catch_exceptions=False)
    message = str(err.value)
    assert message.startswith(f"--{flag.replace('_', '-')}: not supported: ") and "\n" not in message
    assert err.value.field == flag


def test_a_refused_flag_is_one_line_without_a_traceback_and_never_echoes_a_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "restyle", "train", "dreambooth", "--instance_prompt=sks skirt"),
            *("--hub_token=hf_SECRET", "--instance_data_dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--hub-token: not supported: restyle does not upload" in done.stderr
    assert "Traceback" not in done.stderr and "hf_SECRET" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """The TrainConfig each `restyle train` would run (the run itself is skipped)."""
    import restyle.train

    configs: list = []

    class Recorder:
        def __init__(self, config, progress_bar=True) -> None:
            configs.append(config)

        def run(self):
            raise typer.Exit(0)

    monkeypatch.setattr(restyle.train, "Trainer", Recorder)
    return configs


def _invoke(args: list[str]):
    return runner.invoke(app, args, catch_exceptions=False)


def test_reference_spellings_give_the_same_run_as_restyle_flags(
    captured, tiny_models, instance_dir, tmp_path
):
    base, out, cls = str(tiny_models["inpainter"]), str(tmp_path / "out"), str(tmp_path / "class")
    reference = ["train", "dreambooth", f"--pretrained_model_name_or_path={base}", "--instance_data_dir"]
    reference += [
        str(instance_dir),
        "--class_data_dir",
        cls,
        "--with_prior_preservation",
        "--output_dir",
        out,
    ]
    reference += ["--instance_prompt", "sks skirt", "--class_prompt=skirt", "--center_crop", "--scale_lr"]
    reference += [
        "--adam_beta1=0.8",
        "--adam_beta2",
        "0.99",
        "--adam_weight_decay",
        "0",
        "--adam_epsilon=1e-6",
    ]
    reference += ["--sample_batch_size", "2", "--logging_dir=tb", "--lr_scheduler", "cosine"]
    reference += ["--lr_warmup_steps", "5"]
    ours = ["train", "dreambooth", "--base", base, "--instance-dir", str(instance_dir), "--class-dir", cls]
    ours += ["-o", out, "--instance-prompt", "sks skirt", "--class-prompt", "skirt", "--fit", "center"]
    ours += ["--scale-lr", "--adam-beta1", "0.8", "--adam-beta2", "0.99", "--adam-weight-decay", "0"]
    ours += ["--adam-epsilon", "1e-6", "--sample-batch-size", "2", "--logging-dir", "tb"]
    ours += ["--lr-scheduler", "cosine", "--lr-warmup-steps", "5"]
    assert _invoke(reference).exit_code == 0 and _invoke(ours).exit_code == 0
    first, second = captured
    assert first == second
    assert (first.fit, first.scale_lr, first.adam_beta1, first.adam_beta2) == ("center", True, 0.8, 0.99)
    assert (first.adam_weight_decay, first.adam_epsilon, first.sample_batch_size) == (0.0, 1e-6, 2)
    assert first.logs == tmp_path / "out" / "tb" and first.with_prior


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--with_prior_preservation"], "--with-prior-preservation: needs --class-dir"),
        (["--center_crop", "--fit", "pad"], "--center-crop: means --fit center, but --fit pad"),
    ],
)
def test_reference_flags_that_cannot_be_honoured_together_are_refused(captured, tiny_models, extra, message):
    args = [
        "train",
        "dreambooth",
        "--base",
        str(tiny_models["inpainter"]),
        "--instance-prompt",
        "sks",
        *extra,
    ]
    with pytest.raises(RestyleError, match=message):
        _invoke(args)
    assert captured == []


def test_honoured_reference_flags_take_effect(train_config, tmp_path):
    """--scale_lr scales the rate, the Adam flags reach the optimizer, --logging_dir moves the log."""
    from restyle.train import Trainer
    from restyle.train.tracking import read_log

    config = train_config(
        max_train_steps=1,
        train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-4,
        scale_lr=True,
        adam_beta1=0.8,
        adam_beta2=0.95,
        adam_epsilon=1e-5,
        adam_weight_decay=0.0,
        logging_dir=Path("tb"),
    )
    trainer = Trainer(config, progress_bar=False)
    trainer.run()
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(4e-4)  # 1e-4 x batch 2 x accumulation 2 x 1 process
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.8, 0.95), 1e-5, 0.0)
    rows = [row for row in read_log(config.output_dir / "tb") if "loss" in row]
    assert [row["lr"] for row in rows] == [pytest.approx(4e-4)]
    assert not (config.output_dir / "logs").exists()


def test_center_fit_ignores_the_garment_mask() -> None:
    from restyle.train.data import fit_square

    image, mask = draw_photo(0, (96, 192))  # tall: crop and center differ in where they cut
    cropped, _ = fit_square(image, None, 64, "crop", anchor=mask)
    centred, centred_mask = fit_square(image, mask, 64, "center")
    middle, _ = fit_square(image, None, 64, "crop")
    assert np.array_equal(np.asarray(centred), np.asarray(middle))
    assert not np.array_equal(np.asarray(centred), np.asarray(cropped))
    assert centred_mask is not None and centred_mask.size == (64, 64)


def test_class_images_in_batches_keep_their_seeds(inpainter, tmp_path):
    from restyle.outputs import read_metadata
    from restyle.train.prior import generate_class_images

    kw = {"prompt": "a model in a skirt", "size": 64, "steps": 2, "seed": 7}
    one = generate_class_images(inpainter, tmp_path / "one", [0, 1, 2], batch=1, **kw)
    two = generate_class_images(inpainter, tmp_path / "two", [0, 1, 2], batch=2, **kw)
    assert [p.name for p in two] == ["generated-00000.png", "generated-00001.png", "generated-00002.png"]
    assert [read_metadata(p)["seed"] for p in two] == [7, 8, 9]
    for a, b in zip(one, two, strict=True):  # a seed draws the same image alone or in a batch
        from PIL import Image

        diff = np.abs(np.asarray(Image.open(a), float) - np.asarray(Image.open(b), float))
        assert diff.mean() < 2.0


def _env() -> dict[str, str]:
    drop = (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_",
        "ACCELERATE_",
    )  # a plain run, accelerate's defaults
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def test_the_original_training_command_runs_verbatim(tiny_models, instance_dir, tmp_path):
    """SEED-NOTES' reference run, word for word, through a shell: only the model, resolution (512 -> 64),
    class images (200 -> 2) and steps (800 -> 2) are scaled down."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from restyle.inpaint import Inpainter, StyleParams

    base, out, cls = tiny_models["inpainter"], tmp_path / "skirt-model", tmp_path / "class"
    line = (
        f"{shlex.quote(sys.executable)} -m restyle train dreambooth "
        f"--pretrained_model_name_or_path={shlex.quote(str(base))} --train_text_encoder "
        f"--instance_data_dir={shlex.quote(str(instance_dir))} --class_data_dir={shlex.quote(str(cls))} "
        f"--output_dir={shlex.quote(str(out))} --with_prior_preservation --prior_loss_weight=1.0 "
        '--instance_prompt="A supermodel poses in long summer travel skirt, photorealistic" '
        '--class_prompt="A supermodel poses in skirt, photorealistic" --resolution=64 '
        "--train_batch_size=1 --use_8bit_adam --gradient_checkpointing --learning_rate=2e-6 "
        '--lr_scheduler="constant" --lr_warmup_steps=0 --num_class_images=2 --max_train_steps=2'
    )
    pytest.importorskip("bitsandbytes", reason="--use_8bit_adam needs bitsandbytes")
    done = subprocess.run(["bash", "-c", line], env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dreambooth: 2 steps" in done.stdout
    summary = json.loads((out / "restyle_train.json").read_text())["config"]
    assert summary["use_8bit_adam"] and summary["gradient_checkpointing"] and summary["train_text_encoder"]
    assert summary["class_prompt"] == "A supermodel poses in skirt, photorealistic"
    assert len(list(cls.glob("generated-*.png"))) == 2  # prior preservation ran, with generated images
    for part, name in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model")):
        before, after = (
            load_file(base / part / f"{name}.safetensors"),
            load_file(out / part / f"{name}.safetensors"),
        )
        assert max(float((before[k] - after[k]).abs().max()) for k in before) > 0, part
    # the output loads in diffusers as it is ...
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(out), safety_checker=None)
    assert pipe.unet.config.in_channels == 9
    image, mask = draw_photo(0)
    pixels = pipe(
        "a skirt",
        image=image,
        mask_image=mask,
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert pixels.shape == (1, 64, 64, 3) and np.isfinite(pixels).all()
    # ... and through restyle (what `restyle style --inpainter OUT` loads)
    result = Inpainter.from_pretrained(str(out), device="cpu").run(
        image, mask, StyleParams(prompt="a skirt", steps=2, num_images=1, seed=1, size=64)
    )
    assert result.images[0].size == image.size
