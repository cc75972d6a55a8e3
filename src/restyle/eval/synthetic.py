"""A small labelled set of drawn figures whose garment regions are known exactly: `restyle eval` runs
offline on it, and the dataset readers are tested against it.

Each photo is a figure like `restyle.samples.sample_photo` (backdrop, floor, legs, arms, hair, face) wearing
a dress, a skirt and a top, or nothing (the last photo: a segmenter should find no garment there). Sizes,
placement, hem and waist heights and colours vary with the seed. The garments are drawn last and never
overlap, so each is exactly its polygon; the labels are drawn with the same calls as the photo.

Written in both formats `restyle.eval.datasets` reads: label maps (`images/`, `labels/`, `labels.txt`) and
COCO (`annotations.json`: garments as polygons tracing their pixel outlines on some photos and as RLE on
others, body parts as RLE, the skin split over two annotations), plus the class map `classes.json` (garment
classes only; hair, face and skin are labelled for protection checks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from restyle.eval.datasets import LabelledPhoto, encode_rle
from restyle.prompts.vocabulary import COLORS

CLASSES = ("background", "hair", "face", "skin", "top", "skirt", "dress")  # line i of labels.txt = id i
GARMENTS = ("top", "skirt", "dress")
CLASS_MAP = {
    "dress": ["the dress", "a dress", "dress"],
    "skirt": ["the skirt", "a skirt", "skirt"],
    "top": ["the top", "the shirt", "a top"],
}
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (255, 255, 0), (0, 0, 255), (255, 0, 255), (0, 255, 255)]
SKIN = (224, 182, 150)
HAIR = (60, 40, 30)
Point = tuple[int, int]


class _Figure:
    """Draws each shape on the photo and, with its class id, on the label map."""

    def __init__(self, width: int, height: int, dx: float, background: tuple[int, int, int]) -> None:
        self.w, self.h, self.dx = width, height, dx
        self.photo = Image.new("RGB", (width, height), background)
        self.labels = Image.new("L", (width, height), 0)
        self.polygons: dict[str, list[Point]] = {}

    def p(self, fx: float, fy: float) -> Point:
        return round((fx + self.dx) * self.w), round(fy * self.h)

    def shape(self, kind: str, xy: list[Point], color: tuple[int, int, int], name: str) -> None:
        for draw, fill in (
            (ImageDraw.Draw(self.photo), color),
            (ImageDraw.Draw(self.labels), CLASSES.index(name)),
        ):
            getattr(draw, kind)(xy, fill=fill)
        if name in GARMENTS:
            self.polygons[name] = list(xy)


def _swatch(name: str) -> tuple[int, int, int]:
    value = COLORS[name].lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _body(fig: _Figure) -> None:
    p = fig.p
    for x0 in (0.42, 0.53):  # legs
        fig.shape("rectangle", [p(x0, 0.58), p(x0 + 0.05, 0.92)], SKIN, "skin")
    for side in (-1, 1):  # arms hang beside the torso, hands at their ends

        def q(fx: float, fy: float, s: int = side) -> Point:
            return p(0.5 + s * (fx - 0.5), fy)

        fig.shape("polygon", [q(0.35, 0.25), q(0.39, 0.28), q(0.25, 0.51), q(0.20, 0.50)], SKIN, "skin")
        (x0, y0), (x1, y1) = q(0.19, 0.49), q(0.25, 0.54)
        fig.shape("ellipse", [(min(x0, x1), y0), (max(x0, x1), y1)], SKIN, "skin")
    fig.shape("rectangle", [p(0.47, 0.19), p(0.53, 0.27)], SKIN, "skin")  # neck
    fig.shape("ellipse", [p(0.40, 0.05), p(0.60, 0.20)], HAIR, "hair")
    fig.shape("ellipse", [p(0.42, 0.08), p(0.58, 0.21)], SKIN, "face")


def _dress_up(fig: _Figure, outfit: str, rng: np.random.Generator, colors: list[str]) -> None:
    p = fig.p
    hem = float(rng.uniform(0.62, 0.80))
    if outfit == "none":  # bare torso: nothing a garment prompt should find
        fig.shape("polygon", [p(0.37, 0.25), p(0.63, 0.25), p(0.60, 0.60), p(0.40, 0.60)], SKIN, "skin")
    elif outfit == "dress":
        dress = [p(0.36, 0.25), p(0.64, 0.25), p(0.74, hem), p(0.26, hem)]
        fig.shape("polygon", dress, _swatch(colors[0]), "dress")
    else:
        waist = float(rng.uniform(0.42, 0.48))
        top = [p(0.36, 0.25), p(0.64, 0.25), p(0.62, waist), p(0.38, waist)]
        fig.shape("polygon", top, _swatch(colors[0]), "top")
        y = top[2][1] + 1  # the skirt starts on the row below the top: the two never share a pixel
        skirt = [(top[3][0], y), (top[2][0], y), p(0.70, hem), p(0.30, hem)]
        fig.shape("polygon", skirt, _swatch(colors[1]), "skirt")


def _light(fig: _Figure, rng: np.random.Generator) -> Image.Image:
    """Side light over the photo and vertical folds on the garments: shading a colour reader must see
    through. Labels are untouched."""
    px = np.asarray(fig.photo, dtype=np.float64)
    ids = np.asarray(fig.labels)
    xs = np.arange(fig.w) / fig.w
    light = 1.0 - float(rng.uniform(0.05, 0.2)) * xs  # (W,)
    folds = 1.0 - 0.15 * (np.cos(xs * np.pi * float(rng.uniform(6, 12))) > 0.6)  # (W,)
    garment = np.isin(ids, [CLASSES.index(g) for g in GARMENTS])  # (H, W)
    shade = np.where(garment, light * folds, light)[..., None]
    photo = Image.fromarray(np.clip(px * shade, 0, 255).round().astype(np.uint8))
    return photo.filter(ImageFilter.SMOOTH)


def draw_synthetic(index: int, count: int, rng: np.random.Generator) -> tuple[LabelledPhoto, dict[str, Any]]:
    """One drawn photo with its exact masks and the polygons of its garments (pixel-centre coordinates).

    Args:
        index: the photo's position in the set; the last of a set of two or more wears nothing.
        count: the set's size.
        rng: the set's generator (draws sizes, placement and colours).

    Returns:
        (LabelledPhoto with a mask per class drawn, {garment: [(x, y), ...]}).
    """
    outfit = "none" if count >= 2 and index == count - 1 else ("dress", "skirt+top")[index % 2]
    width = int(rng.integers(10, 17)) * 8
    height = round(width * float(rng.uniform(1.4, 1.6)))
    palette = [c for c in COLORS if COLORS[c].startswith("#")]
    colors = [str(c) for c in rng.choice(palette, size=2, replace=False)]
    background = tuple(int(v) for v in rng.integers(200, 240, size=3))
    fig = _Figure(width, height, float(rng.uniform(-0.04, 0.04)), background)  # type: ignore[arg-type]
    ImageDraw.Draw(fig.photo).rectangle([(0, round(0.82 * height)), (width, height)], fill=(196, 188, 176))
    _body(fig)
    _dress_up(fig, outfit, rng, colors)
    ids = np.asarray(fig.labels)
    masks = {name: ids == i for i, name in enumerate(CLASSES) if i and (ids == i).any()}
    return LabelledPhoto(f"synthetic_{index:02d}", _light(fig, rng), masks), fig.polygons


def outline(mask: np.ndarray) -> list[float]:
    """The outline of a row-convex mask (one run per row, rows contiguous) as a COCO polygon along the
    pixel edges: every pixel centre is strictly inside or outside it, so it rasterises to `mask` exactly.

    Args:
        mask: boolean (H, W), e.g. a drawn garment.

    Returns:
        [x, y, x, y, ...] in COCO's continuous coordinates.
    """
    rows = np.flatnonzero(mask.any(1))
    runs = [np.flatnonzero(mask[y]) for y in rows]
    if len(rows) == 0 or np.any(np.diff(rows) != 1) or any(np.any(np.diff(r) != 1) for r in runs):
        raise ValueError("outline: the mask is not one run per row over contiguous rows")
    right = [(int(r[-1]) + 1, int(y) + dy) for y, r in zip(rows, runs) for dy in (0, 1)]
    left = [(int(r[0]), int(y) + dy) for y, r in zip(rows[::-1], runs[::-1]) for dy in (1, 0)]
    return [float(v) for point in right + left for v in point]


def _annotations(photo: LabelledPhoto, index: int) -> list[dict[str, Any]]:
    """COCO annotations of one photo: garments as polygons (their outlines) on photos 0, 1, 4, 5, ...,
    else RLE; body parts as RLE."""
    out: list[dict[str, Any]] = []
    for name, mask in photo.masks.items():
        parts = [mask]
        if name == "skin":  # two annotations of one category: the reader must union them
            left = np.zeros_like(mask)
            left[:, : mask.shape[1] // 2] = True
            parts = [mask & left, mask & ~left]
        for part in (p for p in parts if p.any()):
            if name in GARMENTS and index % 4 < 2:
                seg: Any = [outline(part)]
            else:
                seg = encode_rle(part, compressed=(index + len(out)) % 2 == 0)
            ys, xs = np.nonzero(part)
            bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            out.append(
                dict(
                    category_id=CLASSES.index(name),
                    segmentation=seg,
                    area=int(part.sum()),
                    bbox=bbox,
                    iscrowd=0,
                )
            )
    return out


def synthetic_photos(count: int = 6, seed: int = 0) -> list[tuple[LabelledPhoto, dict[str, Any]]]:
    """The set `write_synthetic_set` writes, in memory: each photo with its garment polygons."""
    rng = np.random.default_rng(seed)
    return [draw_synthetic(i, count, rng) for i in range(count)]


def write_synthetic_set(out: Path, count: int = 6, seed: int = 0) -> dict[str, Path]:
    """Write the drawn set in label-map and COCO form.

    Args:
        out: the folder to write to (created).
        count: how many photos (>= 1); with two or more, the last wears no garment.
        seed: varies sizes, placement, hem and waist heights, colours and light.

    Returns:
        Paths: root, images, labels, label_names (labels.txt), annotations (COCO JSON), class_map.
    """
    if count < 1:
        raise ValueError(f"count: at least 1 photo, got {count}")
    out = Path(out)
    paths = {
        "root": out,
        "images": out / "images",
        "labels": out / "labels",
        "label_names": out / "labels.txt",
        "annotations": out / "annotations.json",
        "class_map": out / "classes.json",
    }
    paths["images"].mkdir(parents=True, exist_ok=True)
    paths["labels"].mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (photo, _) in enumerate(synthetic_photos(count, seed)):
        photo.image.save(paths["images"] / f"{photo.name}.png")
        ids = np.zeros((photo.image.height, photo.image.width), dtype=np.uint8)
        for name, mask in photo.masks.items():
            ids[mask] = CLASSES.index(name)
        mode = "P" if i % 2 == 0 else "L"  # half the maps as palette images (ATR/LIP), half as grey
        label = Image.frombytes(mode, photo.image.size, ids.tobytes())
        if mode == "P":
            label.putpalette([v for rgb in PALETTE for v in rgb])
        label.save(paths["labels"] / f"{photo.name}.png")
        images.append(
            dict(id=i + 1, file_name=f"{photo.name}.png", width=photo.image.width, height=photo.image.height)
        )
        annotations += [dict(image_id=i + 1, **a) for a in _annotations(photo, i)]
    for n, ann in enumerate(annotations, start=1):
        ann["id"] = n
    categories = [dict(id=i, name=name, supercategory="garment" if name in GARMENTS else "body")
                  for i, name in enumerate(CLASSES) if i]  # fmt: skip
    coco = dict(info=dict(description=f"restyle synthetic set, seed {seed}"), images=images,
                annotations=annotations, categories=categories)  # fmt: skip
    paths["annotations"].write_text(json.dumps(coco))
    paths["label_names"].write_text("\n".join(CLASSES) + "\n")
    paths["class_map"].write_text(json.dumps(CLASS_MAP, indent=2))
    return paths
