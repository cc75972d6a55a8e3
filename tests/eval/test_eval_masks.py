"""`evaluate_masks`, the prompt table and `restyle eval masks`: known values from fake segmenters, then the
tiny models end to end on the synthetic set."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from restyle.cli import app, main
from restyle.errors import InvalidParameterError
from restyle.eval.datasets import LabelledPhoto, read_label_maps
from restyle.eval.masks import evaluate_masks
from restyle.eval.synthetic import CLASS_MAP, write_synthetic_set
from restyle.eval.table import load_mask_table, normalize_garment, write_mask_table
from restyle.segment import BaseSegmenter

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_set(tmp_path_factory.mktemp("synthetic"), count=4, seed=0)


@pytest.fixture(scope="module")
def photos(synthetic) -> list[LabelledPhoto]:
    return read_label_maps(synthetic["images"], synthetic["labels"], synthetic["label_names"])


class Oracle(BaseSegmenter):
    """Gives each wording's class label as its probability map (`inside` on the garment, 0 elsewhere)."""

    name = "oracle"
    model_id = "oracle"

    def __init__(self, photos, class_map, inside=1.0, full=False, good=None):
        self.truth = {id(p.image): p for p in photos}
        self.cls = {w: c for c, ws in class_map.items() for w in ws}
        self.inside, self.full, self.good = inside, full, good

    def role_probabilities(self, image, garments, guards, params):
        h, w = image.height, image.width
        maps = []
        for g in garments:
            truth = self.truth[id(image)].masks.get(self.cls[g], np.zeros((h, w), bool))
            value = self.inside if self.good in (None, g) else self.inside * 0.0
            maps.append(np.ones((h, w), np.float32) if self.full else truth.astype(np.float32) * value)
        return np.stack(maps), np.zeros((len(guards), h, w), np.float32)


def test_an_oracle_scores_one_and_no_false_positive(photos):
    result = evaluate_masks(photos, {"oracle": Oracle(photos, CLASS_MAP)}, CLASS_MAP, protect=[])
    figs = result["backends"]["oracle"]
    assert figs["miou_default"] == figs["miou_best"] == 1.0
    for c in figs["classes"].values():
        for setting in (c["default"], c["best"]):
            assert setting["iou"] == setting["iou_pooled"] == setting["boundary_f"] == 1.0
            assert setting["fp_rate"] == 0.0 and setting["missed_rate"] == 0.0
    assert result["class_photos"] == {"dress": 2, "skirt": 1, "top": 1}
    assert figs["classes"]["dress"]["sweep"][0]["negatives"] == 2  # NoGarmentFoundError there is right
    # every wording ties: the shortest wins, at the default threshold
    assert figs["winners"]["dress"]["wording"] == "dress" and figs["winners"]["dress"]["threshold"] == 0.4
    assert figs["winners"]["top"]["wording"] == "a top"
    json.dumps({k: v for k, v in result.items() if k != "examples"}, allow_nan=False)


def test_the_full_image_scores_the_garments_share_of_the_photo(photos):
    result = evaluate_masks(photos, {"full": Oracle(photos, CLASS_MAP, full=True)}, CLASS_MAP, protect=[])
    dress = result["backends"]["full"]["classes"]["dress"]["default"]
    shown = [p.masks["dress"] for p in photos if "dress" in p.masks]
    assert dress["iou"] == pytest.approx(np.mean([m.mean() for m in shown]), abs=1e-4)
    pooled = sum(m.sum() for m in shown) / sum(p.image.width * p.image.height for p in photos)
    assert dress["iou_pooled"] == pytest.approx(pooled, abs=1e-4)
    assert dress["fp_rate"] == 1.0 and dress["missed_rate"] == 0.0


