"""Training fixtures: a small garment-photo set and a helper that trains the tiny inpainter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

SKIRT = [(0.3, 0.55), (0.7, 0.55), (0.85, 0.95), (0.15, 0.95)]  # skirt polygon, as fractions of w/h


def draw_photo(i: int, size: tuple[int, int] = (96, 144)) -> tuple[Image.Image, Image.Image]:
    """A figure in a skirt whose colour and pattern vary with `i`, and the skirt's mask."""
    w, h = size
    img = Image.new("RGB", size, (200 + 7 * i % 40, 196, 186))
    d = ImageDraw.Draw(img)
    d.ellipse((int(0.38 * w), int(0.05 * h), int(0.62 * w), int(0.22 * h)), fill=(224, 182, 150))
    d.rectangle((int(0.32 * w), int(0.22 * h), int(0.68 * w), int(0.55 * h)), fill=(40, 60, 150))
    poly = [(int(x * w), int(y * h)) for x, y in SKIRT]
    d.polygon(poly, fill=((60 * i) % 256, 120, 40 + (30 * i) % 200))
    for k in range(i % 3 + 1):  # stripes, a different number per photo
        y = int((0.62 + 0.1 * k) * h)
        d.line([(int(0.2 * w), y), (int(0.8 * w), y)], fill=(250, 250, 250), width=2)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(poly, fill=255)
    return img, mask


@pytest.fixture
def instance_dir(tmp_path: Path) -> Path:
    """Six photos with user masks in masks/."""
    folder = tmp_path / "instance"
    (folder / "masks").mkdir(parents=True)
    for i in range(6):
        img, mask = draw_photo(i)
        img.save(folder / f"look-{i}.png")
        mask.save(folder / "masks" / f"look-{i}.png")
    return folder


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run gets its own accelerate state (it is a process-wide singleton)."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


@pytest.fixture
def train_config(tiny_models: dict[str, Path], instance_dir: Path, tmp_path: Path):
    """A fast TrainConfig on the tiny inpainter at 64 px; tests override fields with `replace`."""
    from restyle.train import TrainConfig

    def make(**overrides):
        base = TrainConfig(
            mode="lora",
            base=str(tiny_models["inpainter"]),
            instance_dir=instance_dir,
            instance_prompt="a model in sks striped skirt",
            output_dir=tmp_path / "out",
            resolution=64,
            max_train_steps=4,
            learning_rate=1e-3,
            checkpointing_steps=0,
            validation_steps=0,
            validation_inference_steps=2,
            masks=(("file", 1.0), ("random", 1.0)),
            mixed_precision="no",
        )
        if overrides.get("class_dir") is not None:  # class settings without class images are refused
            overrides = {"class_steps": 2, **overrides}
        return dataclasses.replace(base, **overrides)

    return make


def train(config):
    from restyle.train import Trainer

    return Trainer(config, progress_bar=False).run()
