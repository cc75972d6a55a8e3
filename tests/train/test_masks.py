"""Training masks: random shapes, the validation box, the per-image source draw and cached segmenter masks."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle.errors import NoGarmentFoundError
from restyle.train.data import Example
from restyle.train.masks import cache_name, centre_box, choose_source, random_mask, segment_masks


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- random_mask / centre_box --------------------------------------------------------------------------


def test_random_mask_shape_and_determinism() -> None:
    a = random_mask(64, rng(3))
    assert a.shape == (64, 64) and a.dtype == bool
    assert np.array_equal(a, random_mask(64, rng(3)))
    assert not all(np.array_equal(a, random_mask(64, rng(s))) for s in range(4, 8))


def test_random_mask_covers_a_quarter_to_nine_tenths_of_each_side() -> None:
    kinds = set()
    for seed in range(60):
        m = random_mask(64, rng(seed))
        ys, xs = np.nonzero(m)
        assert len(xs), f"seed {seed}: empty mask"
        w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        assert 15 <= w <= 58 and 15 <= h <= 58, (seed, w, h)
        kinds.add("box" if m.sum() == w * h else "ellipse")
    assert kinds == {"box", "ellipse"}


@pytest.mark.parametrize(("size", "lo", "hi"), [(64, 16, 48), (8, 2, 6), (65, 16, 49)])
def test_centre_box_is_the_middle_half(size: int, lo: int, hi: int) -> None:
    box = centre_box(size)
    expected = np.zeros((size, size), bool)
    expected[lo:hi, lo:hi] = True
    assert box.dtype == bool and np.array_equal(box, expected)


# -- choose_source -------------------------------------------------------------------------------------


def shares(mix, available, n: int = 2000, seed: int = 0) -> dict[str, float]:
    r = rng(seed)
    counts = Counter(choose_source(mix, available, r) for _ in range(n))
    return {k: v / n for k, v in counts.items()}


def test_choose_source_follows_the_shares() -> None:
    got = shares((("segment", 0.7), ("random", 0.3)), {"random", "segment"})
    assert set(got) == {"segment", "random"}
    assert got["segment"] == pytest.approx(0.7, abs=0.04)


def test_choose_source_renormalises_over_what_the_image_has() -> None:
    got = shares((("segment", 0.5), ("file", 0.3), ("random", 0.2)), {"random", "file"})
    assert set(got) == {"file", "random"}
    assert got["file"] == pytest.approx(0.6, abs=0.04)


def test_choose_source_only_source_available() -> None:
    assert shares((("segment", 1.0),), {"random", "segment"}, n=50) == {"segment": 1.0}


@pytest.mark.parametrize("available", [{"random"}, set(), {"random", "segment"}])
def test_choose_source_falls_back_to_random(available: set[str]) -> None:
    assert shares((("file", 0.6), ("file", 0.4)), available, n=20) == {"random": 1.0}


def test_choose_source_is_deterministic() -> None:
    mix = (("segment", 1.0), ("file", 1.0), ("random", 1.0))
    av = {"random", "segment", "file"}
    draws = [choose_source(mix, av, rng(9)) for _ in range(3)]
    assert len(set(draws)) == 1
    r1, r2 = rng(5), rng(5)
    assert [choose_source(mix, av, r1) for _ in range(30)] == [choose_source(mix, av, r2) for _ in range(30)]


# -- segment_masks -------------------------------------------------------------------------------------


class FakeSegmenter:
    """A mask whose white box depends on the photo's colour; no garment in grey photos."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, image: Image.Image) -> Image.Image:
        colour = image.getpixel((0, 0))
        self.calls.append(colour)
        if colour == (128, 128, 128):
            raise NoGarmentFoundError("nothing found", field="garment")
        mask = Image.new("L", image.size, 0)
        mask.paste(255, (0, 0, 1 + colour[0] // 32, image.size[1]))
        return mask


def photo(path: Path, colour: tuple[int, int, int]) -> Example:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).save(path)
    return Example(path, "caption")


def load(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def test_segment_masks_writes_one_png_per_found_garment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    examples = [
        photo(tmp_path / "a.png", (64, 0, 0)),
        photo(tmp_path / "b.jpg", (128, 128, 128)),
        photo(tmp_path / "c.png", (192, 0, 0)),
    ]
    seg, cache = FakeSegmenter(), tmp_path / "out" / "masks" / "the-skirt"
    with caplog.at_level(logging.WARNING, logger="restyle.train.masks"):
        found = segment_masks(examples, seg, cache, load)
    a, c = cache / cache_name(tmp_path / "a.png"), cache / cache_name(tmp_path / "c.png")
    assert found == {tmp_path / "a.png": a, tmp_path / "c.png": c}
    assert sorted(p.name for p in cache.iterdir()) == sorted([a.name, c.name])
    for path, width in ((a, 3), (c, 7)):
        m = np.asarray(Image.open(path))
        assert m.shape == (12, 16)
        assert m[:, :width].all() and not m[:, width:].any()
    assert "b.jpg" in caplog.text and "a.png" not in caplog.text


def test_segment_masks_reuses_the_cache(tmp_path: Path) -> None:
    examples = [photo(tmp_path / "a.png", (64, 0, 0)), photo(tmp_path / "b.png", (128, 128, 128))]
    cache = tmp_path / "cache"
    first = segment_masks(examples, FakeSegmenter(), cache, load)
    seg = FakeSegmenter()
    assert segment_masks(examples, seg, cache, load) == first
    assert seg.calls == [(128, 128, 128)]  # only the image without a cached mask is segmented again


def test_segment_masks_does_not_swallow_other_errors(tmp_path: Path) -> None:
    def broken(image: Image.Image) -> Image.Image:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        segment_masks([photo(tmp_path / "a.png", (1, 2, 3))], broken, tmp_path / "cache", load)
    assert not list((tmp_path / "cache").glob("*.png"))


def test_segment_masks_same_stem_different_photos(tmp_path: Path) -> None:
    examples = [
        photo(tmp_path / "inst" / "a.png", (32, 0, 0)),
        photo(tmp_path / "cls" / "a.png", (224, 0, 0)),
    ]
    found = segment_masks(examples, FakeSegmenter(), tmp_path / "cache", load)
    widths = [int(np.asarray(Image.open(found[e.path])).any(axis=0).sum()) for e in examples]
    assert widths == [2, 8]
