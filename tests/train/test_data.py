"""Training data: finding, checking and captioning images; fitting them to a square without squashing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle.errors import InvalidImageError, InvalidParameterError, RestyleError
from restyle.train.data import (
    ATTRIBUTES,
    MAX_LISTED,
    METADATA,
    PAD_GREY,
    caption_for,
    check_images,
    find_masks,
    fit_square,
    list_images,
    read_captions,
    scan_class_images,
    scan_instances,
    write_caption_template,
)

PROMPT = "a model in sks skirt"
RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)


def save(path: Path, size: tuple[int, int] = (40, 48), color: tuple[int, int, int] = GREEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def truncated_png(path: Path) -> Path:
    """A PNG cut in the middle of its pixel data: it opens, but decoding it fails."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def photos(folder: Path, n: int = 3, size: tuple[int, int] = (40, 48)) -> list[Path]:
    return [save(folder / f"look-{i}.png", size) for i in range(n)]


# -- list_images / check_images ------------------------------------------------------------------------


def test_list_images_only_image_files_directly_in_the_folder_sorted(tmp_path: Path) -> None:
    save(tmp_path / "b.png")
    save(tmp_path / "a.JPG")
    save(tmp_path / "c.webp")
    save(tmp_path / "masks" / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / METADATA).write_text("")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.webp"]


def test_check_images_passes_readable_images_at_the_minimum_side(tmp_path: Path) -> None:
    files = [save(tmp_path / "a.png", (32, 90)), save(tmp_path / "b.png", (64, 32))]
    check_images(files, "instance_dir", min_side=32)


def test_check_images_names_every_bad_file_in_one_error(tmp_path: Path) -> None:
    good = save(tmp_path / "good.png", (48, 48))
    broken = truncated_png(tmp_path / "broken.png")
    small = save(tmp_path / "small.png", (20, 20))
    not_image = tmp_path / "text.png"
    not_image.write_text("hello")
    with pytest.raises(InvalidImageError) as err:
        check_images([good, broken, small, not_image], "instance_dir", min_side=32)
    msg = str(err.value)
    assert err.value.field == "instance_dir"
    assert "3 of 4" in msg
    assert "broken.png: image data is corrupt or truncated" in msg  # the training loader's own words
    assert "small.png: 20x20" in msg and ">= 32" in msg
    assert "text.png" in msg
    assert "good.png" not in msg


def test_check_images_lists_at_most_max_listed_and_counts_the_rest(tmp_path: Path) -> None:
    files = [save(tmp_path / f"tiny-{i:02d}.png", (4, 4)) for i in range(MAX_LISTED + 5)]
    with pytest.raises(InvalidImageError) as err:
        check_images(files, "class_dir", min_side=8)
    msg = str(err.value)
    assert err.value.field == "class_dir"
    assert f"tiny-{MAX_LISTED - 1:02d}.png" in msg
    assert f"tiny-{MAX_LISTED:02d}.png" not in msg
    assert "... and 5 more" in msg


# -- scan_instances / scan_class_images / find_masks -------------------------------------------------


def test_scan_instances_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError) as err:
        scan_instances(tmp_path / "nope", PROMPT, min_side=32, min_images=1)
    assert err.value.field == "instance_dir"
    assert "nope" in str(err.value)


def test_scan_instances_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidImageError) as err:
        scan_instances(tmp_path, PROMPT, min_side=32, min_images=1)
    assert err.value.field == "instance_dir"


def test_scan_instances_names_a_truncated_and_a_small_image_together(tmp_path: Path) -> None:
    photos(tmp_path, 3, (48, 48))
    truncated_png(tmp_path / "cut.png")
    save(tmp_path / "thumb.png", (20, 20))
    with pytest.raises(InvalidImageError) as err:
        scan_instances(tmp_path, PROMPT, min_side=32, min_images=1)
    assert err.value.field == "instance_dir"
    assert "cut.png" in str(err.value) and "thumb.png" in str(err.value)


def test_scan_instances_examples_captions_and_masks(tmp_path: Path) -> None:
    save(tmp_path / "a.jpg")
    save(tmp_path / "b.png")
    save(tmp_path / "masks" / "a.png")  # mask suffix may differ from the photo's
    save(tmp_path / "masks" / "zzz.png")  # a mask without a photo is ignored
    examples = scan_instances(tmp_path, PROMPT, min_side=32, min_images=1)
    assert [e.path.name for e in examples] == ["a.jpg", "b.png"]
    assert [e.caption for e in examples] == [PROMPT, PROMPT]
    assert examples[0].mask_path == tmp_path / "masks" / "a.png"
    assert examples[1].mask_path is None


