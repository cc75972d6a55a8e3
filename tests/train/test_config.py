"""TrainConfig: every bad field is refused by name before any compute; the helpers derive the right values."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from restyle.errors import InvalidParameterError, RestyleError
from restyle.train.config import TrainConfig, parse_masks

PROMPT = "a model in sks long summer travel skirt"


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"instance_prompt": PROMPT, **kw})


def test_defaults_with_a_prompt_pass() -> None:
    config().check()


@pytest.mark.parametrize(
    "kw",
    [
        {"resolution": 64},
        {"resolution": 1024},
        {"mixed_precision": "bf16"},
        {"mixed_precision": "no"},
        {"mode": "lora", "learning_rate": 1e-4},
        {"fit": "pad"},
        {"class_dir": Path("class"), "class_prompt": "a model in a skirt"},
        {"checkpoints_total_limit": None},
        {"checkpoints_total_limit": 1},
        {"checkpointing_steps": 0, "validation_steps": 0, "lr_warmup_steps": 0},
        {"class_dir": Path("class"), "class_prompt": "a model in a skirt", "num_class_images": 0},
        {"max_grad_norm": 0.0},
        {"learning_rate": 1.0},
        {"masks": (("segment", 0.7), ("random", 0.3), ("file", 2.0)), "garment": "the skirt"},
    ],
)
def test_limits_and_valid_combinations_pass(kw: dict) -> None:
    config(**kw).check()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"mode": "full"}, "mode"),
        ({"fit": "stretch"}, "fit"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"lr_scheduler": "step"}, "lr_scheduler"),
        ({"instance_prompt": "   "}, "instance_prompt"),
        ({"resolution": 500}, "resolution"),
        ({"resolution": 56}, "resolution"),
        ({"resolution": 1032}, "resolution"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"train_batch_size": 65}, "train_batch_size"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"max_train_steps": 0}, "max_train_steps"),
        ({"lr_warmup_steps": -1}, "lr_warmup_steps"),
        ({"num_class_images": -1}, "num_class_images"),
        ({"class_steps": 0}, "class_steps"),
        ({"class_steps": 151}, "class_steps"),
        ({"checkpointing_steps": -1}, "checkpointing_steps"),
        ({"validation_steps": -1}, "validation_steps"),
        ({"validation_inference_steps": 0}, "validation_inference_steps"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": 2.0}, "learning_rate"),
        ({"learning_rate": math.nan}, "learning_rate"),
        ({"learning_rate": -1e-4}, "learning_rate"),
        ({"prior_loss_weight": -0.5}, "prior_loss_weight"),
        ({"prior_loss_weight": math.nan}, "prior_loss_weight"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"class_dir": Path("class")}, "class_prompt"),
        ({"checkpoints_total_limit": 0}, "checkpoints_total_limit"),
        ({"masks": ()}, "masks"),
        ({"masks": (("paint", 1.0),)}, "masks"),
        ({"masks": (("random", 0.0),)}, "masks"),
        ({"masks": (("random", -1.0),)}, "masks"),
        ({"masks": (("random", math.inf),)}, "masks"),
        ({"masks": (("random", math.nan),)}, "masks"),
        ({"masks": (("segment", 1.0),)}, "garment"),
        ({"masks": (("random", 0.5), ("segment", 0.5)), "garment": " "}, "garment"),
    ],
)
def test_bad_field_is_named(kw: dict, field: str) -> None:
    with pytest.raises(InvalidParameterError) as err:
        config(**kw).check()
    assert err.value.field == field
    assert field in str(err.value)


def test_message_names_the_bad_value_and_limit() -> None:
    with pytest.raises(InvalidParameterError, match=r"resolution: 500 .*\[64, 1024\]"):
        config(resolution=500).check()
    with pytest.raises(InvalidParameterError, match=r"'fp8'"):
        config(mixed_precision="fp8").check()
    with pytest.raises(InvalidParameterError, match=r"'paint'"):
        config(masks=(("paint", 1.0),)).check()


def test_first_bad_field_is_reported() -> None:
    with pytest.raises(InvalidParameterError) as err:
        config(mode="full", resolution=500).check()
    assert err.value.field == "mode"


def test_negative_seed_is_refused() -> None:
    with pytest.raises(InvalidParameterError) as err:
        config(seed=-1).check()
    assert err.value.field == "seed"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        config().resolution = 768  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("segment=0.7,random=0.3", (("segment", 0.7), ("random", 0.3))),
        ("segment", (("segment", 1.0),)),
        (" segment = 0.7 , , random=0.3 ,", (("segment", 0.7), ("random", 0.3))),
        ("file=2,random", (("file", 2.0), ("random", 1.0))),
        ("", ()),
    ],
)
def test_parse_masks(spec: str, expected: tuple) -> None:
    assert parse_masks(spec) == expected


def test_parse_masks_refuses_a_share_that_is_not_a_number() -> None:
    with pytest.raises(InvalidParameterError, match="'segment=abc'") as err:
        parse_masks("random=0.3,segment=abc")
    assert err.value.field == "masks"


def test_parsed_zero_share_is_refused_by_check() -> None:
    with pytest.raises(InvalidParameterError) as err:
        config(masks=parse_masks("random=0")).check()
    assert err.value.field == "masks"


@pytest.mark.parametrize(
    ("kw", "side"),
    [
        ({}, 256),
        ({"resolution": 768}, 384),
        ({"min_side": 100}, 100),
        ({"min_side": 0}, 0),
    ],
)
def test_smallest_side(kw: dict, side: int) -> None:
    assert config(**kw).smallest_side == side


@pytest.mark.parametrize(
    ("rank", "alpha", "scale"),
    [(4, None, 1.0), (8, None, 1.0), (8, 4.0, 0.5), (4, 16.0, 4.0)],
)
def test_lora_scale_is_alpha_over_rank(rank: int, alpha: float | None, scale: float) -> None:
    assert config(lora_rank=rank, lora_alpha=alpha).scale == pytest.approx(scale)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, False),
        ({"class_dir": Path("c"), "class_prompt": "x", "prior_loss_weight": 0.0}, False),
        ({"class_dir": Path("c"), "class_prompt": "x"}, True),
    ],
)
def test_with_prior(kw: dict, expected: bool) -> None:
    assert config(**kw).with_prior is expected


def test_to_log_is_flat_and_json_ready() -> None:
    c = config(
        class_dir=Path("class"), masks=(("segment", 0.7),), garment="the skirt", train_text_encoder=True
    )
    out = c.to_log()
    assert set(out) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(isinstance(v, (int, float, bool, str)) for v in out.values())
    assert out["resolution"] == 512 and out["learning_rate"] == 2e-6
    assert out["train_text_encoder"] is True
    assert out["class_dir"] == "class"
    assert out["masks"] == str((("segment", 0.7),))
    assert out["mixed_precision"] == "None"
    json.dumps(out)


def test_errors_are_restyle_errors() -> None:
    with pytest.raises(RestyleError):
        config(mode="x").check()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"lora_alpha": 0.0}, "lora_alpha"),
        ({"lora_alpha": -4.0}, "lora_alpha"),
        ({"validation_seeds": tuple(range(9))}, "validation_seeds"),
        ({"validation_seeds": ()}, "validation_seeds"),
        ({"validation_seeds": (-1,)}, "validation_seeds"),
        ({"validation_prompt": "x" * 1001}, "validation_prompt"),
    ],
)
def test_check_refuses_bad_lora_alpha_and_validation(change, field) -> None:
    with pytest.raises(InvalidParameterError) as err:
        TrainConfig(instance_prompt="x", **change).check()
    assert err.value.field == field


def test_str_paths_become_paths() -> None:
    c = TrainConfig(instance_prompt="x", instance_dir="a", class_dir="b", output_dir="o", mask_dir="m")
    assert all(isinstance(v, Path) for v in (c.instance_dir, c.class_dir, c.output_dir, c.mask_dir))
