"""`restyle package` serves every inpainter family unchanged: each family's tiny model packed with a
segmenter of another backend, extracted and driven through code/inference.py in a fresh process, masked by
text through the packaged segmenter."""

from __future__ import annotations

import pytest

from restyle.package import build_archive, inspect_archive, safe_extract
from restyle.package.verify import drive

PACKED = [("sd", "parser"), ("sdxl", "sam3"), ("flux-fill", "clipseg"), ("qwen-edit", "parser")]


@pytest.mark.parametrize(("family", "segmenter"), PACKED)
def test_an_archive_of_each_family_is_driven_like_the_toolkit(
    family_folder, segmenter_folder, family, segmenter, tmp_path
):
    archive = tmp_path / "model.tar.gz"
    build_archive(family_folder(family), archive, segmenter=segmenter_folder(segmenter))
    names = inspect_archive(archive)
    assert "segmenter/config.json" in names
    assert ("unet/config.json" if family in ("sd", "sdxl") else "transformer/config.json") in names
    safe_extract(archive, tmp_path / "model")
    out = drive(tmp_path / "model", steps=2, garment="the dress")
    assert out["family"] == family and out["segmenter"].startswith(segmenter)
    assert out["images"] == [["JPEG", 48, 64], ["JPEG", 48, 64]] and out["seeds"] == [0, 1]