def test_scan_instances_uses_metadata_captions(tmp_path: Path) -> None:
    photos(tmp_path, 2)
    (tmp_path / METADATA).write_text(json.dumps({"file_name": "look-1.png", "text": "sks skirt, red"}) + "\n")
    examples = scan_instances(tmp_path, PROMPT, min_side=32, min_images=1)
    assert [e.caption for e in examples] == [PROMPT, "sks skirt, red"]


def test_scan_instances_mask_dir_overrides_the_default(tmp_path: Path) -> None:
    photos(tmp_path / "inst", 2)
    save(tmp_path / "inst" / "masks" / "look-0.png")
    save(tmp_path / "mine" / "look-1.png")
    examples = scan_instances(
        tmp_path / "inst", PROMPT, min_side=32, min_images=1, mask_dir=tmp_path / "mine"
    )
    assert [e.mask_path for e in examples] == [None, tmp_path / "mine" / "look-1.png"]


def test_scan_instances_warns_about_few_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    photos(tmp_path, 2)
    with caplog.at_level(logging.WARNING, logger="restyle.train.data"):
        assert len(scan_instances(tmp_path, PROMPT, min_side=32, min_images=5)) == 2
    assert "only 2 image(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="restyle.train.data"):
        scan_instances(tmp_path, PROMPT, min_side=32, min_images=2)
    assert caplog.text == ""


def test_scan_class_images(tmp_path: Path) -> None:
    assert scan_class_images(tmp_path / "missing", "a skirt", min_side=32) == []
    photos(tmp_path, 2)
    save(tmp_path / "masks" / "look-1.png")
    (tmp_path / METADATA).write_text("not json, and ignored for class images\n")
    examples = scan_class_images(tmp_path, "a skirt", min_side=32)
    assert [(e.path.name, e.caption) for e in examples] == [
        ("look-0.png", "a skirt"),
        ("look-1.png", "a skirt"),
    ]
    assert [e.mask_path for e in examples] == [None, tmp_path / "masks" / "look-1.png"]


def test_scan_class_images_refuses_small_images_by_field(tmp_path: Path) -> None:
    save(tmp_path / "c.png", (16, 64))
    with pytest.raises(InvalidImageError) as err:
        scan_class_images(tmp_path, "a skirt", min_side=32)
    assert err.value.field == "class_dir"
    assert "c.png" in str(err.value)


def test_find_masks(tmp_path: Path) -> None:
    files = [tmp_path / "a.jpg", tmp_path / "b.png"]
    assert find_masks(tmp_path / "masks", files) == {}
    save(tmp_path / "masks" / "a.webp")
    save(tmp_path / "masks" / "c.png")
    assert find_masks(tmp_path / "masks", files) == {"a.jpg": tmp_path / "masks" / "a.webp"}


# -- captions ------------------------------------------------------------------------------------------


def write_meta(folder: Path, *rows: object) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / METADATA).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_read_captions_without_metadata_uses_the_prompt(tmp_path: Path) -> None:
    files = photos(tmp_path, 2)
    assert read_captions(tmp_path, files, PROMPT) == {"look-0.png": PROMPT, "look-1.png": PROMPT}


def test_read_captions_text_and_attributes(tmp_path: Path) -> None:
    files = photos(tmp_path, 3)
    write_meta(
        tmp_path,
        {"file_name": "look-0.png", "text": "  sks   skirt\n in red "},
        "",
        {"file_name": "look-2.png", "attributes": {"fabric": "silk", "color": "red", "garment": "skirt"}},
    )
    assert read_captions(tmp_path, files, PROMPT) == {
        "look-0.png": "sks skirt in red",
        "look-1.png": PROMPT,
        "look-2.png": f"{PROMPT}, skirt, red, silk",
    }


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ("{not json", "line 2"),
        ({"file_name": "other.png", "text": "x"}, "other.png"),
        ({"text": "no file name"}, "None"),
        (["look-0.png"], "line 2"),
        ({"file_name": "look-0.png", "attributes": {"colour": "red"}}, "colour"),
    ],
)
def test_read_captions_bad_rows_name_the_line(tmp_path: Path, row: object, where: str) -> None:
    files = photos(tmp_path, 1)
    write_meta(tmp_path, {"file_name": "look-0.png", "text": "fine"}, row)
    with pytest.raises(InvalidParameterError) as err:
        read_captions(tmp_path, files, PROMPT)
    assert err.value.field == "metadata"
    assert "metadata.jsonl line 2" in str(err.value)
    assert where in str(err.value)


