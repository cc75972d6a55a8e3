"""Labelled photo sets in the common human-parsing formats, read into one shape: `LabelledPhoto`.

Two formats:
- label maps (ATR, LIP, CIHP): one PNG per photo, one integer class per pixel (palette `P` or grey `L`),
  matched to its photo by file stem; a text file names the classes, one per line, line i = class id i.
- COCO JSON (Fashionpedia, ModaNet, DeepFashion2 converted): `images`, `annotations` whose segmentation is
  polygons or RLE (uncompressed counts or COCO's compressed string), `categories`.

A class map says which garment prompts to try for each dataset class (`load_class_map`, or
`default_class_map` built from the class names).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from restyle.errors import InvalidImageError, InvalidParameterError
from restyle.images import load_image

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
IGNORE_IDS = (255,)  # the "void" id of LIP/CIHP-style maps: unlabelled, not a class


@dataclass
class LabelledPhoto:
    """A photo and one boolean (H, W) mask per class present in it (absent classes are absent)."""

    name: str  # the photo's file stem
    image: Image.Image  # PIL RGB
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _bad(path: Path | str, problem: str, image: bool = False) -> InvalidParameterError | InvalidImageError:
    cls = InvalidImageError if image else InvalidParameterError
    return cls(f"{path}: {problem}", field="dataset")


def _read_names(label_names: Sequence[str] | str | Path) -> list[str]:
    if isinstance(label_names, str | Path):
        path = Path(label_names)
        if not path.is_file():
            raise _bad(path, "no such label-names file")
        lines = path.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        names, where = [line.strip() for line in lines], str(path)
    else:
        names, where = [str(n).strip() for n in label_names], "label_names"
    if not names or any(not n for n in names):
        raise _bad(where, "class names must be non-empty, one per class id (line i = id i)")
    if len(set(names)) != len(names):
        raise _bad(where, f"duplicate class names: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def _find_photo(images_dir: Path, stem: str, label: Path) -> Path:
    for suffix in PHOTO_SUFFIXES:
        if (images_dir / f"{stem}{suffix}").is_file():
            return images_dir / f"{stem}{suffix}"
    raise _bad(label, f"no photo {stem}.jpg or {stem}.png in {images_dir}", image=True)


def _read_label_map(path: Path) -> np.ndarray:
    """A label PNG as its integer class ids (H, W): palette indices for `P`, values for `L`/`I`."""
    try:
        with Image.open(path) as img:
            if img.mode not in {"P", "L", "I", "I;16"}:
                raise _bad(path, f"mode {img.mode}: a label map holds one class id per pixel (P or L)", True)
            return np.asarray(img).astype(np.int64)
    except (UnidentifiedImageError, OSError) as err:
        raise _bad(path, f"not a readable label map ({err})", image=True) from err


class LazyPhotos(Sequence[LabelledPhoto]):
    """Labelled photos read from disk when asked for, one at a time, so a set of any size (ATR: 17k
    photos) is never held in memory whole; slicing (`photos[:100]`) reads nothing. A photo's problems
    (a corrupt file, a label map of the wrong size) are raised when it is read, naming its file."""

    def __init__(self, count: int, load: Any, indices: range | None = None) -> None:
        self._load = load  # index -> LabelledPhoto
        self._indices = indices if indices is not None else range(count)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return LazyPhotos(0, self._load, self._indices[index])
        return self._load(self._indices[index])


def open_label_maps(
    images_dir: str | Path,
    labels_dir: str | Path,
    label_names: Sequence[str] | str | Path,
    *,
    ignore_ids: tuple[int, ...] = IGNORE_IDS,
) -> LazyPhotos:
    """An ATR / LIP / CIHP style set, read lazily (see `read_label_maps`, which reads it all at once).

    The folders, the class names and that every label map has its photo are checked now; each photo
    and label map is read when it is asked for.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    names = _read_names(label_names)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise _bad(folder, "no such folder")
    labels = sorted(labels_dir.glob("*.png"))
    if not labels:
        raise _bad(labels_dir, "no label maps (*.png) here")
    pairs = [(label, _find_photo(images_dir, label.stem, label)) for label in labels]

    def load(index: int) -> LabelledPhoto:
        label, photo = pairs[index]
        image = load_image(photo, field=str(photo))
        ids = _read_label_map(label)
        if ids.shape != (image.height, image.width):
            raise _bad(label, f"label map is {ids.shape[1]}x{ids.shape[0]}, its photo {image.size}", True)
        present = [int(i) for i in np.unique(ids) if int(i) not in ignore_ids]
        if present and (present[0] < 0 or present[-1] >= len(names)):
            bad = [i for i in present if not 0 <= i < len(names)]
            raise _bad(label, f"class ids {bad} are out of range of the {len(names)} class names")
        masks = {names[i]: ids == i for i in present if i != 0}
        return LabelledPhoto(label.stem, image, masks)

    return LazyPhotos(len(pairs), load)


