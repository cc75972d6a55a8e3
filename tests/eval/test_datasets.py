"""Labelled sets in label-map and COCO form read to the same masks, equal to the regions drawn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from restyle.errors import InvalidImageError, InvalidParameterError
from restyle.eval.datasets import (
    decode_rle,
    default_class_map,
    encode_rle,
    load_class_map,
    read_coco,
    read_label_maps,
)
from restyle.eval.synthetic import CLASS_MAP, CLASSES, outline, synthetic_photos, write_synthetic_set


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_synthetic_set(tmp_path_factory.mktemp("set") / "synthetic", count=6, seed=0)


def _copy(synthetic: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    shutil.copytree(synthetic["root"], tmp_path / "set")
    return {k: tmp_path / "set" / v.relative_to(synthetic["root"]) for k, v in synthetic.items()}


def test_both_formats_read_to_the_drawn_masks(synthetic):
    by_maps = read_label_maps(synthetic["images"], synthetic["labels"], synthetic["label_names"])
    by_coco = read_coco(synthetic["annotations"], synthetic["images"])
    drawn = [photo for photo, _ in synthetic_photos(6, seed=0)]
    assert [p.name for p in by_maps] == [p.name for p in by_coco] == [p.name for p in drawn]
    for a, b, truth in zip(by_maps, by_coco, drawn):
        assert np.array_equal(np.asarray(a.image), np.asarray(truth.image))
        assert np.array_equal(np.asarray(b.image), np.asarray(truth.image))
        assert sorted(a.masks) == sorted(b.masks) == sorted(truth.masks)
        for name, mask in truth.masks.items():  # tolerance 0: polygons are rasterised as they were drawn
            assert a.masks[name].dtype == bool and np.array_equal(a.masks[name], mask), (a.name, name)
            assert np.array_equal(b.masks[name], mask), (b.name, name)


def test_the_set_has_every_outfit_and_the_garments_are_their_polygons(synthetic):
    photos = synthetic_photos(6, seed=0)
    outfits = [sorted(set(p.masks) & {"dress", "skirt", "top"}) for p, _ in photos]
    assert outfits == [["dress"], ["skirt", "top"], ["dress"], ["skirt", "top"], ["dress"], []]
    for photo, polygons in photos:
        for name, xy in polygons.items():  # nothing is drawn over a garment: it is exactly its polygon
            canvas = Image.new("1", photo.image.size, 0)
            ImageDraw.Draw(canvas).polygon(xy, fill=1)
            assert np.array_equal(np.asarray(canvas), photo.masks[name])
    sizes = {p.image.size for p, _ in photos}
    assert len(sizes) > 2 and synthetic_photos(6, seed=1)[0][0].image.size != photos[0][0].image.size


def test_the_files_cover_every_form(synthetic):
    coco = json.loads(synthetic["annotations"].read_text())
    segs = [a["segmentation"] for a in coco["annotations"]]
    assert any(isinstance(s, list) for s in segs)  # polygons
    assert any(isinstance(s, dict) and isinstance(s["counts"], str) for s in segs)  # compressed RLE
    assert any(isinstance(s, dict) and isinstance(s["counts"], list) for s in segs)  # uncompressed RLE
    skin = CLASSES.index("skin")
    assert all(sum(a["category_id"] == skin and a["image_id"] == i["id"] for a in coco["annotations"]) == 2
               for i in coco["images"])  # fmt: skip
    modes = {Image.open(p).mode for p in synthetic["labels"].glob("*.png")}
    assert modes == {"P", "L"}
    assert synthetic["label_names"].read_text().split() == list(CLASSES)
    assert load_class_map(synthetic["class_map"]) == CLASS_MAP


def _coco_polygon(tmp_path: Path, polygons: list[list[float]], size: tuple[int, int] = (10, 8)) -> np.ndarray:
    w, h = size
    Image.new("RGB", size).save(tmp_path / "p.png")
    coco = dict(
        images=[dict(id=1, file_name="p.png", width=w, height=h)],
        annotations=[dict(id=1, image_id=1, category_id=1, segmentation=polygons)],
        categories=[dict(id=1, name="dress")],
    )
    (tmp_path / "c.json").write_text(json.dumps(coco))
    return read_coco(tmp_path / "c.json", tmp_path)[0].masks["dress"]


def test_polygons_cover_the_pixels_whose_centre_they_contain(tmp_path):
    square = _coco_polygon(tmp_path, [[2, 1, 5, 1, 5, 3, 2, 3]])  # corners: pixels x 2..4, y 1..2
    assert np.array_equal(np.argwhere(square), [[y, x] for y in (1, 2) for x in (2, 3, 4)])
    # the triangle (0, 0), (4, 0), (0, 4) holds the centres with x + y + 1 < 4: 3 + 2 + 1 pixels
    triangle = _coco_polygon(tmp_path, [[0, 0, 4, 0, 0, 4]])
    assert np.array_equal(np.argwhere(triangle), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0]])
    nudged = _coco_polygon(tmp_path, [[2.4, 1, 5.6, 1, 5.6, 3, 2.4, 3]])  # centres 2.5 and 5.5 now inside
    assert np.flatnonzero(nudged.any(0)).tolist() == [2, 3, 4, 5]
    two = _coco_polygon(tmp_path, [[0, 0, 1, 0, 1, 1, 0, 1], [5, 4, 6, 4, 6, 5, 5, 5]])  # unioned
    assert np.argwhere(two).tolist() == [[0, 0], [4, 5]]
    with pytest.raises(InvalidParameterError, match=r"c\.json: annotation 1: a polygon is a flat list"):
        _coco_polygon(tmp_path, [[0, 0, 1, 1]])


def test_outline_traces_a_drawn_garment():
    photo, _ = synthetic_photos(3, seed=3)[1]
    skirt = photo.masks["skirt"]
    xy = outline(skirt)
    assert (
        min(xy[0::2]) == np.flatnonzero(skirt.any(0))[0]
        and max(xy[1::2]) == np.flatnonzero(skirt.any(1))[-1] + 1
    )
    with pytest.raises(ValueError, match="one run per row"):
        outline(np.eye(4, dtype=bool) | np.eye(4, dtype=bool)[::-1])


def _runs(mask: np.ndarray) -> list[int]:
    """A test's own RLE encoder: walk the pixels column by column, counting alternating runs from 0."""
    runs, current, value = [], 0, False
    for x in range(mask.shape[1]):
        for y in range(mask.shape[0]):
            if bool(mask[y, x]) != value:
                runs.append(current)
                current, value = 0, not value
            current += 1
    return [*runs, current]