def test_read_captions_unhashable_file_name(tmp_path: Path) -> None:
    files = photos(tmp_path, 1)
    write_meta(tmp_path, {"file_name": ["look-0.png"], "text": "x"})
    with pytest.raises(InvalidParameterError) as err:
        read_captions(tmp_path, files, PROMPT)
    assert err.value.field == "metadata"


def test_caption_for_text_wins_over_attributes() -> None:
    row = {"text": "sks skirt", "attributes": {"color": "red"}}
    assert caption_for(row, PROMPT) == "sks skirt"


def test_caption_for_attributes_in_vocabulary_order() -> None:
    attrs = {"fabric": "linen", "color": "black", "pattern": "", "style": None, "garment": "skirt"}
    assert caption_for({"text": "  ", "attributes": attrs}, PROMPT) == f"{PROMPT}, skirt, black, linen"
    assert caption_for({}, PROMPT) == PROMPT
    assert caption_for({"attributes": {}}, PROMPT) == PROMPT


def test_caption_for_keeps_but_warns_about_words_outside_the_vocabulary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="restyle.train.data"):
        assert caption_for({"attributes": {"color": "Blorange"}}, PROMPT, "x line 3") == f"{PROMPT}, Blorange"
    assert "Blorange" in caplog.text and "x line 3" in caplog.text


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"attributes": ["red"]}, "attributes must be an object"),
        ({"attributes": {"colour": "red", "size": "M"}}, "colour, size"),
    ],
)
def test_caption_for_refuses_bad_attributes(row: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match) as err:
        caption_for(row, PROMPT)
    assert err.value.field == "metadata"


def test_write_caption_template(tmp_path: Path) -> None:
    photos(tmp_path, 2)
    out = write_caption_template(tmp_path)
    assert out == tmp_path / METADATA
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file_name"] for r in rows] == ["look-0.png", "look-1.png"]
    for r in rows:
        assert list(r["attributes"]) == [k for k in ATTRIBUTES if k != "garment"]
        assert set(r["attributes"].values()) == {""}
    # the untouched template reads back as the plain prompt
    assert read_captions(tmp_path, list_images(tmp_path), PROMPT) == {
        "look-0.png": PROMPT,
        "look-1.png": PROMPT,
    }


def test_write_caption_template_keeps_an_existing_file_unless_asked(tmp_path: Path) -> None:
    photos(tmp_path, 1)
    (tmp_path / METADATA).write_text("mine\n")
    with pytest.raises(RestyleError, match="overwrite"):
        write_caption_template(tmp_path)
    assert (tmp_path / METADATA).read_text() == "mine\n"
    write_caption_template(tmp_path, overwrite=True)
    assert "look-0.png" in (tmp_path / METADATA).read_text()


def test_write_caption_template_needs_images(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError) as err:
        write_caption_template(tmp_path)
    assert err.value.field == "instance_dir"
    assert not (tmp_path / METADATA).exists()


def test_write_caption_template_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(RestyleError) as err:
        write_caption_template(tmp_path / "nope")
    assert err.value.field == "instance_dir"


# -- fit_square ----------------------------------------------------------------------------------------


