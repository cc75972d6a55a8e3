"""Warm-up before /ping: every shape bucket a compiled UNet will see is run once while loading."""

from __future__ import annotations

import itertools
import shutil
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from restyle.inpaint.crop import bucket_shapes
from restyle.serve.handler import Service


def test_bucket_shapes_of_common_photo_aspects():
    assert bucket_shapes(512, 64) == [(512, 512), (384, 512), (512, 384), (320, 512), (512, 320)]
    shapes = bucket_shapes(768, 64)
    assert len(shapes) == 7 and (576, 768) in shapes and (768, 448) in shapes
    assert all(w % 64 == 0 and h % 64 == 0 and max(w, h) == 768 for w, h in shapes)
    assert bucket_shapes(64, 64) == [(64, 64)]  # the tiny preview model: one shape for everything


class Recorder:
    """A stand-in inpainter: records the working sizes warm-up asks for."""

    def __init__(self, native: int, bucket: int) -> None:
        from restyle.inpaint.families import SD

        self.native_size, self.bucket, self.family = native, bucket, SD
        self.runs: list[tuple[tuple[int, int], int]] = []

    def run(self, photo: Image.Image, mask: Image.Image, params: Any) -> None:
        assert params.steps == 1 and not params.crop and params.size == max(photo.size)
        assert mask.getbbox() is not None
        self.runs.append((photo.size, params.num_images))


def _service(inpainter: Recorder) -> Service:
    engine = SimpleNamespace(inpainter=inpainter, config=SimpleNamespace(segmenter="/no/such/segmenter"))
    return Service(engine)  # type: ignore[arg-type]


@pytest.mark.parametrize("native, bucket", [(512, 64), (768, 64), (512, 0)])
def test_warmup_runs_every_bucket_shape_at_the_native_size(native, bucket):
    rec = Recorder(native, bucket)
    _service(rec).warmup()
    if bucket:  # every shape with 1 image (the original's case) and 2 (the API's default)
        assert rec.runs == [(shape, n) for shape in bucket_shapes(native, bucket) for n in (1, 2)]
    else:
        assert rec.runs == [((native, native), 1)]


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler")
def test_compiled_unet_is_compiled_during_warmup_not_on_the_first_request(tiny_models, photo, box_mask):
    import torch
    from torch._dynamo.utils import counters

    from restyle.config import ModelConfig
    from restyle.engine import Restyler
    from restyle.inpaint import StyleParams

    torch._dynamo.reset()
    config = ModelConfig(
        segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]), fast="compile"
    )
    engine = Restyler(config)
    assert engine.inpainter.bucket == 64 and hasattr(engine.inpainter.pipe.unet, "_orig_mod")
    Service(engine).warmup()
    compiled = counters["stats"]["unique_graphs"]
    assert compiled >= 1
    # portrait and landscape requests of 1 and 2 images: both crops pad to the warmed 64 x 64 bucket
    turned = (photo.rotate(90, expand=True), box_mask.rotate(90, expand=True))
    for (image, mask), n in itertools.product(((photo, box_mask), turned), (1, 2)):
        params = StyleParams(prompt="a red skirt", steps=2, num_images=n, seed=3)
        result = engine.inpainter.run(image, mask, params)
        assert result.images[0].size == image.size and len(result.images) == n
    assert counters["stats"]["unique_graphs"] == compiled, "a request compiled a new graph after warm-up"
    torch._dynamo.reset()
