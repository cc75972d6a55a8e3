"""`restyle train`, `restyle captions` and `restyle style --lora` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restyle.cli import app

from .conftest import draw_photo

runner = CliRunner()


def _invoke(args):
    return runner.invoke(app, args, catch_exceptions=False)


def _train_args(tiny_models, instance_dir, out, *extra):
    return [
        "train",
        "lora",
        "--base",
        str(tiny_models["inpainter"]),
        "--instance-dir",
        str(instance_dir),
        "--instance-prompt",
        "a model in sks striped skirt",
        "-o",
        str(out),
        "--resolution",
        "64",
        "--max-train-steps",
        "3",
        "--learning-rate",
        "5e-2",
        "--validation-steps",
        "0",
        "--validation-inference-steps",
        "2",
        "--masks",
        "file",
        "--mixed-precision",
        "no",
        "-q",
        *extra,
    ]


@pytest.fixture
def trained_lora(tiny_models, instance_dir, tmp_path):
    result = _invoke(_train_args(tiny_models, instance_dir, tmp_path / "lora"))
    assert result.exit_code == 0, result.output
    assert "lora: 3 steps" in result.output
    return tmp_path / "lora" / "pytorch_lora_weights.safetensors"


def _style(tiny_models, tmp_path, out, *extra):
    img, mask = draw_photo(1)
    img.save(tmp_path / "p.png")
    mask.save(tmp_path / "m.png")
    args = ["style", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "-p", "a striped skirt"]
    args += ["--raw", "--steps", "2", "-n", "1", "--seed", "4", "--size", "64"]
    args += ["--inpainter", str(tiny_models["inpainter"]), "-o", str(out), *extra]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    return np.asarray(Image.open(out / "restyle-0-seed4.png"), dtype=float)


def test_style_with_a_trained_lora(trained_lora, tiny_models, tmp_path):
    base = _style(tiny_models, tmp_path, tmp_path / "base")
    styled = _style(tiny_models, tmp_path, tmp_path / "styled", "--lora", str(trained_lora))
    off = _style(
        tiny_models, tmp_path, tmp_path / "off", "--lora", str(trained_lora.parent), "--lora-scale", "0"
    )
    assert np.abs(styled - base).mean() > 0.5
    assert np.array_equal(off, base)
    meta = json.loads((tmp_path / "styled" / "restyle.json").read_text())
    assert meta["images"][0]["style"] == "lora"


def test_style_names_a_missing_lora(tiny_models, tmp_path):
    img, mask = draw_photo(0)
    img.save(tmp_path / "p.png")
    mask.save(tmp_path / "m.png")
    args = ["style", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "-p", "skirt", "--raw"]
    done = subprocess.run(
        [sys.executable, "-m", "restyle", *args, "--lora", str(tmp_path / "nope.safetensors")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--lora" in done.stderr and "nope.safetensors" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "sideways", "--instance-prompt", "x"], "MODE: must be one of dreambooth, lora"),
        (["train", "lora"], "--instance-prompt: required"),
        (["train", "lora", "--instance-prompt", "x", "--resolution", "100"], "--resolution: 100"),
        (["train", "lora", "--instance-prompt", "x", "--masks", "segment"], "--garment:"),
        (["train", "lora", "--instance-prompt", "x", "--masks", "paint=1"], "--masks: must be one of"),
        (["train", "lora", "--instance-prompt", "x", "--class-dir", "c"], "--class-prompt: required"),
        (["train", "lora", "--instance-prompt", "x", "--validation-seeds", "1,a"], "--validation-seeds:"),
        (["train", "lora", "--instance-prompt", "x", "--learning-rate", "0"], "--learning-rate: 0.0"),
        (
            ["train", "lora", "--instance-prompt", "x", "--report-to", "nonsense"],
            "--report-to: unknown tracker",
        ),
    ],
)
def test_bad_flags_are_named_without_a_traceback(args, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "restyle", *args, "--instance-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_captions_template_then_training_captions(instance_dir, tmp_path):
    from restyle.train.data import scan_instances

    result = _invoke(["captions", str(instance_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (instance_dir / "metadata.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rows] == [f"look-{i}.png" for i in range(6)]
    rows[0]["attributes"].update(style="A-line", color="red", fabric="linen")
    rows[1] = {"file_name": "look-1.png", "text": "a model in sks skirt on a beach"}
    (instance_dir / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = scan_instances(instance_dir, "a model in sks skirt", min_side=32, min_images=1)
    assert examples[0].caption == "a model in sks skirt, A-line, red, linen"
    assert examples[1].caption == "a model in sks skirt on a beach"
    assert examples[2].caption == "a model in sks skirt"
    assert runner.invoke(app, ["captions", str(instance_dir)]).exit_code != 0  # no silent overwrite
