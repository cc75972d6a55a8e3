"""Every inpainter family keeps restyle's guarantees, on its tiny model through the real diffusers class:
bit-exact outside the mask at any size, the size kept, seeds reproducible alone and in a batch, LoRA on and
off, progress and cancel, and its own parameter ranges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from restyle.errors import InvalidParameterError
from restyle.inpaint import StyleParams, unchanged_outside
from restyle.inpaint.families import FAMILIES, family_for
from restyle.inpaint.pipeline import CancelledError
from tests.conftest import FAMILIES as NAMES

FAST = dict(steps=2, num_images=1)


def _case(w: int, h: int, seed: int) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    mask = np.zeros((h, w), dtype=np.uint8)
    x0, y0 = int(rng.integers(0, w - 2)), int(rng.integers(0, h - 2))
    mask[y0 : y0 + int(rng.integers(2, h)), x0 : x0 + int(rng.integers(2, w))] = 255
    return img, Image.fromarray(mask, mode="L")


def _same(a: Image.Image, b: Image.Image) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


@pytest.mark.parametrize("family", NAMES)
def test_the_family_comes_from_model_index(family_folder, family_inpainter, family):
    assert family_for(str(family_folder(family))).name == family
    inpainter = family_inpainter(family)
    assert inpainter.family.name == family
    assert inpainter.native_size == 64  # the tiny models' own, from their marker or config
    info = inpainter.describe()
    assert info["family"] == family and info["native_size"] == 64 and info["license"]


@pytest.mark.parametrize("family", NAMES)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(8, 160), h=st.integers(8, 160), seed=st.integers(0, 1000), crop=st.booleans())
def test_outside_the_mask_is_bit_identical_and_the_size_kept(family_inpainter, family, w, h, seed, crop):
    from restyle.segment.ops import feather

    inpainter = family_inpainter(family)
    img, mask = _case(w, h, seed)
    soft = Image.fromarray(feather(np.asarray(mask) > 0, 3), mode="L")
    res = inpainter.run(img, soft, StyleParams(prompt="a red dress", seed=seed, crop=crop, **FAST))
    out = res.images[0]
    assert out.size == img.size and out.mode == "RGB"
    assert unchanged_outside(img, out, soft)
    multiple = inpainter.family.multiple
    assert res.work_size[0] % multiple == 0 and res.work_size[1] % multiple == 0
    assert res.metadata(0)["family"] == family


@pytest.mark.parametrize("family", NAMES)
def test_same_seed_same_image_other_seed_other_image(family_inpainter, family):
    inpainter = family_inpainter(family)
    img, mask = _case(80, 60, seed=5)
    params = StyleParams(prompt="a denim jacket", steps=2, num_images=2, seed=42)
    a, b = inpainter.run(img, mask, params), inpainter.run(img, mask, params)
    assert a.seeds == b.seeds == [42, 43]
    assert all(_same(x, y) for x, y in zip(a.images, b.images))
    assert not _same(a.images[0], a.images[1])


@pytest.mark.parametrize("family", NAMES)
def test_image_i_of_a_request_is_its_seed_alone(family_inpainter, family):
    inpainter = family_inpainter(family)
    img, mask = _case(64, 64, seed=3)
    both = inpainter.run(img, mask, StyleParams(prompt="a wool coat", seed=42, steps=2, num_images=2))
    second = inpainter.run(img, mask, StyleParams(prompt="a wool coat", seed=43, steps=2, num_images=1))
    diff = np.abs(np.asarray(both.images[1], dtype=int) - np.asarray(second.images[0], dtype=int))
    assert both.seeds[1] == second.seeds[0] == 43 and diff.max() <= 2  # rounding of the batch size only


@pytest.mark.parametrize("family", [f for f in NAMES if FAMILIES[f].batch_requests])
def test_a_seed_gives_its_image_alone_or_in_a_batch(family_inpainter, family):
    inpainter = family_inpainter(family)
    img, mask = _case(64, 64, seed=1)
    other, other_mask = _case(64, 64, seed=2)
    alone = inpainter.run(img, mask, StyleParams(prompt="a silk blouse", seed=9, crop=False, **FAST))
    first = inpainter.prepare(img, mask, StyleParams(prompt="a silk blouse", seed=9, crop=False, **FAST))
    second = inpainter.prepare(other, other_mask, StyleParams(prompt="jeans", seed=3, crop=False, **FAST))
    batched = inpainter.run_batch([first, second])
    assert batched[0].batch == 2
    diff = np.abs(np.asarray(alone.images[0], dtype=int) - np.asarray(batched[0].images[0], dtype=int))
    assert diff.max() <= 2  # floating-point rounding of the batch size only


def test_a_family_that_cannot_batch_requests_never_shares_a_key(family_inpainter):
    inpainter = family_inpainter("qwen-edit")
    img, mask = _case(64, 64, seed=1)
    params = StyleParams(prompt="make the dress red", seed=1, crop=False, **FAST)
    a, b = inpainter.prepare(img, mask, params), inpainter.prepare(img, mask, params)
    assert a.key != b.key
    with pytest.raises(ValueError, match="cannot share a batch"):
        inpainter.run_batch([a, b])


@pytest.mark.parametrize("family", NAMES)
def test_progress_counts_every_step_and_cancel_stops(family_inpainter, family):
    inpainter = family_inpainter(family)
    img, mask = _case(64, 48, seed=4)
    seen: list[tuple[int, int]] = []
    inpainter.run(
        img,
        mask,
        StyleParams(prompt="a coat", seed=1, steps=3, num_images=1),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [d for d, _ in seen] == [1, 2, 3] and {t for _, t in seen} == {3}
    with pytest.raises(CancelledError):
        inpainter.run(
            img, mask, StyleParams(prompt="a coat", seed=1, steps=3, num_images=1), cancel=lambda: True
        )


@pytest.mark.parametrize("family", NAMES)
def test_defaults_are_the_familys_own(family_inpainter, family):
    inpainter = family_inpainter(family)
    img, mask = _case(48, 48, seed=6)
    res = inpainter.run(img, mask, StyleParams(prompt="a hat", seed=1, num_images=1, steps=2))
    limits = FAMILIES[family].limits
    assert res.params.guidance == limits.guidance_default
    assert res.metadata(0)["guidance"] == limits.guidance_default
    from restyle.prompts.vocabulary import DEFAULT_NEGATIVE

    assert res.params.negative_prompt == (DEFAULT_NEGATIVE if limits.negative_prompt else "")
    assert inpainter.resolve(StyleParams(prompt="x")).steps == limits.steps_default


def test_each_family_checks_its_own_ranges(family_inpainter):
    img, mask = _case(48, 48, seed=6)
    flux, sd, qwen = (family_inpainter(f) for f in ("flux-fill", "sd", "qwen-edit"))
    flux.prepare(img, mask, StyleParams(prompt="x", guidance=30.0))  # FLUX Fill's own value
    with pytest.raises(InvalidParameterError, match=r"guidance: 30.5 is out of range \[0.0, 30.0\]"):
        sd.prepare(img, mask, StyleParams(prompt="x", guidance=30.5))
    with pytest.raises(InvalidParameterError, match=r"guidance: 0.5 is out of range \[1.0, 100.0\]"):
        flux.prepare(img, mask, StyleParams(prompt="x", guidance=0.5))
    with pytest.raises(InvalidParameterError, match="negative_prompt: this model has no negative prompt"):
        flux.prepare(img, mask, StyleParams(prompt="x", negative_prompt="ugly"))
    with pytest.raises(InvalidParameterError, match="scheduler: 'ddim' is not available"):
        qwen.prepare(img, mask, StyleParams(prompt="x", scheduler="ddim"))
    with pytest.raises(InvalidParameterError, match="size: 72 must be a multiple of 16"):
        flux.prepare(img, mask, StyleParams(prompt="x", size=72))
    assert sd.prepare(img, mask, StyleParams(prompt="x", size=72)).work_size[0] == 72


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux-fill"])
def test_a_lora_style_switches_on_and_off(family_folder, family, tmp_path):
    from restyle.inpaint import Inpainter

    folder = family_folder(family)
    if family == "sd":
        from restyle.models.tiny import build_tiny_lora

        lora = build_tiny_lora(folder, tmp_path / "lora")
    else:
        from restyle.models.tiny_families import build_tiny_lora_for

        lora = build_tiny_lora_for(family, folder, tmp_path / "lora")
    inpainter = Inpainter.from_pretrained(str(folder), device="cpu")  # its own: styles stay loaded
    img, mask = _case(64, 64, seed=8)
    params = StyleParams(prompt="a scarf", seed=5, crop=False, **FAST)
    base = inpainter.run(img, mask, params).images[0]
    inpainter.load_style("test", str(lora))
    styled = inpainter.run(img, mask, params, style="test")
    assert styled.extra["style"] == "test"
    assert not _same(base, styled.images[0])
    assert _same(base, inpainter.run(img, mask, params).images[0])  # off again: the base model's image
    assert unchanged_outside(img, styled.images[0], mask)


@pytest.mark.parametrize(("asked", "sent", "ran"), [(1.0, (0.9999, 5), 4), (0.5, (0.5, 4), 2)])
def test_sdxl_gets_its_recommended_strength_for_a_full_repaint(
    family_inpainter, asked, sent, ran, monkeypatch
):
    """SDXL's pipeline default (0.9999): at exactly 1.0 its masked photo would not enter the start latents.
    A full repaint still runs every step asked for; a lower strength runs that share of them."""
    inpainter = family_inpainter("sdxl")
    pipe_cls = type(inpainter.pipe)
    seen: list[float] = []
    real_call = pipe_cls.__call__

    def spy(self, *args, **kwargs):
        seen.append((kwargs["strength"], kwargs["num_inference_steps"]))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(pipe_cls, "__call__", spy)
    img, mask = _case(64, 64, 3)
    steps: list[int] = []
    params = StyleParams(prompt="x", strength=asked, steps=4, num_images=1)
    result = inpainter.run(img, mask, params, progress=lambda d, t: steps.append(d))
    assert seen == [sent]
    assert len(result.images) == 1 and steps == list(range(1, ran + 1))