def read_label_maps(
    images_dir: str | Path,
    labels_dir: str | Path,
    label_names: Sequence[str] | str | Path,
    *,
    ignore_ids: tuple[int, ...] = IGNORE_IDS,
) -> list[LabelledPhoto]:
    """Read an ATR / LIP / CIHP style set: one label-map PNG per photo, matched by file stem.

    Args:
        images_dir: the photos (`<stem>.jpg` or `<stem>.png`).
        labels_dir: the label maps (`<stem>.png`); every one must have its photo.
        label_names: the class names by id, or a text file with one per line; id 0 is background.
        ignore_ids: ids that mark unlabelled pixels (not classes).

    Returns:
        One LabelledPhoto per label map, sorted by stem; a mask for each class present but background.
        (`open_label_maps` reads the same set one photo at a time.)
    """
    return list(open_label_maps(images_dir, labels_dir, label_names, ignore_ids=ignore_ids))


def decode_rle(counts: list[int] | str, height: int, width: int) -> np.ndarray:
    """A COCO run-length encoding as a boolean (H, W) mask.

    Runs alternate background, foreground, ... starting with background, over the pixels in column-major
    order (down the first column, then the next), as COCO defines it. A string is COCO's compressed form.

    Args:
        counts: the run lengths, or their compressed string.
        height: the mask's height (`size[0]`).
        width: the mask's width (`size[1]`).

    Returns:
        The mask. Raises ValueError when the runs do not cover height x width pixels.
    """
    runs = _counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        raise ValueError(f"the runs cover {sum(runs)} pixels, the size {height}x{width} has {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T  # column-major


def _counts_from_string(text: str) -> list[int]:
    """COCO's compressed counts: 5-bit groups per char (offset 48, 0x20 = more follows, 0x10 = sign in the
    last group); from the third run on, each is stored as its difference from the run two before."""
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("compressed counts end in the middle of a run")
            group = ord(text[pos]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)  # maskApi.c: from the 4th run on
    return runs


def encode_rle(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    """A boolean (H, W) mask as COCO RLE: `{"size": [h, w], "counts": ...}` (string, or list of ints).

    Args:
        mask: the mask.
        compressed: COCO's compressed string counts; False: the uncompressed list.

    Returns:
        The RLE dict, ready for JSON.
    """
    flat = np.asarray(mask, bool).T.reshape(-1)  # column-major
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]  # runs start with background
    size = [int(mask.shape[0]), int(mask.shape[1])]
    return {"size": size, "counts": _counts_to_string(runs) if compressed else runs}


def _counts_to_string(runs: list[int]) -> str:
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run  # as COCO's maskApi.c rleToString
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            chars.append(chr((group | (0x20 if more else 0)) + 48))
    return "".join(chars)


def _polygon_mask(coords: list[float], height: int, width: int) -> np.ndarray:
    """One COCO polygon (continuous coordinates: pixel (i, j) spans [j, j + 1) x [i, i + 1)) as the
    pixels whose centre it contains, by the even-odd rule along each row of centres."""
    xs, ys = np.asarray(coords[0::2], np.float64), np.asarray(coords[1::2], np.float64)
    toggles = np.zeros((height, width + 1), np.int64)  # crossings left of each pixel centre, by row
    for x0, y0, x1, y1 in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1)):
        if y0 == y1:
            continue  # a horizontal edge crosses no row of centres
        lo, hi = sorted((y0, y1))
        rows = np.arange(max(0, int(np.ceil(lo - 0.5))), min(height, int(np.ceil(hi - 0.5))))
        cross = x0 + (rows + 0.5 - y0) * (x1 - x0) / (y1 - y0)  # where each centre row meets the edge
        np.add.at(toggles, (rows, np.clip(np.ceil(cross - 0.5), 0, width).astype(np.int64)), 1)
    return (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(bool)


def _polygons(polys: list[Any], height: int, width: int) -> np.ndarray:
    """COCO polygons, unioned: each a flat [x, y, x, y, ...] list of at least three points."""
    mask = np.zeros((height, width), bool)
    for poly in polys:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            raise ValueError("a polygon is a flat list [x, y, x, y, ...] of at least 3 points")
        mask |= _polygon_mask([float(v) for v in poly], height, width)
    return mask


def _segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    if isinstance(seg, list):
        return _polygons(seg, height, width)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(s) for s in seg["size"]] != [height, width]:
            raise ValueError(f"RLE size {seg['size']} differs from the image's [{height}, {width}]")
        return decode_rle(seg["counts"], height, width)
    raise ValueError("segmentation must be polygons [[x, y, ...], ...] or RLE {'counts', 'size'}")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise _bad(path, "no such annotations file") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _bad(path, f"malformed JSON ({err})") from err
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in _COCO_KEYS):
        raise _bad(path, f"COCO JSON needs the lists {', '.join(_COCO_KEYS)}")
    return data


_COCO_KEYS = ("images", "annotations", "categories")