def bands(w: int = 100, h: int = 50) -> Image.Image:
    """Left quarter red, middle half green, right quarter blue."""
    a = np.empty((h, w, 3), np.uint8)
    a[:] = GREEN
    a[:, : w // 4] = RED
    a[:, w - w // 4 :] = BLUE
    return Image.fromarray(a)


def dominant(px: np.ndarray) -> np.ndarray:
    """Index of the strongest channel per pixel: 0 red, 1 green, 2 blue."""
    return px.astype(int).argmax(axis=-1)


def test_crop_without_mask_is_a_centre_crop() -> None:
    out, mask = fit_square(bands(), None, 32, "crop")
    assert out.size == (32, 32) and out.mode == "RGB" and mask is None
    a = np.asarray(out)
    # the middle half (green) exactly fills the square: no red or blue anywhere, pure green inside
    assert (dominant(a) == 1).all()
    assert (np.abs(a[:, 2:-2].astype(int) - GREEN).max()) <= 4


def test_crop_portrait_is_centred_vertically() -> None:
    out, _ = fit_square(bands().transpose(Image.Transpose.TRANSPOSE), None, 32, "crop")
    assert out.size == (32, 32)
    assert (dominant(np.asarray(out)) == 1).all()


def test_crop_of_a_square_is_a_plain_resize() -> None:
    img = bands(60, 60)
    out, _ = fit_square(img, None, 30, "crop")
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((30, 30), Image.Resampling.LANCZOS)))


def test_crop_is_centred_on_the_mask() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    img[:] = GREEN
    img[10:30, 50:70] = RED  # the garment, right of the middle
    mask = np.zeros((50, 100), np.uint8)
    mask[10:30, 50:70] = 255
    out, mfit = fit_square(Image.fromarray(img), Image.fromarray(mask), 32, "crop")
    assert out.size == mfit.size == (32, 32) and mfit.mode == "L"
    m = np.asarray(mfit)
    assert set(np.unique(m)) <= {0, 255}
    ys, xs = np.nonzero(m)
    assert abs((xs.min() + xs.max() + 1) / 2 - 16) <= 1  # centred horizontally on the garment
    # the image was cut the same way: the garment sits under the mask, and was not squashed
    assert (dominant(np.asarray(out)[m > 0]) == 0).mean() > 0.95
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 1


def test_crop_on_a_mask_at_the_edge_stays_inside_the_image() -> None:
    mask = np.zeros((50, 100), np.uint8)
    mask[:, 90:] = 255
    out, mfit = fit_square(bands(), Image.fromarray(mask), 32, "crop")
    assert out.size == (32, 32)
    a = np.asarray(out)
    assert (dominant(a[:, -8:]) == 2).all()  # the right-most square: blue on its right
    assert np.asarray(mfit)[:, -5:].all() and not np.asarray(mfit)[:, :20].any()


def test_crop_with_an_empty_mask_is_a_centre_crop() -> None:
    empty = Image.new("L", (100, 50), 0)
    out, mfit = fit_square(bands(), empty, 32, "crop")
    assert np.array_equal(np.asarray(out), np.asarray(fit_square(bands(), None, 32, "crop")[0]))
    assert not np.asarray(mfit).any()


def test_pad_keeps_the_whole_image_on_a_grey_border() -> None:
    mask = Image.new("L", (100, 50), 255)
    out, mfit = fit_square(bands(), mask, 32, "pad")
    a, m = np.asarray(out), np.asarray(mfit)
    assert out.size == mfit.size == (32, 32)
    # 100x50 -> 32x16, centred: rows 8..23 hold the photo
    assert (a[:8] == PAD_GREY).all() and (a[24:] == PAD_GREY).all()
    assert not m[:8].any() and not m[24:].any()
    assert m[8:24].all()
    photo = dominant(a[8:24])
    assert (photo[:, :6] == 0).all() and (photo[:, 13:19] == 1).all() and (photo[:, -6:] == 2).all()


def test_pad_portrait_borders_left_and_right() -> None:
    img = bands().transpose(Image.Transpose.TRANSPOSE)  # 50x100
    out, mfit = fit_square(img, None, 32, "pad")
    a = np.asarray(out)
    assert mfit is None
    assert (a[:, :8] == PAD_GREY).all() and (a[:, 24:] == PAD_GREY).all()
    assert not (a[:, 8:24] == PAD_GREY).all()


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_fit_never_squashes(mode: str) -> None:
    img = Image.new("RGB", (120, 60), (255, 255, 255))
    img.paste((0, 0, 0), (50, 20, 70, 40))  # a 20x20 black square in the middle
    out, _ = fit_square(img, None, 48, mode)
    dark = np.asarray(out.convert("L")) < 100
    ys, xs = np.nonzero(dark)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert abs(h - w) <= 1
    assert w == pytest.approx(20 * (48 / 60 if mode == "crop" else 48 / 120), abs=1.5)
