"""Every variant carries its colour against the requested one; `rank` orders a request's variants by it (or
by CLIP adherence), in the library, the CLI, /v1/style and jobs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from restyle.errors import InvalidParameterError
from restyle.eval.rank import COLOR_PASS_DE, check_rank, color_swatch, rank, score
from restyle.inpaint.params import StyleParams
from restyle.inpaint.pipeline import StyleResult


def _result(colors: list[tuple[int, int, int]]) -> StyleResult:
    """Variants whose masked square is painted one flat colour each (the rest grey)."""
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    images = []
    for rgb in colors:
        img = Image.new("RGB", (32, 32), (128, 128, 128))
        img.paste(rgb, (8, 8, 24, 24))
        images.append(img)
    return StyleResult(
        images=images,
        seeds=list(range(10, 10 + len(colors))),
        mask=mask,
        box=(0, 0, 32, 32),
        work_size=(32, 32),
        params=StyleParams(prompt="a red dress", steps=1, guidance=6.5, num_images=len(colors)),
        model_id="test",
    )


def test_colour_names_map_to_the_vocabulary_swatches():
    assert color_swatch("Red") == "#c8102e" and color_swatch(" navy ") == "#1b2a4a"
    assert color_swatch("bright colors") is None and color_swatch(None) is None


def test_each_variant_gets_its_dominant_colour_and_delta_e():
    res = _result([(200, 16, 46), (31, 78, 156)])  # the red swatch itself, and the blue one
    score(res, "red")
    red, blue = res.scores
    assert red["dominant_color"] == "#c8102e" and red["color_delta_e"] < 1.0 and red["color_match"] is True
    assert blue["color_delta_e"] > COLOR_PASS_DE and blue["color_match"] is False
    meta = res.metadata(1)
    assert meta["color_target"] == "#c8102e" and meta["color_delta_e"] == blue["color_delta_e"]


def test_without_a_colour_only_the_dominant_colour_is_recorded():
    res = _result([(31, 78, 156)])
    score(res, None)
    assert res.scores == [{"dominant_color": "#1f4e9c"}]


def test_rank_by_colour_puts_the_closest_first_and_keeps_seeds_with_their_images():
    res = _result([(31, 78, 156), (200, 16, 46), (150, 40, 60)])
    score(res, "red")
    deltas = [s["color_delta_e"] for s in res.scores]
    rank(res, "color")
    assert [s["color_delta_e"] for s in res.scores] == sorted(deltas)
    assert res.seeds == [11, 12, 10]  # each seed still names its own picture
    assert np.asarray(res.images[0])[16, 16].tolist() == [200, 16, 46]
    assert [s["rank"] for s in res.scores] == [1, 2, 3] and res.metadata(0)["ranked_by"] == "color"


def test_a_rank_the_request_cannot_be_ordered_by_is_refused_before_running():
    check_rank(None, None, has_clip=False)
    with pytest.raises(InvalidParameterError, match="needs a vocabulary colour"):
        check_rank("color", "bright colors", has_clip=True)
    with pytest.raises(InvalidParameterError, match="needs a CLIPSeg segmenter"):
        check_rank("adherence", None, has_clip=False)
    with pytest.raises(InvalidParameterError, match="rank: must be one of color, adherence"):
        check_rank("colour", "red", has_clip=True)


def test_rank_by_adherence_with_the_segmenters_clip(segmenter, tiny_models):
    from restyle.config import ModelConfig
    from restyle.engine import Restyler
    from restyle.samples import sample_photo

    engine = Restyler(
        ModelConfig(
            segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]), device="cpu"
        )
    )
    photo = sample_photo(96, 144)
    params = StyleParams(prompt="a red linen skirt", steps=2, num_images=3, seed=1)
    result, _ = engine.style(photo, params, garment="the dress", rank="adherence", color="red")
    sims = [s["clip_similarity"] for s in result.scores]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)
    assert all("color_delta_e" in s for s in result.scores)


def test_the_cli_prints_each_variants_delta_e(tmp_path):
    from typer.testing import CliRunner

    from restyle.cli import app
    from restyle.samples import sample_photo

    sample_photo(96, 144).save(tmp_path / "p.png")
    out = CliRunner().invoke(
        app,
        ["style", str(tmp_path / "p.png"), "-g", "the dress", "--type", "skirt", "--color", "red",
         "--rank", "color", "-n", "2", "--steps", "2", "--seed", "3", "-o", str(tmp_path / "out")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.output.count("ΔE=") == 2


def test_a_faint_soft_mask_still_gets_its_colour_read():
    res = _result([(200, 16, 46)])
    res.mask = res.mask.point(lambda v: 100 if v else 0)  # half-opacity hand mask: no value >= 128
    score(res, "red")
    assert res.scores[0]["dominant_color"] == "#c8102e" and res.scores[0]["color_match"] is True
