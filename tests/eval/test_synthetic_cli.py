"""`restyle eval synthetic`: a set and a rows file both eval commands read as written."""

from __future__ import annotations

import json

from typer.testing import CliRunner


def test_the_synthetic_set_and_rows_file_are_what_the_readers_take(tmp_path):
    from restyle.cli import app
    from restyle.eval.datasets import read_coco, read_label_maps
    from restyle.eval.styles import load_style_rows

    out = CliRunner().invoke(app, ["eval", "synthetic", str(tmp_path / "set"), "--count", "3"])
    assert out.exit_code == 0, out.output
    root = tmp_path / "set"
    maps = read_label_maps(root / "images", root / "labels", root / "labels.txt")
    coco = read_coco(root / "annotations.json", root / "images")
    assert len(maps) == len(coco) == 3
    rows = load_style_rows(root / "styles.jsonl")
    assert [r.color for r in rows] == ["red", "navy"] and all(r.photo.is_file() for r in rows)
    assert json.loads((root / "styles.jsonl").read_text().splitlines()[0])["garment"] == "the dress"
    bad = CliRunner().invoke(app, ["eval", "synthetic", str(tmp_path / "x"), "--count", "0"])
    assert bad.exit_code != 0 and "--count: 0 is out of range" in str(bad.exception)
