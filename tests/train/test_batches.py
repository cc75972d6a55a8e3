"""Fitted items and deterministic batches: a pure function of (seed, step, micro-batch, process)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restyle.train.batches import Item, TrainSet, fit_items
from restyle.train.data import Example

S = 16  # item side


def load(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def item(i: int, masks: dict[str, np.ndarray] | None = None, prefix: str = "inst") -> Item:
    pixels = np.full((S, S, 3), i * 10 % 256, np.uint8)
    return Item(pixels, f"{prefix}-{i}", masks or {})


def index(caption: str) -> int:
    return int(caption.rsplit("-", 1)[1])


def trainset(n: int = 6, classes: int = 0, **kw) -> TrainSet:
    args = {"seed": 0, "batch_size": 1, "mask_mix": (("random", 1.0),), **kw}
    cls = [item(j, prefix="class") for j in range(classes)]
    return TrainSet([item(i) for i in range(n)], cls, **args)


def same(a: dict, b: dict) -> bool:
    return (
        torch.equal(a["pixels"], b["pixels"])
        and torch.equal(a["masks"], b["masks"])
        and a["captions"] == b["captions"]
        and a["sources"] == b["sources"]
    )


# -- fit_items -----------------------------------------------------------------------------------------


def garment_photo(folder: Path) -> Path:
    """100x50 green photo with a red garment at x 40..70."""
    a = np.zeros((50, 100, 3), np.uint8)
    a[:] = (0, 200, 0)
    a[:, 40:70] = (200, 0, 0)
    path = folder / "look.png"
    Image.fromarray(a).save(path)
    return path


def band_mask(path: Path, x0: int, x1: int, size: tuple[int, int] = (100, 50)) -> Path:
    m = np.zeros((size[1], size[0]), np.uint8)
    m[:, x0:x1] = 255
    Image.fromarray(m).save(path)
    return path


def red(it: Item) -> np.ndarray:
    return it.pixels[..., 0] > 128


def test_fit_items_without_masks(tmp_path: Path) -> None:
    photo = garment_photo(tmp_path)
    [it] = fit_items([Example(photo, "sks skirt")], 32, "crop", load)
    assert it.pixels.shape == (32, 32, 3) and it.pixels.dtype == np.uint8
    assert it.caption == "sks skirt" and it.masks == {}


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_fit_items_user_mask_is_cut_like_the_photo(tmp_path: Path, fit: str) -> None:
    photo = garment_photo(tmp_path)
    # the mask file may have another size than the photo: it is stretched onto the photo first
    mask = band_mask(tmp_path / "m.png", 20, 35, size=(50, 25))
    [it] = fit_items([Example(photo, "c", mask)], 32, fit, load)
    assert set(it.masks) == {"file"} and it.masks["file"].dtype == bool
    assert it.masks["file"].shape == (32, 32)
    assert red(it)[it.masks["file"]].mean() > 0.9


def test_fit_items_crop_is_anchored_on_the_segment_mask(tmp_path: Path) -> None:
    photo = garment_photo(tmp_path)
    seg = band_mask(tmp_path / "s.png", 40, 70)
    [it] = fit_items([Example(photo, "c")], 32, "crop", load, {photo: seg})
    assert set(it.masks) == {"segment"}
    assert np.array_equal(it.masks["segment"], red(it))


def test_fit_items_drops_an_empty_mask(tmp_path: Path) -> None:
    photo = garment_photo(tmp_path)
    empty = band_mask(tmp_path / "e.png", 0, 0)
    [it] = fit_items([Example(photo, "c", empty)], 32, "crop", load)
    assert it.masks == {}


def test_fit_items_pad_keeps_both_masks_aligned(tmp_path: Path) -> None:
    photo = garment_photo(tmp_path)
    user = band_mask(tmp_path / "u.png", 0, 30)
    seg = band_mask(tmp_path / "s.png", 40, 70)
    [it] = fit_items([Example(photo, "c", user)], 32, "pad", load, {photo: seg})
    assert set(it.masks) == {"file", "segment"}
    assert red(it)[it.masks["segment"]].mean() > 0.9
    assert not red(it)[it.masks["file"]].any()


def test_fit_items_crop_keeps_the_second_mask_aligned(tmp_path: Path) -> None:
    photo = garment_photo(tmp_path)
    user = band_mask(tmp_path / "u.png", 0, 30)  # anchors the crop at the left edge
    seg = band_mask(tmp_path / "s.png", 40, 70)  # the red garment, partly inside that crop
    [it] = fit_items([Example(photo, "c", user)], 32, "crop", load, {photo: seg})
    assert not red(it)[it.masks["file"]].any()
    assert "segment" in it.masks
    assert red(it)[it.masks["segment"]].mean() > 0.9  # the mask lies on the garment
    assert it.masks["segment"][red(it)].mean() > 0.9  # and covers it


# -- TrainSet ------------------------------------------------------------------------------------------


def test_trainset_needs_instances() -> None:
    with pytest.raises(ValueError, match="at least one instance"):
        TrainSet([], [item(0)], seed=0, batch_size=1, mask_mix=(("random", 1.0),))


def test_batch_tensors() -> None:
    black, white = item(0), Item(np.full((S, S, 3), 255, np.uint8), "inst-1")
    data = TrainSet([black, white], [], seed=0, batch_size=2, mask_mix=(("random", 1.0),))
    out = data.batch(0, 0, 1, 0, 1)
    assert out["pixels"].shape == (2, 3, S, S) and out["pixels"].dtype == torch.float32
    assert out["masks"].shape == (2, 1, S, S) and out["masks"].dtype == torch.float32
    assert set(out["masks"].unique().tolist()) == {0.0, 1.0}
    assert sorted(out["captions"]) == ["inst-0", "inst-1"]
    assert out["sources"] == ["random", "random"]
    for row, cap in enumerate(out["captions"]):
        assert torch.all(out["pixels"][row] == (-1.0 if cap == "inst-0" else 1.0))


def test_batch_is_a_pure_function_of_step_micro_and_rank() -> None:
    a, b = trainset(5, 3, batch_size=2, seed=7), trainset(5, 3, batch_size=2, seed=7)
    wanted = [(9, 1, 1), (0, 0, 0), (4, 0, 1), (9, 1, 1)]
    first = [a.batch(s, m, 2, r, 2) for s, m, r in wanted]
    for s in range(10):  # a fresh set (a resumed run) asked in another order gives the same batches
        b.batch(s, 0, 2, 0, 2)
    for (s, m, r), expected in zip(reversed(wanted), reversed(first)):
        assert same(b.batch(s, m, 2, r, 2), expected)
    assert same(first[0], first[3])
    assert not same(first[0], first[1])


def test_another_seed_gives_another_order() -> None:
    def order(seed: int) -> list[str]:
        data = trainset(6, seed=seed)
        return [data.batch(s, 0, 1, 0, 1)["captions"][0] for s in range(6)]

    assert order(0) != order(1)


def test_ranks_get_different_instances_at_the_same_step() -> None:
    data = trainset(8, batch_size=2)
    for step in range(4):
        r0, r1 = (data.batch(step, 0, 1, rank, 2)["captions"] for rank in (0, 1))
        assert not set(r0) & set(r1), (step, r0, r1)


@pytest.mark.parametrize(
    ("n", "batch_size", "accumulation", "world"),
    [(6, 1, 1, 2), (8, 2, 2, 2), (12, 3, 1, 4), (5, 1, 1, 1)],
)
def test_every_instance_once_per_epoch(n: int, batch_size: int, accumulation: int, world: int) -> None:
    data = trainset(n, batch_size=batch_size)
    per_step = batch_size * accumulation * world
    seen: list[int] = []
    for step in range(2 * n // per_step):
        for micro in range(accumulation):
            for rank in range(world):
                seen += [index(c) for c in data.batch(step, micro, accumulation, rank, world)["captions"]]
    epochs = [seen[:n], seen[n:]]
    assert [sorted(e) for e in epochs] == [list(range(n))] * 2
    assert epochs[0] != epochs[1]  # a fresh permutation each epoch


def test_class_rows_follow_instance_rows() -> None:
    data = trainset(4, 3, batch_size=2)
    seen: list[int] = []
    for step in range(3):
        out = data.batch(step, 0, 1, 0, 1)
        assert [c.split("-")[0] for c in out["captions"]] == ["inst", "inst", "class", "class"]
        assert out["pixels"].shape[0] == out["masks"].shape[0] == len(out["sources"]) == 4
        for row, cap in enumerate(out["captions"]):  # each row's pixels are its item's
            assert torch.all(out["pixels"][row] == index(cap) * 10 / 127.5 - 1.0)
        seen += [index(c) for c in out["captions"][2:]]
    assert sorted(seen[:3]) == [0, 1, 2]  # the class images run their own epochs


def test_mask_sources_follow_their_shares() -> None:
    seg = np.zeros((S, S), bool)
    seg[4:12, 2:10] = True
    items = [item(i, {"segment": seg}) for i in range(4)]
    data = TrainSet(items, [], seed=3, batch_size=2, mask_mix=(("segment", 0.7), ("random", 0.3)))
    sources: Counter[str] = Counter()
    for step in range(200):
        out = data.batch(step, 0, 1, 0, 1)
        sources.update(out["sources"])
        for row, source in enumerate(out["sources"]):
            is_seg = torch.equal(out["masks"][row, 0], torch.from_numpy(seg).float())
            assert is_seg == (source == "segment")
    assert sources["segment"] / 400 == pytest.approx(0.7, abs=0.07)


def test_random_masks_when_the_mix_names_only_missing_sources() -> None:
    data = trainset(3, batch_size=1, mask_mix=(("segment", 0.5), ("file", 0.5)))
    masks = []
    for step in range(6):
        out = data.batch(step, 0, 1, 0, 1)
        assert out["sources"] == ["random"]
        assert out["masks"].sum() > 0
        masks.append(out["masks"])
    assert any(not torch.equal(masks[0], m) for m in masks[1:])


def test_available_source_is_used_and_missing_one_skipped() -> None:
    file_mask = np.zeros((S, S), bool)
    file_mask[0:4] = True
    items = [item(0, {"file": file_mask}), item(1)]
    data = TrainSet(items, [], seed=0, batch_size=2, mask_mix=(("file", 0.5), ("segment", 0.5)))
    for step in range(5):
        out = data.batch(step, 0, 1, 0, 1)
        by_caption = dict(zip(out["captions"], out["sources"]))
        assert by_caption == {"inst-0": "file", "inst-1": "random"}
