"""The shared segment() logic on a deterministic fake backend, and CLIPSeg on tiny weights."""

import numpy as np
import pytest
from PIL import Image

from restyle.errors import InvalidParameterError, NoGarmentFoundError
from restyle.segment import BaseSegmenter, MaskParams


class FakeSegmenter(BaseSegmenter):
    """Garment prompts light up the left half, 'face' the top-left corner, anything else nothing."""

    def __init__(self):
        self.seen: list[str] = []

    def logits(self, image, texts):
        self.seen.extend(texts)
        w, h = image.size
        out = np.full((len(texts), h, w), -8.0, dtype=np.float32)
        for i, t in enumerate(texts):
            if "dress" in t:
                out[i, :, : w // 2] = 8.0
            elif "face" in t:
                out[i, : h // 4, : w // 4] = 8.0
        return out


def _img(w=80, h=120):
    return Image.new("RGB", (w, h), (120, 120, 120))


def test_union_protect_and_templates():
    seg = FakeSegmenter()
    params = MaskParams(
        grow=0, feather=0, protect=("face",), protect_margin=0, templates=("{}", "a photo of {}.")
    )
    res = seg.segment(_img(), ["the dress", "the belt"], params=params)
    mask = np.asarray(res.mask)
    assert mask.shape == (120, 80)
    assert (mask[40:, :40] == 255).all() and (mask[:, 40:] == 0).all()
    assert (mask[:30, :20] == 0).all()  # protected face
    assert res.prompt_areas["the belt"] == 0.0 and res.confidence > 0.99
    assert "a photo of the dress." in seg.seen and "face" in seg.seen


def test_feathered_edge_never_enters_protected_region():
    res = FakeSegmenter().segment(
        _img(), "the dress", params=MaskParams(protect=("face",), feather=6, grow=4)
    )
    mask = np.asarray(res.mask)
    assert (mask[:30, :20] == 0).all()
    assert 0 < mask[60, 44] < 255  # soft ramp outside the garment


def test_nothing_found_is_an_error_naming_the_prompt():
    with pytest.raises(NoGarmentFoundError, match="no garment found for 'the hat'"):
        FakeSegmenter().segment(_img(), "the hat")


def test_protected_everything_is_an_error():
    seg = FakeSegmenter()
    with pytest.raises(NoGarmentFoundError, match="outside the protected regions"):
        seg.segment(_img(), "the dress", protect=["the dress"])


@pytest.mark.parametrize(
    "bad",
    [
        dict(threshold=1.5),
        dict(grow=10_000),
        dict(feather=-1),
        dict(activation="relu"),
        dict(templates=("no placeholder",)),
    ],
)
def test_bad_params_name_the_field(bad):
    field = next(iter(bad))
    with pytest.raises(InvalidParameterError, match=field):
        FakeSegmenter().segment(_img(), "the dress", params=MaskParams(**bad))


def test_empty_prompt_is_an_error():
    with pytest.raises(InvalidParameterError, match="garment"):
        FakeSegmenter().segment(_img(), ["  "])


@pytest.mark.parametrize("size", [(64, 64), (97, 61), (50, 130)])
def test_clipseg_logits_match_the_photo_size(segmenter, size):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    logits = segmenter.logits(img, ["the dress", "hair"])
    assert logits.shape == (2, size[1], size[0]) and np.isfinite(logits).all()


def test_clipseg_mask_is_deterministic_and_sized(segmenter, photo):
    params = MaskParams(threshold=0.05, protect=())
    a = segmenter.segment(photo, "the dress", params=params)
    b = segmenter.segment(photo, "the dress", params=params)
    assert a.mask.size == photo.size and a.mask.mode == "L"
    assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask)) and 0 < a.area <= 1