def test_rle_decodes_hand_computed_counts():
    expected = np.array([[0, 1, 0], [1, 0, 0]], bool)  # column-major: 1 off, 2 on, 3 off
    assert np.array_equal(decode_rle([1, 2, 3], 2, 3), expected)
    # COCO's maskApi.c stores runs from the 4th on as the difference to the run two before; pycocotools'
    # frPyObjects([1, 2, 3]) is "123" (checked by a reviewer against pycocotools 2.0.11)
    assert np.array_equal(decode_rle("123", 2, 3), expected)
    assert encode_rle(expected) == {"size": [2, 3], "counts": "123"}
    four = np.array([[0, 1, 0, 1, 1], [1, 0, 0, 1, 1]], bool)  # runs 1, 2, 3, 4: the 4th stored as 4 - 2 = 2
    assert encode_rle(four)["counts"] == "1232" and np.array_equal(decode_rle("1232", 2, 5), four)
    assert decode_rle("512", 2, 4).T.reshape(-1).tolist() == [False] * 5 + [True] + [False] * 2
    assert decode_rle("T3", 10, 10).sum() == 0  # one run of 100: two 5-bit groups
    with pytest.raises(ValueError, match="cover"):
        decode_rle([1, 2], 2, 3)


@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trip(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.uniform(0.05, 0.95)
    mask[0, 0] = bool(seed % 2)  # masks that start with foreground get a leading 0-run
    h, w = mask.shape
    assert encode_rle(mask, compressed=False)["counts"] == _runs(mask)
    assert np.array_equal(decode_rle(_runs(mask), h, w), mask)
    assert np.array_equal(decode_rle(encode_rle(mask)["counts"], h, w), mask)
    big = np.zeros((300, 200), bool)
    big[100:250, 20:180] = True  # long runs and large differences between them
    assert np.array_equal(decode_rle(encode_rle(big)["counts"], 300, 200), big)


def test_label_maps_with_names_given_as_a_list_and_void_pixels(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.new("RGB", (10, 8), (200, 10, 10)).save(tmp_path / "img" / "a.jpg")
    ids = np.zeros((8, 10), np.uint8)
    ids[2:5, 3:7], ids[0, 0] = 2, 255
    Image.fromarray(ids).save(tmp_path / "lab" / "a.png")
    (photo,) = read_label_maps(tmp_path / "img", tmp_path / "lab", ["background", "hat", "dress"])
    assert photo.name == "a" and list(photo.masks) == ["dress"] and photo.masks["dress"].sum() == 12
    with pytest.raises(InvalidParameterError, match=r"a\.png.*\[2, 255\] are out of range"):
        read_label_maps(tmp_path / "img", tmp_path / "lab", ["background", "hat"], ignore_ids=())
    Image.new("RGB", (10, 8)).save(tmp_path / "lab" / "a.png")  # a colour-coded map, not class ids
    with pytest.raises(InvalidImageError, match=r"a\.png: mode RGB"):
        read_label_maps(tmp_path / "img", tmp_path / "lab", ["background", "hat", "dress"])
    Image.new("L", (9, 8)).save(tmp_path / "lab" / "a.png")
    with pytest.raises(InvalidImageError, match=r"a\.png: label map is 9x8"):
        read_label_maps(tmp_path / "img", tmp_path / "lab", ["background", "hat", "dress"])


def test_bad_label_maps_are_refused_naming_the_file(synthetic, tmp_path):
    paths = _copy(synthetic, tmp_path)
    with pytest.raises(InvalidParameterError, match=r"synthetic_00\.png: class ids \[\d.*out of range"):
        read_label_maps(paths["images"], paths["labels"], ["background", "hair"])
    (paths["images"] / "synthetic_03.png").unlink()
    with pytest.raises(InvalidImageError, match=r"synthetic_03\.png: no photo synthetic_03"):
        read_label_maps(paths["images"], paths["labels"], paths["label_names"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameterError, match=r"empty: no label maps"):
        read_label_maps(paths["images"], tmp_path / "empty", paths["label_names"])


def _write(tmp_path: Path, coco: dict) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco))
    return path


def test_bad_coco_is_refused_naming_the_file(synthetic, tmp_path):
    coco = json.loads(synthetic["annotations"].read_text())
    images = synthetic["images"]
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(InvalidParameterError, match=r"broken\.json: malformed JSON"):
        read_coco(tmp_path / "broken.json", images)
    with pytest.raises(InvalidParameterError, match=r"bad\.json: COCO JSON needs the lists"):
        read_coco(_write(tmp_path, {"images": []}), images)
    rle = next(a for a in coco["annotations"] if isinstance(a["segmentation"], dict))
    rle["segmentation"]["size"] = [1, 1]
    with pytest.raises(InvalidParameterError, match=rf"bad\.json: annotation {rle['id']}: RLE size \[1, 1\]"):
        read_coco(_write(tmp_path, coco), images)
    coco = json.loads(synthetic["annotations"].read_text())
    coco["annotations"][0]["category_id"] = 99
    with pytest.raises(InvalidParameterError, match=r"bad\.json: annotation 1: unknown"):
        read_coco(_write(tmp_path, coco), images)
    coco = json.loads(synthetic["annotations"].read_text())
    coco["images"][0].update(width=10, height=10)
    with pytest.raises(InvalidImageError, match=r"bad\.json: image 1: declared 10x10"):
        read_coco(_write(tmp_path, coco), images)
    coco = json.loads(synthetic["annotations"].read_text())
    coco["images"][0]["file_name"] = "missing.png"
    with pytest.raises(InvalidImageError, match=r"bad\.json: image 1: no photo .*missing\.png"):
        read_coco(_write(tmp_path, coco), images)


def test_coco_unions_annotations_and_checks_runs(synthetic, tmp_path):
    coco = json.loads(synthetic["annotations"].read_text())
    first = coco["images"][0]
    h, w = first["height"], first["width"]
    left, right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    left[:4, :4], right[-4:, -4:] = True, True
    coco["annotations"] = [
        dict(id=1, image_id=1, category_id=6, segmentation=encode_rle(left)),
        dict(id=2, image_id=1, category_id=6, segmentation=encode_rle(right, compressed=False)),
        dict(id=3, image_id=1, category_id=6, segmentation={"size": [h, w], "counts": [3]}),
    ]
    with pytest.raises(InvalidParameterError, match=r"annotation 3: the runs cover 3 pixels"):
        read_coco(_write(tmp_path, coco), synthetic["images"])
    coco["annotations"].pop()
    photos = read_coco(_write(tmp_path, coco), synthetic["images"])
    assert np.array_equal(photos[0].masks[CLASSES[6]], left | right)
    assert all(p.masks == {} for p in photos[1:])  # photos without annotations are kept, maskless


def test_class_maps(tmp_path):
    (tmp_path / "m.toml").write_text('dress = ["the dress", "a  gown"]\nskirt = "the skirt"\n')
    assert load_class_map(tmp_path / "m.toml") == {"dress": ["the dress", "a gown"], "skirt": ["the skirt"]}
    (tmp_path / "m.json").write_text('{"dress": ["the dress"]}')
    assert load_class_map(tmp_path / "m.json") == {"dress": ["the dress"]}
    (tmp_path / "bad.json").write_text('{"dress": ["the dress",]}')
    with pytest.raises(InvalidParameterError, match=r"bad\.json: malformed class map"):
        load_class_map(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text('{"dress": []}')
    with pytest.raises(InvalidParameterError, match=r"empty\.json: class 'dress'"):
        load_class_map(tmp_path / "empty.json")
    with pytest.raises(InvalidParameterError, match=r"nothing\.json: no such"):
        load_class_map(tmp_path / "nothing.json")
    assert default_class_map(["Background", "Dress", "upper_clothes"]) == {
        "Dress": ["the dress", "a dress", "dress"],
        "upper_clothes": ["the upper clothes", "an upper clothes", "upper clothes"],
    }


@pytest.mark.parametrize("fmt", ["labelmap", "coco"])
def test_a_set_is_read_one_photo_at_a_time(synthetic, fmt, monkeypatch):
    """open_label_maps / open_coco read nothing up front but the index; slicing reads nothing; a photo is
    read when it is asked for (a 17k-photo set is never in memory whole)."""
    import restyle.eval.datasets as datasets

    reads: list[str] = []
    real = datasets.load_image
    monkeypatch.setattr(
        datasets, "load_image", lambda path, **kw: reads.append(Path(path).stem) or real(path, **kw)
    )
    if fmt == "labelmap":
        photos = datasets.open_label_maps(synthetic["images"], synthetic["labels"], synthetic["label_names"])
        eager = read_label_maps(synthetic["images"], synthetic["labels"], synthetic["label_names"])
    else:
        photos = datasets.open_coco(synthetic["annotations"], synthetic["images"])
        eager = read_coco(synthetic["annotations"], synthetic["images"])
    reads.clear()
    first_two = photos[:2]
    assert len(photos) == 6 and len(first_two) == 2 and reads == []
    assert [p.name for p in first_two] == [p.name for p in eager[:2]] and len(reads) == 2
    last = photos[-1]
    assert last.name == eager[-1].name and sorted(last.masks) == sorted(eager[-1].masks)
    assert all(np.array_equal(last.masks[k], eager[-1].masks[k]) for k in last.masks)
    assert len(reads) == 3
    with pytest.raises(IndexError):
        photos[6]


def test_eval_masks_limit_reads_only_the_first_photos(synthetic, monkeypatch):
    import restyle.eval.datasets as datasets
    from restyle.cli.eval import _read_set

    reads: list[str] = []
    real = datasets.load_image
    monkeypatch.setattr(
        datasets, "load_image", lambda path, **kw: reads.append(Path(path).stem) or real(path, **kw)
    )
    photos = _read_set(synthetic["root"], None, None, None, 2)
    assert len(photos) == 2 and reads == []
    list(photos)
    assert len(reads) == 2
