import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from restyle.inpaint.crop import composite, crop_box, fit_size, prepare_crop


@pytest.mark.parametrize(
    ("w", "h", "side", "expect"),
    [
        (512, 512, 512, (512, 512)),
        (600, 900, 768, (512, 768)),
        (1000, 50, 512, (512, 24)),
        (9, 9, 64, (64, 64)),
    ],
)
def test_fit_size_keeps_aspect_in_multiples_of_8(w, h, side, expect):
    assert fit_size(w, h, side) == expect


def _random_case(data, max_side=120):
    w = data.draw(st.integers(8, max_side), label="w")
    h = data.draw(st.integers(8, max_side), label="h")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(data.draw(st.integers(1, 3), label="blobs")):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = rng.integers(x0, w) + 1, rng.integers(y0, h) + 1
        mask[y0:y1, x0:x1] = rng.integers(1, 256)  # soft values too
    return img, Image.fromarray(mask, mode="L")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_crop_box_contains_mask_and_composite_keeps_outside(data):
    img, mask = _random_case(data)
    long_side = data.draw(st.sampled_from([64, 128, 512]), label="long_side")
    box = crop_box(mask, long_side, context=0.25)
    bx = mask.getbbox()
    assert box[0] <= bx[0] and box[1] <= bx[1] and box[2] >= bx[2] and box[3] >= bx[3]
    assert 0 <= box[0] < box[2] <= img.width and 0 <= box[1] < box[3] <= img.height
    work_img, work_mask, size = prepare_crop(img, mask, box, long_side)
    assert size[0] % 8 == 0 and size[1] % 8 == 0 and work_img.size == size == work_mask.size
    noise = Image.fromarray(np.full((size[1], size[0], 3), 7, dtype=np.uint8))
    out = composite(img, noise, mask, box)
    keep = np.asarray(mask) == 0
    assert out.size == img.size
    assert np.array_equal(np.asarray(out)[keep], np.asarray(img)[keep])
    full = np.asarray(mask) == 255
    assert (np.asarray(out)[full] == 7).all()
