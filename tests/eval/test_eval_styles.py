"""`evaluate_styles`, its rows files and `restyle eval styles`: known values from a fake engine, then the
tiny models end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restyle.cli import app, main
from restyle.config import ModelConfig
from restyle.engine import Restyler
from restyle.errors import InvalidParameterError, NoGarmentFoundError
from restyle.eval.styles import evaluate_styles, load_style_rows
from restyle.inpaint.pipeline import StyleResult
from restyle.prompts.vocabulary import COLORS
from restyle.samples import sample_photo
from restyle.segment import BaseSegmenter

runner = CliRunner()
BOX = (20, 40, 76, 110)  # the fake engine's garment: (left, top, right, bottom)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


class FakeEngine:
    """Paints the garment box in one flat colour per variant; `leak` also changes a pixel outside it."""

    def __init__(self, colors, leak=False):
        self.config = ModelConfig(segmenter="fake-seg", inpainter="fake-inp", device="cpu")
        self.preview = False
        self.segmenter = BaseSegmenter()  # no CLIP inside: adherence is skipped
        self.colors, self.leak = colors, leak

    def style(self, image, params, *, garment=None, mask=None, mask_params=None):
        if garment == "nothing":
            raise NoGarmentFoundError("no garment found for 'nothing'", field="garment")
        if mask is None:
            mask = Image.new("L", image.size, 0)
            mask.paste(255, BOX)
        images = []
        for color in self.colors[: params.num_images]:
            out = image.copy()
            out.paste(_rgb(COLORS[color]), BOX)
            if self.leak:
                out.putpixel((0, 0), (0, 0, 0))
            images.append(out)
        seeds = [params.seed + i for i in range(len(images))]
        return StyleResult(images, seeds, mask, (0, 0, *image.size), image.size, params, "fake"), None


@pytest.fixture
def photo_file(tmp_path):
    path = tmp_path / "photo.png"
    sample_photo(96, 144).save(path)
    return path


def _rows(tmp_path, rows, name="rows.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_known_colour_preservation_and_diversity(tmp_path, photo_file):
    rows = [
        {"photo": "photo.png", "garment": "the dress", "type": "dress", "color": "red", "seed": 7},
        {"photo": "photo.png", "garment": "nothing", "type": "dress"},
        {"photo": "missing.png", "garment": "the dress", "prompt": "a coat"},
    ]
    result = evaluate_styles(load_style_rows(_rows(tmp_path, rows)), {"fake": FakeEngine(["red", "blue"])})
    engine = result["engines"]["fake"]
    first, no_garment, no_photo = engine["rows"]
    red, blue = first["variants"]
    assert red["delta_e"] == pytest.approx(0.0, abs=0.05) and red["color_pass"] is True
    assert blue["delta_e"] > 20 and blue["color_pass"] is False
    assert [v["seed"] for v in first["variants"]] == [7, 8]
    assert all(v["outside_max"] == 0 and v["outside_mean"] == 0 and v["preserved"] for v in first["variants"])
    step = np.abs(np.subtract(_rgb(COLORS["red"]), _rgb(COLORS["blue"]))).mean() / 255
    assert first["diversity"] == pytest.approx(step, abs=1e-4)
    assert red["clip"] is None and engine["clip_model"].startswith("skipped")
    assert no_garment["error"].startswith("NoGarmentFoundError") and "variants" not in no_garment
    assert no_photo["error"].startswith("InvalidImageError") and "missing.png" in no_photo["error"]
    s = engine["summary"]
    assert (s["rows"], s["failed"], s["variants"], s["preserved"]) == (3, 2, 2, 2)
    assert s["color_pass_rate"] == 0.5 and s["outside_max"] == 0
    assert len(result["examples"]["fake"]) == 1 and result["examples"]["fake"][0]["original"].size[1] <= 256
    json.dumps({k: v for k, v in result.items() if k != "examples"}, allow_nan=False)


def test_a_change_outside_the_mask_is_caught(tmp_path, photo_file):
    rows = [{"photo": "photo.png", "garment": "the dress", "prompt": "a coat", "color": "sky-ish"}]
    result = evaluate_styles(load_style_rows(_rows(tmp_path, rows)), {"f": FakeEngine(["red"], leak=True)})
    (variant,) = result["engines"]["f"]["rows"][0]["variants"]
    corner = Image.open(photo_file).convert("RGB").getpixel((0, 0))
    assert variant["outside_max"] == max(corner) > 0 and variant["preserved"] is False
    assert variant["delta_e"] is None and variant["color_pass"] is None  # not a vocabulary colour


def test_csv_rows_and_paths_relative_to_the_file(tmp_path, photo_file):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "rows.csv"
    path.write_text(
        "photo,garment,mask,type,color,num_images,seed,steps\n../photo.png,the dress,,skirt,red,1,3,\n"
    )
    (row,) = load_style_rows(path)
    assert row.photo == tmp_path / "sub" / "../photo.png" and row.photo.is_file()
    assert (row.garment, row.type, row.num_images, row.seed, row.steps, row.id) == (
        "the dress", "skirt", 1, 3, None, "row 1"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        (
            '{"photo": "p.png", "garment": "x", "type": "skirt", "colour": "red"}',
            "line 2: unknown field(s) colour",
        ),
        ('{"photo": "p.png", "garment": "x", "mask": "m.png", "type": "skirt"}', "line 2: give exactly one"),
        ('{"photo": "p.png", "garment": "x"}', "line 2: say what to make"),
        ('{"garment": "x", "type": "skirt"}', "line 2: photo"),
        (
            '{"photo": "p.png", "garment": "x", "type": "skirt", "num_images": 20}',
            "num_images 20 is out of range",
        ),
        ('{"photo": "p.png", "garment": "x", "type": "skirt", "seed": 1.5}', "seed must be a whole number"),
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: expected an object"),
    ],
)
def test_a_bad_row_names_the_file_and_line(tmp_path, line, expect):
    path = tmp_path / "rows.jsonl"
    path.write_text("# a comment\n" + line + "\n")
    with pytest.raises(InvalidParameterError, match="rows.jsonl") as info:
        load_style_rows(path)
    assert expect in str(info.value)


def test_tiny_models_end_to_end(tmp_path, photo_file, tiny_models):
    config = ModelConfig(
        segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]), device="cpu"
    )
    rows = [{"photo": "photo.png", "garment": "the dress", "type": "dress", "color": "red", "num_images": 2}]
    result = evaluate_styles(load_style_rows(_rows(tmp_path, rows)), {"sd": Restyler(config)}, steps=2)
    engine = result["engines"]["sd"]
    (row,) = engine["rows"]
    assert row["error"] is None and result["preview"] and engine["preview"]
    assert all(v["preserved"] and v["outside_max"] == 0 for v in row["variants"])
    assert all(v["delta_e"] is not None and -1 <= v["clip"] <= 1 for v in row["variants"])
    assert "CLIPSeg" in engine["clip_model"] and row["diversity"] > 0 and row["seconds_per_image"] > 0
    assert row["mask_prompts"] == ["the dress"] and "red dress" in row["clip_text"]


def test_the_cli_compares_two_inpainters(tmp_path, photo_file, tiny_models):
    rows = _rows(
        tmp_path, [{"photo": "photo.png", "garment": "the dress", "prompt": "a linen skirt", "num_images": 1}]
    )
    inpainter = str(tiny_models["inpainter"])
    args = ["eval", "styles", str(rows), "--segmenter", str(tiny_models["segmenter"]), "--steps", "1"]
    args += ["--inpainter", inpainter, "--inpainter", inpainter, "--report", str(tmp_path / "o" / "s.html")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "preserved 1/1" in result.output and "PREVIEW" in result.output
    figures = json.loads((tmp_path / "o" / "s.json").read_text())
    assert list(figures["engines"]) == ["inpainter", "inpainter-2"] and "examples" not in figures
    assert (tmp_path / "o" / "s.html").is_file()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["{missing}"], "cannot read the rows file"),
        (["{rows}", "--steps", "500"], "--steps: 500 is out of range"),
    ],
)
def test_bad_input_is_one_clean_line(monkeypatch, capsys, tmp_path, photo_file, args, expect):
    rows = _rows(tmp_path, [{"photo": "photo.png", "garment": "the dress", "type": "skirt"}])
    subs = {"{missing}": str(tmp_path / "nothing.jsonl"), "{rows}": str(rows)}
    monkeypatch.setattr(sys, "argv", ["restyle", "eval", "styles", *[subs.get(a, a) for a in args]])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and expect in err and "Traceback" not in err


def test_a_spreadsheet_csv_with_a_bom_and_a_quoted_newline_reads(tmp_path):
    from restyle.eval.styles import load_style_rows
    from restyle.samples import sample_photo

    sample_photo(64, 96).save(tmp_path / "p.png")
    (tmp_path / "rows.csv").write_bytes(
        b'\xef\xbb\xbfphoto,garment,prompt,color\np.png,the dress,"a red skirt\nwith pleats",red\n'
    )
    (row,) = load_style_rows(tmp_path / "rows.csv")
    assert row.garment == "the dress" and row.prompt == "a red skirt\nwith pleats" and row.color == "red"
