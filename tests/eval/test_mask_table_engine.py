"""A mask table from the wording sweep changes what the engine asks the segmenter: the winning wording for
each garment text it knows, and its threshold where the request left the default."""

from __future__ import annotations

from PIL import Image

from restyle.config import ModelConfig
from restyle.engine import Restyler
from restyle.segment.base import MaskParams

TABLE = """format = 1
segmenter = "tiny"
dataset = "synthetic"

[classes.dress]
prompt = "a dress"
threshold = 0.3
candidates = ["the dress", "a gown"]
"""


class Recorder:
    """Stands in for a segmenter: records the prompts and each one's threshold it is asked with."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], tuple[float, ...]]] = []

    def segment(self, image, prompts, *, protect=None, params=None):
        texts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
        self.calls.append((texts, (params or MaskParams()).thresholds(len(texts))))
        return "masked"


def _engine(tmp_path, table: bool) -> tuple[Restyler, Recorder]:
    path = tmp_path / "prompts.toml"
    path.write_text(TABLE)
    seg = Recorder()
    config = ModelConfig(segmenter="x", inpainter="y", mask_table=str(path) if table else "")
    return Restyler(config, segmenter=seg), seg  # type: ignore[arg-type]


def test_known_wordings_become_the_winner_with_its_threshold(tmp_path):
    engine, seg = _engine(tmp_path, table=True)
    photo = Image.new("RGB", (8, 8))
    engine.mask(photo, "The  Dress")
    engine.mask(photo, ["a gown", "the belt"], params=MaskParams(threshold=0.55))
    assert seg.calls == [
        (("a dress",), (0.3,)),
        (("a dress", "the belt"), (0.55, 0.55)),
    ]  # a chosen one stays


def test_a_garment_the_table_does_not_know_keeps_the_default_threshold(tmp_path):
    engine, seg = _engine(tmp_path, table=True)
    engine.mask(Image.new("RGB", (8, 8)), ["the dress", "the belt"])
    assert seg.calls == [(("a dress", "the belt"), (0.3, 0.4))]


def test_without_a_table_or_a_known_word_nothing_changes(tmp_path):
    engine, seg = _engine(tmp_path, table=False)
    photo = Image.new("RGB", (8, 8))
    engine.mask(photo, "the dress")
    tabled, seg2 = _engine(tmp_path, table=True)
    tabled.mask(photo, "a kimono")
    assert seg.calls == [(("the dress",), (0.4,))] and seg2.calls == [(("a kimono",), (0.4,))]


def test_each_garment_is_cut_at_its_own_threshold():
    """refine: a pixel is garment when its garment's probability passes that garment's threshold."""
    import numpy as np
    import pytest

    from restyle.errors import InvalidParameterError
    from restyle.segment.base import refine

    probs = np.zeros((2, 64, 64), dtype=np.float32)
    probs[0, 4:20, 4:20] = 0.35  # the dress: above its 0.3, below the default 0.4
    probs[1, 40:60, 40:60] = 0.35  # the belt: the same probability, held to the default
    bare = dict(protect=(), grow=0, feather=0, min_area=0.0)
    both = refine(
        probs,
        np.zeros((0, 64, 64)),
        ("a dress", "the belt"),
        (),
        MaskParams(garment_thresholds=(0.3, 0.4), **bare),
    )
    mask = np.asarray(both.mask) > 0
    assert mask[10, 10] and not mask[50, 50]
    assert both.prompt_areas == {"a dress": round(16 * 16 / 64**2, 5), "the belt": 0.0}
    with pytest.raises(InvalidParameterError, match="garment_thresholds: 1 thresholds for 2 garments"):
        MaskParams(garment_thresholds=(0.3,)).thresholds(2)
    with pytest.raises(InvalidParameterError, match="garment_thresholds"):
        MaskParams(garment_thresholds=(1.5, 0.3)).check()