def open_coco(annotations_json: str | Path, images_dir: str | Path) -> LazyPhotos:
    """A COCO-style set, read lazily (see `read_coco`, which reads it all at once): the JSON, every
    photo's presence and every annotation's image and category are checked now; each photo and its
    masks are read when it is asked for."""
    path, images_dir = Path(annotations_json), Path(images_dir)
    data = _load_json(path)
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        entries = {int(e["id"]): e for e in data["images"]}
    except (KeyError, TypeError, ValueError) as err:
        raise _bad(path, f"images and categories need 'id' (and 'name'/'file_name'): {err!r}") from err
    files: list[tuple[int, Path]] = []
    for image_id, entry in entries.items():
        file = images_dir / str(entry.get("file_name", ""))
        if not file.is_file():
            raise _bad(path, f"image {image_id}: no photo {file}", image=True)
        files.append((image_id, file))
    by_image: dict[int, list[Any]] = {image_id: [] for image_id in entries}
    for ann in data["annotations"]:
        where = f"annotation {ann.get('id', '?')}" if isinstance(ann, dict) else "an annotation"
        try:
            image_id, category = int(ann["image_id"]), int(ann["category_id"])
            by_image[image_id].append((ann, categories[category]))
        except (KeyError, TypeError, ValueError) as err:
            raise _bad(path, f"{where}: unknown or missing image_id/category_id ({err})") from err
    del data

    def load(index: int) -> LabelledPhoto:
        image_id, file = files[index]
        entry = entries[image_id]
        image = load_image(file, field=str(file))
        size = (entry.get("width", image.width), entry.get("height", image.height))
        if tuple(size) != image.size:
            raise _bad(path, f"image {image_id}: declared {size[0]}x{size[1]}, {file} is {image.size}", True)
        photo = LabelledPhoto(Path(file).stem, image)
        for ann, name in by_image[image_id]:
            _add_annotation(path, ann, photo, name)
        return photo

    return LazyPhotos(len(files), load)


def read_coco(annotations_json: str | Path, images_dir: str | Path) -> list[LabelledPhoto]:
    """Read a COCO-style set (Fashionpedia, ModaNet, DeepFashion2 in COCO form).

    A polygon covers the pixels whose centre lies inside it (even-odd rule; COCO's coordinates put pixel
    (0, 0) at [0, 1) x [0, 1)); pycocotools' own rasteriser may differ from this by a pixel at edges.
    Annotations of one category on a photo are unioned.

    Args:
        annotations_json: the JSON file (`images`, `annotations`, `categories`).
        images_dir: the folder the images' `file_name`s are relative to.

    Returns:
        One LabelledPhoto per entry of `images`, in file order; photos without annotations have no masks.
        (`open_coco` reads the same set one photo at a time.)
    """
    return list(open_coco(annotations_json, images_dir))


def _add_annotation(path: Path, ann: Any, photo: LabelledPhoto, name: str) -> None:
    where = f"annotation {ann.get('id', '?')}"
    try:
        mask = _segmentation(ann.get("segmentation"), photo.image.height, photo.image.width)
    except (ValueError, TypeError) as err:
        raise _bad(path, f"{where}: {err}") from err
    photo.masks[name] = photo.masks[name] | mask if name in photo.masks else mask


def load_class_map(path: str | Path) -> dict[str, list[str]]:
    """Read a class map: dataset class name -> candidate garment prompts, from JSON or TOML.

    e.g. `{"dress": ["the dress", "a dress", "dress"], "skirt": "the skirt"}` (a string is one wording).

    Args:
        path: a `.json` or `.toml` file.

    Returns:
        The map, every class with at least one non-empty prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "no such class-map file")
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        elif path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise _bad(path, "a class map is a .json or .toml file")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise _bad(path, f"malformed class map ({err})") from err
    if not isinstance(data, dict) or not data:
        raise _bad(path, "a class map is a table of class name -> list of prompts")
    out: dict[str, list[str]] = {}
    for name, prompts in data.items():
        items = [prompts] if isinstance(prompts, str) else prompts
        if (
            not isinstance(items, list)
            or not items
            or any(not isinstance(p, str) or not p.strip() for p in items)
        ):
            raise _bad(path, f"class {name!r}: give a non-empty list of prompt strings")
        out[str(name)] = [" ".join(p.split()) for p in items]
    return out


def default_class_map(classes: Sequence[str]) -> dict[str, list[str]]:
    """Candidate prompts from the class names themselves: "the X", "a X" ("an X"), "X".

    Args:
        classes: dataset class names; "background" is left out.

    Returns:
        class name -> its wordings, e.g. "Dress" -> ["the dress", "a dress", "dress"].
    """
    out: dict[str, list[str]] = {}
    for name in classes:
        word = " ".join(name.replace("_", " ").lower().split())
        if not word or word == "background":
            continue
        article = "an" if word[0] in "aeiou" else "a"
        out[name] = list(dict.fromkeys([f"the {word}", f"{article} {word}", word]))
    return out
