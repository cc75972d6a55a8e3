from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from restyle.errors import InvalidImageError, InvalidParameterError, ModelLoadError
from restyle.inpaint import Inpainter, StyleParams, unchanged_outside
from restyle.inpaint.pipeline import CancelledError


def _case(w, h, seed):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    mask = np.zeros((h, w), dtype=np.uint8)
    x0, y0 = int(rng.integers(0, w - 2)), int(rng.integers(0, h - 2))
    mask[y0 : y0 + int(rng.integers(2, h)), x0 : x0 + int(rng.integers(2, w))] = 255
    soft = np.asarray(Image.fromarray(mask).resize((w, h)))
    return img, Image.fromarray(soft, mode="L")


FAST = dict(steps=2, num_images=1, guidance=6.5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(8, 200), h=st.integers(8, 200), seed=st.integers(0, 1000), crop=st.booleans())
def test_outside_mask_is_bit_identical_and_size_kept(inpainter, w, h, seed, crop):
    from restyle.segment.ops import feather

    img, mask = _case(w, h, seed)
    soft = Image.fromarray(feather(np.asarray(mask) > 0, 3), mode="L")
    res = inpainter.run(img, soft, StyleParams(prompt="a red dress", seed=seed, crop=crop, **FAST))
    out = res.images[0]
    assert out.size == img.size and out.mode == "RGB"
    assert unchanged_outside(img, out, soft)
    assert res.work_size[0] % 8 == 0 and res.work_size[1] % 8 == 0


@pytest.mark.parametrize("size", [(64, 96), (96, 64), (45, 77)])
def test_portrait_landscape_odd_keep_size_and_native_side(inpainter, size):
    img, mask = _case(*size, seed=3)
    res = inpainter.run(img, mask, StyleParams(prompt="linen skirt", seed=1, crop=False, **FAST))
    assert res.images[0].size == size
    assert max(res.work_size) == inpainter.native_size == 64


def test_same_seed_same_images_different_seed_different(inpainter):
    img, mask = _case(80, 60, seed=5)
    p = StyleParams(prompt="a denim jacket", steps=2, num_images=2, seed=42)
    a, b = inpainter.run(img, mask, p), inpainter.run(img, mask, p)
    assert a.seeds == b.seeds == [42, 43]
    for x, y in zip(a.images, b.images):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(a.images[1]))
    c = inpainter.run(img, mask, StyleParams(prompt="a denim jacket", steps=2, num_images=1, seeds=(7,)))
    assert not np.array_equal(np.asarray(c.images[0]), np.asarray(a.images[0]))


def test_random_seeds_are_returned_and_reproduce(inpainter):
    img, mask = _case(64, 64, seed=9)
    first = inpainter.run(img, mask, StyleParams(prompt="silk blouse", **FAST))
    again = inpainter.run(img, mask, StyleParams(prompt="silk blouse", seeds=tuple(first.seeds), **FAST))
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))


@pytest.mark.parametrize("scheduler", ["euler_a", "dpm++", "ddim", "unipc"])
def test_schedulers_run(inpainter, scheduler):
    img, mask = _case(64, 64, seed=2)
    res = inpainter.run(img, mask, StyleParams(prompt="wool coat", scheduler=scheduler, seed=0, **FAST))
    assert unchanged_outside(img, res.images[0], mask)


def test_progress_and_cancel(inpainter):
    img, mask = _case(64, 64, seed=4)
    seen = []
    inpainter.run(
        img,
        mask,
        StyleParams(prompt="x", steps=3, num_images=1, seed=0),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(CancelledError):
        inpainter.run(img, mask, StyleParams(prompt="x", steps=3, num_images=1, seed=0), cancel=lambda: True)


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("steps", 0, r"\[1, 150\]"),
        ("steps", 151, r"\[1, 150\]"),
        ("guidance", 31.0, r"\[0.0, 30.0\]"),
        ("guidance", float("nan"), "number"),
        ("num_images", 9, r"\[1, 8\]"),
        ("num_images", 0, r"\[1, 8\]"),
        ("size", 100, "multiple of 8"),
        ("size", 4096, r"\[64, 2048\]"),
        ("scheduler", "magic", "choose one of"),
        ("seed", -1, "out of range"),
        ("strength", 0.0, r"range \(0, 1\]"),
        ("prompt", "", "must not be empty"),
        ("prompt", "x" * 1001, "limit is 1000"),
        ("steps", 2.5, "integer"),
    ],
)
def test_out_of_range_parameters_name_field_and_limit(inpainter, field, value, limit):
    img, mask = _case(64, 64, seed=1)
    kwargs = {"prompt": "a dress", **FAST, field: value}
    with pytest.raises(InvalidParameterError, match=rf"{field}: .*{limit}") as info:
        inpainter.run(img, mask, StyleParams(**kwargs))
    assert info.value.field == field


def test_mask_of_another_size_and_empty_mask(inpainter):
    img, _ = _case(64, 64, seed=1)
    with pytest.raises(InvalidImageError, match="mask is 64x63"):
        inpainter.run(img, Image.new("L", (64, 63), 255), StyleParams(prompt="x", **FAST))
    with pytest.raises(InvalidImageError, match="mask is empty"):
        inpainter.run(img, Image.new("L", (64, 64), 0), StyleParams(prompt="x", **FAST))


def test_a_non_inpainting_model_is_refused():
    from restyle.inpaint.families.sd import SDAdapter

    pipe = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(in_channels=4)), scheduler=None)
    with pytest.raises(ModelLoadError, match="4 input channels"):
        Inpainter(pipe, "some/txt2img", adapter=SDAdapter(pipe))


def test_a_pipeline_class_restyle_does_not_run_is_named():
    pipe = SimpleNamespace(unet=None)
    with pytest.raises(ModelLoadError, match="SimpleNamespace is not a pipeline restyle runs"):
        Inpainter(pipe, "some/thing")