def test_the_threshold_sweep_and_the_missed_rate(photos):
    seg = Oracle(photos, CLASS_MAP, inside=0.45)  # found at 0.3 and 0.4, not at 0.5
    result = evaluate_masks(photos, {"o": seg}, {"dress": ["the dress"]}, thresholds=(0.3, 0.5), protect=[])
    c = result["backends"]["o"]["classes"]["dress"]
    assert result["thresholds"] == [0.3, 0.4, 0.5]  # the default is always swept
    by_t = {s["threshold"]: s for s in c["sweep"]}
    assert by_t[0.3]["iou"] == by_t[0.4]["iou"] == 1.0
    assert by_t[0.5]["iou"] == 0.0 and by_t[0.5]["missed_rate"] == 1.0
    assert c["best"]["threshold"] == 0.4  # the tie goes to the default threshold


def test_the_wording_that_masks_best_wins(photos):
    seg = Oracle(photos, CLASS_MAP, good="a dress")
    result = evaluate_masks(photos, {"o": seg}, {"dress": CLASS_MAP["dress"]}, protect=[])
    figs = result["backends"]["o"]
    assert figs["winners"]["dress"]["wording"] == "a dress"
    assert figs["miou_default"] == 0.0 and figs["miou_best"] == 1.0
    assert figs["classes"]["dress"]["best"]["per_photo"] == {"synthetic_00": 1.0, "synthetic_02": 1.0}


def test_bad_arguments_name_the_field(photos):
    with pytest.raises(InvalidParameterError, match="threshold"):
        evaluate_masks(photos, {"o": Oracle(photos, CLASS_MAP)}, CLASS_MAP, thresholds=(1.5,))
    with pytest.raises(InvalidParameterError, match="photos"):
        evaluate_masks([], {"o": Oracle(photos, CLASS_MAP)}, CLASS_MAP)


def test_tiny_backends_end_to_end_and_a_wording_a_parser_cannot_read(photos, backend_segmenter):
    segmenters = {"clipseg": backend_segmenter("clipseg"), "parser": backend_segmenter("parser")}
    class_map = {"dress": ["the dress", "a zorblax"], "skirt": ["the skirt"]}
    result = evaluate_masks(photos[:3], segmenters, class_map, thresholds=(0.4,))
    assert result["preview"] and set(result["backends"]) == {"clipseg", "parser"}
    for name, figs in result["backends"].items():
        assert figs["preview"] and 0.0 <= figs["miou_best"] <= 1.0 and figs["seconds_per_photo"] > 0
        best = result["examples"][name]["dress"]["best"]
        assert best["image"].size == best["pred"].size == best["truth"].size
    sweep = result["backends"]["parser"]["classes"]["dress"]["sweep"]
    assert "zorblax" in next(s["error"] for s in sweep if s["wording"] == "a zorblax")
    assert result["backends"]["parser"]["winners"]["dress"]["wording"] == "the dress"


def test_the_table_round_trips_and_looks_up_garment_text(tmp_path):
    winners = {
        "dress": {
            "wording": "a dress",
            "threshold": 0.35,
            "candidates": ["the dress", "a dress"],
            "iou": 0.7,
        },
        'upper "clothes"': {"wording": "the top", "threshold": 0.5, "candidates": ["a top"], "iou": None},
    }
    path = write_mask_table(tmp_path / "t" / "prompts.toml", winners, segmenter="CIDAS/x", dataset="atr")
    text = path.read_text()
    assert text.startswith("# restyle mask prompt table") and "CIDAS/x" in text and "atr" in text
    table = load_mask_table(path)
    assert table.segmenter == "CIDAS/x" and table.entries["dress"].scores == {"iou": 0.7}
    assert table.lookup("the dress") == ("a dress", 0.35)
    assert table.lookup("  The   DRESS. ") == ("a dress", 0.35)
    assert table.lookup("dress") == table.lookup("a dress") == ("a dress", 0.35)
    assert table.lookup('upper "clothes"') == table.lookup("A top") == ("the top", 0.5)
    assert table.lookup("jeans") is None and table.lookup("") is None
    assert normalize_garment("the upper_clothes") == "upper clothes"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("format = 1\n[classes.dress]\nprompt = \n", "line 3"),
        (
            "format = 1\n\n[classes.dress]\nprompt = 'a dress'\nthreshold = 2\n",
            "line 3: classes.dress.threshold",
        ),
        ("format = 1\n[classes.dress]\nthreshold = 0.4\n", "line 2: classes.dress.prompt"),
        ("format = 9\n", "format 9"),
        ("format = 1\n", "no [classes.NAME]"),
    ],
)
def test_a_bad_table_names_the_file_and_line(tmp_path, text, expect):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidParameterError, match="bad.toml") as info:
        load_mask_table(path)
    assert expect in str(info.value)


