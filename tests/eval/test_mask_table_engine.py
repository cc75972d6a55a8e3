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
    """Stands in for a segmenter: records the prompts and threshold it is asked with."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], float]] = []

    def segment(self, image, prompts, *, protect=None, params=None):
        texts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
        self.calls.append((texts, (params or MaskParams()).threshold))
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
    assert seg.calls == [(("a dress",), 0.3), (("a dress", "the belt"), 0.55)]  # a chosen threshold stays


def test_without_a_table_or_a_known_word_nothing_changes(tmp_path):
    engine, seg = _engine(tmp_path, table=False)
    photo = Image.new("RGB", (8, 8))
    engine.mask(photo, "the dress")
    tabled, seg2 = _engine(tmp_path, table=True)
    tabled.mask(photo, "a kimono")
    assert seg.calls == [(("the dress",), 0.4)] and seg2.calls == [(("a kimono",), 0.4)]
