"""Several requests denoised in one batch (`Inpainter.prepare` + `run_batch`) and shape buckets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from restyle.inpaint import Inpainter, StyleParams, unchanged_outside
from restyle.inpaint.crop import pad_to_bucket
from restyle.inpaint.pipeline import CancelledError

# A batch changes the UNet's batch size, so its float sums may round differently from a run alone;
# on these tiny fp32 models that shows as at most a level or two of 255 on a few pixels.
MAX_LEVELS = 2


def _request(w: int, h: int, seed: int, box: tuple[int, int, int, int]) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, box)
    return photo, mask


def _params(prompt: str, seed: int, n: int = 1, **kw) -> StyleParams:
    return StyleParams(prompt=prompt, seed=seed, num_images=n, steps=3, **kw)


def _levels(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


@pytest.fixture
def fresh(inpainter: Inpainter) -> Inpainter:
    """The session's pipeline behind a new Inpainter, so bucket settings do not leak between tests."""
    return Inpainter(inpainter.pipe, model_id="tiny")


def test_each_request_in_a_batch_gets_the_images_it_gets_alone(fresh):
    a = (*_request(96, 144, 1, (20, 40, 70, 120)), _params("a red linen skirt", 7, n=2))
    b = (
        *_request(96, 144, 2, (10, 30, 80, 130)),
        _params("a blue denim jacket", 11, n=1, negative_prompt=""),
    )
    c = (*_request(96, 144, 3, (30, 20, 60, 100)), _params("a green silk dress", 7, n=1))
    prepared = [fresh.prepare(*r) for r in (a, b, c)]
    assert len({p.key for p in prepared}) == 1
    batched = fresh.run_batch(prepared)
    alone = [fresh.run(*r) for r in (a, b, c)]
    for got, want, (photo, mask, params) in zip(batched, alone, (a, b, c), strict=True):
        assert got.seeds == want.seeds and len(got.images) == params.num_images
        assert got.batch == 3 and want.batch == 1
        for x, y in zip(got.images, want.images, strict=True):
            assert x.size == photo.size
            assert _levels(x, y) <= MAX_LEVELS
            assert unchanged_outside(photo, x, mask)
    # the batch really holds three different requests: c shares a's seed but not its prompt or photo
    assert _levels(batched[0].images[0], batched[2].images[0]) > 20
    assert _levels(batched[0].images[0], batched[0].images[1]) > 20


def test_a_seed_does_not_depend_on_its_batch_neighbours_with_a_stochastic_sampler(fresh):
    """euler_a draws fresh noise every step: each image must draw it from its own seed's generator."""
    a = (*_request(80, 64, 4, (10, 10, 60, 50)), _params("a striped shirt", 5, scheduler="euler_a"))
    b = (*_request(80, 64, 5, (5, 5, 70, 60)), _params("a wool coat", 6, n=3, scheduler="euler_a"))
    with_b = fresh.run_batch([fresh.prepare(*a), fresh.prepare(*b)])[0]
    alone = fresh.run(*a)
    assert _levels(with_b.images[0], alone.images[0]) <= MAX_LEVELS


def test_requests_of_different_keys_are_refused(fresh):
    photo, mask = _request(96, 144, 1, (20, 40, 70, 120))
    p = fresh.prepare(photo, mask, _params("a skirt", 1))
    q = fresh.prepare(photo, mask, _params("a skirt", 1, guidance=3.0))
    r = fresh.prepare(photo.rotate(90, expand=True), mask.rotate(90, expand=True), _params("a skirt", 1))
    assert p.key != q.key and p.key != r.key
    with pytest.raises(ValueError, match="different keys"):
        fresh.run_batch([p, q])
    assert fresh.run_batch([]) == []


def test_a_cancelled_batch_raises_and_reports_progress_first(fresh):
    photo, mask = _request(96, 144, 1, (20, 40, 70, 120))
    items = [fresh.prepare(photo, mask, _params("a skirt", s)) for s in (1, 2)]
    seen: list[tuple[int, int]] = []
    with pytest.raises(CancelledError):
        fresh.run_batch(items, progress=lambda d, t: seen.append((d, t)), cancel=lambda: len(seen) >= 2)
    assert seen[:2] == [(1, 3), (2, 3)]


def test_pad_to_bucket_repeats_edges_and_never_repaints_the_padding():
    photo, mask = _request(40, 72, 9, (5, 5, 30, 60))
    padded, padded_mask = pad_to_bucket(photo, mask, 64)
    assert padded.size == padded_mask.size == (64, 128)
    px, pm = np.asarray(padded), np.asarray(padded_mask)
    assert np.array_equal(px[:72, :40], np.asarray(photo))
    assert np.array_equal(px[:72, 40:], np.repeat(np.asarray(photo)[:, 39:40], 24, axis=1))
    assert np.array_equal(px[72:, :40], np.repeat(np.asarray(photo)[71:72], 56, axis=0))
    assert pm[72:].max() == 0 and pm[:, 40:].max() == 0
    assert np.array_equal(pm[:72, :40], np.asarray(mask))
    assert pad_to_bucket(photo, mask, 0) == (photo, mask)
    square, _ = pad_to_bucket(padded, padded_mask, 64)
    assert square is padded  # already a bucket shape


def test_buckets_give_nearby_aspects_one_shape_and_keep_the_photo_exact(fresh):
    # 96x144 and 100x144 crop to different working sizes; padded to 64 px buckets they share one
    shapes = {}
    results = {}
    for bucket in (0, 64):
        fresh.bucket = bucket
        items = [
            fresh.prepare(*_request(w, 144, w, (10, 10, w - 10, 134)), _params("a skirt", 3))
            for w in (96, 100)
        ]
        shapes[bucket] = [p.work_image.size for p in items]
        if bucket:
            results[bucket] = fresh.run_batch(items)
            for p, res in zip(items, results[bucket], strict=True):
                assert res.images[0].size == p.image.size
                assert res.work_size == p.work_size and res.work_size != p.work_image.size
                assert unchanged_outside(p.image, res.images[0], p.mask)
    assert shapes[0][0] != shapes[0][1]
    assert shapes[64][0] == shapes[64][1] and all(s % 64 == 0 for s in shapes[64][0])


def test_fast_buckets_option_sets_the_inpainter_bucket(tiny_models):
    from restyle.inpaint.loading import BUCKET

    plain = Inpainter.from_pretrained(str(tiny_models["inpainter"]), device="cpu")
    bucketed = Inpainter.from_pretrained(str(tiny_models["inpainter"]), device="cpu", fast="buckets")
    assert plain.bucket == 0 and bucketed.bucket == BUCKET == 64


def test_each_distinct_prompt_is_encoded_once_per_batch(fresh):
    photo, mask = _request(96, 144, 1, (20, 40, 70, 120))
    items = [
        fresh.prepare(photo, mask, _params("a red skirt", 1, n=3)),
        fresh.prepare(photo, mask, _params("a red skirt", 2, n=2)),
        fresh.prepare(photo, mask, _params("a blue skirt", 3, n=1)),
    ]
    batches: list[int] = []
    hook = fresh.pipe.text_encoder.register_forward_hook(
        lambda m, args, out: batches.append(args[0].shape[0])
    )
    try:
        results = fresh.run_batch(items)
    finally:
        hook.remove()
    assert batches == [2, 2]  # the two distinct prompts, then their negatives; not 6 + 6 rows
    assert [len(r.images) for r in results] == [3, 2, 1]