def test_the_cli_writes_the_report_and_the_table(tmp_path, synthetic, segmenter_folder):
    (tmp_path / "classes.json").write_text(json.dumps({"dress": ["the dress", "dress"], "top": ["the top"]}))
    args = ["eval", "masks", str(synthetic["root"]), "--limit", "3", "--threshold", "0.4"]
    args += ["--classes", str(tmp_path / "classes.json")]
    args += ["--segmenter", str(segmenter_folder("clipseg")), "--segmenter", str(segmenter_folder("parser"))]
    args += [
        "--write-table",
        str(tmp_path / "prompts.toml"),
        "--report",
        str(tmp_path / "out" / "report.html"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "mIoU best" in result.output and "PREVIEW" in result.output
    assert (tmp_path / "out" / "report.html").is_file()
    figures = json.loads((tmp_path / "out" / "report.json").read_text())
    assert figures["photos"] == 3 and len(figures["backends"]) == 2
    table = load_mask_table(tmp_path / "prompts.toml")
    assert set(table.entries) == {"dress", "top"} and "PREVIEW" in (tmp_path / "prompts.toml").read_text()
    assert table.lookup("The dress") is not None and table.lookup("a skirt") is None


def test_the_cli_reads_coco_and_falls_back_to_the_preview(tmp_path, synthetic):
    args = ["eval", "masks", str(synthetic["root"]), "--format", "coco", "--limit", "2", "--threshold", "0.4"]
    result = runner.invoke(app, [*args, "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 0, (result.output, result.exception)
    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["preview"] and figures["photos"] == 2
    assert "preview: tiny random models" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["{missing}"], "DATA: no such folder"),
        (["{root}", "--format", "voc"], "--format: 'voc'"),
        (["{root}", "--classes", "{missing}"], "no such class-map file"),
        (["{root}", "--segmenter", "./no/such/model"], "no such folder"),
    ],
)
def test_bad_input_is_one_clean_line(monkeypatch, capsys, tmp_path, synthetic, args, expect):
    subs = {"{missing}": str(tmp_path / "nothing"), "{root}": str(synthetic["root"])}
    monkeypatch.setattr(sys, "argv", ["restyle", "eval", "masks", *[subs.get(a, a) for a in args]])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and expect in err and "Traceback" not in err


class Closed(Oracle):
    """An oracle that cannot read one class's wordings (as a parser without that label)."""

    def role_probabilities(self, image, garments, guards, params):
        if any(self.cls[g] == "dress" for g in garments):
            from restyle.errors import InvalidParameterError

            raise InvalidParameterError("garment: no label for it", field="garment")
        return super().role_probabilities(image, garments, guards, params)


def test_an_unreadable_class_never_wins_and_counts_zero_in_the_miou(photos, tmp_path):
    from restyle.eval.table import load_mask_table, write_mask_table

    result = evaluate_masks(photos, {"closed": Closed(photos, CLASS_MAP)}, CLASS_MAP, protect=[])
    figs = result["backends"]["closed"]
    assert figs["classes_unreadable"] == ["dress"] and "dress" not in figs["winners"]
    shown = [c for c in CLASS_MAP if any(c in p.masks and p.masks[c].any() for p in photos)]
    assert figs["miou_best"] == pytest.approx((len(shown) - 1) / len(shown), abs=1e-4)  # the 1.0s and a 0
    write_mask_table(tmp_path / "t.toml", figs["winners"], segmenter="closed", dataset="synthetic")
    assert load_mask_table(tmp_path / "t.toml").lookup("the dress") is None
