"""The CLI and Python flows end to end on tiny models (offline)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restyle.cli import app, main
from restyle.outputs import read_metadata

runner = CliRunner()


@pytest.fixture
def photo_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


@pytest.fixture
def model_flags(tiny_models):
    return ["--segmenter", str(tiny_models["segmenter"]), "--inpainter", str(tiny_models["inpainter"])]


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_models_tiny_command(tmp_path):
    _ok(["models", "tiny", "--out", str(tmp_path / "m")])
    assert (tmp_path / "m" / "inpainter" / "model_index.json").is_file()
    assert (tmp_path / "m" / "segmenter" / "config.json").is_file()


def test_mask_then_style_from_the_cli(tmp_path, photo_file, model_flags, photo):
    seg = model_flags[:2]
    _ok(
        [
            "mask",
            str(photo_file),
            "-g",
            "the dress",
            "-g",
            "the skirt",
            "--no-protect",
            "--threshold",
            "0.05",
            "-o",
            str(tmp_path / "mask.png"),
            "--overlay",
            str(tmp_path / "overlay.png"),
            *seg,
        ]
    )
    mask = Image.open(tmp_path / "mask.png")
    assert mask.size == photo.size and mask.mode == "L" and mask.getbbox() is not None
    out = tmp_path / "out"
    _ok(
        [
            "style",
            str(photo_file),
            "--mask",
            str(tmp_path / "mask.png"),
            "-p",
            "casual vacation look",
            "--type",
            "skirt",
            "--color",
            "red",
            "--fabric",
            "linen",
            "-n",
            "3",
            "--seed",
            "11",
            "--steps",
            "2",
            "-o",
            str(out),
            *model_flags,
        ]
    )
    sidecar = json.loads((out / "restyle.json").read_text())
    assert [i["seed"] for i in sidecar["images"]] == [11, 12, 13]
    for item in sidecar["images"]:
        img = Image.open(out / item["file"])
        assert img.size == photo.size
        meta = read_metadata(out / item["file"])
        assert meta["seed"] == item["seed"] and "red linen skirt" in meta["prompt"] and meta["steps"] == 2
        keep = np.asarray(mask) == 0
        assert np.array_equal(np.asarray(img)[keep], np.asarray(photo)[keep])
    assert Image.open(out / "restyle-grid.png").width > 4 * Image.open(out / "restyle-grid.png").height * 0.6


def test_style_with_garment_text_writes_everything(tmp_path, photo_file, model_flags):
    out = tmp_path / "o"
    _ok(
        [
            "style",
            str(photo_file),
            "-g",
            "the dress",
            "--no-protect",
            "--threshold",
            "0.05",
            "-p",
            "denim jacket",
            "--raw",
            "-n",
            "2",
            "--seed",
            "3",
            "--steps",
            "2",
            "-o",
            str(out),
            "--stem",
            "look",
            *model_flags,
        ]
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["look-0-seed3.png", "look-1-seed4.png", "look-grid.png", "look-mask.png", "look.json"]
    meta = read_metadata(out / "look-0-seed3.png")
    assert (
        meta["prompt"] == "denim jacket" and meta["mask_prompts"] == ["the dress"] and meta["preview"] is True
    )


def test_python_flow(tiny_models, photo):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler
    from restyle.inpaint import StyleParams, unchanged_outside
    from restyle.segment import MaskParams

    engine = Restyler(
        ModelConfig(
            segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]), device="cpu"
        )
    )
    result, mres = engine.style(
        photo,
        StyleParams(prompt="a red linen skirt", steps=2, num_images=2, seed=1),
        garment="the dress",
        mask_params=MaskParams(threshold=0.05, protect=()),
    )
    assert len(result.images) == 2 and mres is not None and engine.preview
    assert all(unchanged_outside(photo, im, result.mask) for im in result.images)


def _main(monkeypatch, capsys, args):
    monkeypatch.setattr(sys, "argv", ["restyle", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            ["style", "{photo}", "-g", "dress", "-p", "x", "--steps", "500"],
            "steps: 500 is out of range [1, 150]",
        ),
        (["style", "{photo}", "-g", "dress", "-p", "x", "-n", "20"], "num_images: 20 is out of range [1, 8]"),
        (
            ["style", "{photo}", "-g", "dress", "-p", "x", "--guidance", "99"],
            "guidance: 99.0 is out of range",
        ),
        (["style", "{photo}", "-p", "x"], "give exactly one"),
        (["style", "{bad}", "-g", "dress", "-p", "x"], "IMAGE: not a readable image"),
        (["style", "{photo}", "-g", "dress", "-p", "x", "--inpainter", "./no/such/model"], "no such folder"),
        (
            ["style", "{photo}", "--mask", "{small}", "-p", "x"],
            "--mask: mask is 10x10 but the image is 96x144",
        ),
        (["mask", "{photo}", "-g", "dress", "--threshold", "2"], "threshold: 2.0 is out of range"),
    ],
)
def test_bad_input_is_one_clean_line(monkeypatch, capsys, tmp_path, photo_file, args, expect):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    Image.new("L", (10, 10), 255).save(tmp_path / "small.png")
    subs = {
        "{photo}": str(photo_file),
        "{bad}": str(tmp_path / "bad.png"),
        "{small}": str(tmp_path / "small.png"),
    }
    code, err = _main(monkeypatch, capsys, [subs.get(a, a) for a in args])
    assert code == 2 and expect in err and "Traceback" not in err


def test_missing_weights_error_from_a_real_process(tmp_path, photo_file):
    proc = subprocess.run(
        [sys.executable, "-m", "restyle.cli", "style", str(photo_file), "-g", "dress", "-p", "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "restyle models pull" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_runs_in_preview_mode(tmp_path):
    result = _ok(["demo", "-o", str(tmp_path / "d"), "--steps", "2", "-n", "2"])
    assert "PREVIEW MODE" in result.output
    assert (tmp_path / "d" / "demo-grid.png").is_file() and (tmp_path / "d" / "input.png").is_file()
