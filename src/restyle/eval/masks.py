"""Masks against labels: every segmenter, garment class, wording and threshold scored on a labelled set.

For each segmenter backend, class, wording (the class map's candidate texts) and threshold:
- IoU per photo that shows the class (no mask there scores 0); `iou` is their mean, `iou_pooled` the
  dataset-level intersection over union (every photo's pixels summed: how published mIoU is computed);
- boundary F (metrics.boundary_f) on the same photos;
- false-positive rate: on photos that do NOT show the class, how often a mask came back (a
  NoGarmentFoundError there is the right answer);
- missed-garment rate: on photos that show it, how often no mask came back or it overlapped the garment
  by less than MISS_IOU;
- seconds per photo: one garment mask, as `segment()` would take it.

Each (photo, wording) is run through the segmenter once: the probabilities do not depend on the
threshold, so every threshold of the sweep refines the same maps (`refine`, the step `segment()` ends with).
Masks are compared unfeathered and ungrown (EVAL_PARAMS): the labels are the garment itself, not the
repaint margin around it.

mIoU is the mean over the classes that some photo shows of: the class's default wording (its first) at the
default threshold (`miou_default`), and of the sweep's best setting per class (`miou_best`). The winner of a
class is its best mean IoU; ties go to the shorter wording, then the threshold nearest the default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from restyle.errors import InvalidImageError, InvalidParameterError, NoGarmentFoundError
from restyle.eval.datasets import LabelledPhoto
from restyle.eval.metrics import boundary_f, iou
from restyle.segment import BaseSegmenter, MaskParams, refine
from restyle.segment.base import clean_prompts

EVAL_PARAMS = MaskParams(grow=0, feather=0)  # compare the segmentation itself, not the repaint margin
MISS_IOU = 0.1  # a returned mask overlapping the garment less than this (IoU) still missed it
THUMB_SIDE = 320  # long side of the example masks kept for the report


@dataclass
class Example:
    """One photo's mask for one setting, kept (small) for the report's best / worst grids."""

    iou: float
    index: int  # into the photos
    pred: np.ndarray  # (h, w) bool thumbnail


@dataclass
class Setting:
    """Running scores of one (class, wording, threshold) of one segmenter."""

    wording: str
    threshold: float
    ious: list[float] = field(default_factory=list)
    boundary: list[float] = field(default_factory=list)
    per_photo: dict[str, float] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    inter: int = 0
    union: int = 0
    positives: int = 0
    negatives: int = 0
    false_pos: int = 0
    missed: int = 0
    best: Example | None = None
    worst: Example | None = None
    error: str | None = None

    def add(self, index: int, name: str, pred: np.ndarray | None, truth: np.ndarray | None) -> None:
        """Score one photo's mask (None: NoGarmentFoundError) against its label (None/empty: not shown)."""
        if truth is None or not truth.any():
            self.negatives += 1
            if pred is not None and pred.any():
                self.false_pos += 1
                self.union += int(pred.sum())
            return
        self.positives += 1
        if pred is None:
            score, edge = 0.0, 0.0
            pred = np.zeros_like(truth)
        else:
            score, edge = float(iou(pred, truth)), float(boundary_f(pred, truth))
        self.inter += int((pred & truth).sum())
        self.union += int((pred | truth).sum())
        self.ious.append(score)
        self.boundary.append(edge)
        self.per_photo[name] = round(score, 4)
        self.missed += int(score < MISS_IOU)
        if self.best is None or score > self.best.iou:
            self.best = Example(score, index, thumbnail(pred))
        if self.worst is None or score < self.worst.iou:
            self.worst = Example(score, index, thumbnail(pred))

    def scores(self) -> dict[str, Any]:
        """JSON-ready figures (None where there was nothing to measure)."""
        return {
            "wording": self.wording,
            "threshold": self.threshold,
            "iou": _num(_mean(self.ious)),
            "iou_pooled": _num(self.inter / self.union if self.union else math.nan),
            "boundary_f": _num(_mean(self.boundary)),
            "fp_rate": _num(self.false_pos / self.negatives if self.negatives else math.nan),
            "missed_rate": _num(self.missed / self.positives if self.positives else math.nan),
            "seconds_per_photo": _num(_mean(self.seconds)),
            "positives": self.positives,
            "negatives": self.negatives,
            "error": self.error,
        }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _num(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def thumbnail(mask: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """A bool mask shrunk (nearest) so its long side is at most `side`."""
    h, w = mask.shape
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return mask.copy()
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.NEAREST
    )
    return np.asarray(small) > 127


def sweep_thresholds(thresholds: Iterable[float], default: float) -> list[float]:
    """The thresholds to try, sorted, always with the default one; each checked to lie in [0, 1]."""
    values = sorted({round(float(t), 4) for t in (*thresholds, default)})
    for t in values:
        replace(EVAL_PARAMS, threshold=t).check()
    return values


def _probabilities(
    seg: BaseSegmenter, image: Image.Image, wording: str, protect: Sequence[str] | None, params: MaskParams
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...], MaskParams]:
    """What `segment()` computes before refining: the maps of one wording and of the protect prompts."""
    resolved = seg.resolve_params(params)
    garments = clean_prompts("garment", wording)
    guards = clean_prompts("protect", resolved.protect if protect is None else tuple(protect))
    g_probs, p_probs = seg.role_probabilities(image, garments, guards, resolved)
    return g_probs, p_probs, garments, guards, resolved


def _truth(photo: LabelledPhoto, name: str) -> np.ndarray | None:
    truth = photo.masks.get(name)
    if truth is None:
        return None
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != (photo.image.height, photo.image.width):
        raise InvalidImageError(
            f"{photo.name}: the {name!r} label is {truth.shape[1]}x{truth.shape[0]}, the photo "
            f"{photo.image.width}x{photo.image.height}",
            field="labels",
        )
    return truth


def _run_wording(
    seg: BaseSegmenter,
    photo: LabelledPhoto,
    index: int,
    truth: np.ndarray | None,
    settings: list[Setting],
    protect: Sequence[str] | None,
    params: MaskParams,
) -> None:
    """One photo, one wording: probabilities once, then every threshold of `settings` refines them."""
    if settings[0].error is not None:
        return
    start = time.perf_counter()
    try:
        g, p, garments, guards, resolved = _probabilities(
            seg, photo.image, settings[0].wording, protect, params
        )
    except InvalidParameterError as error:  # a wording this backend cannot read (a parser's closed labels)
        for s in settings:
            s.error = str(error)
        return
    base = time.perf_counter() - start
    for s in settings:
        start = time.perf_counter()
        pred: np.ndarray | None
        try:
            mask = refine(g, p, garments, guards, replace(resolved, threshold=s.threshold)).mask
            pred = np.asarray(mask) > 127
        except NoGarmentFoundError:
            pred = None
        s.seconds.append(base + time.perf_counter() - start)
        s.add(index, photo.name, pred, truth)


def run_backend(
    seg: BaseSegmenter,
    photos: Sequence[LabelledPhoto],
    class_map: Mapping[str, Sequence[str]],
    thresholds: Sequence[float],
    protect: Sequence[str] | None = None,
    params: MaskParams = EVAL_PARAMS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[list[Setting]]]:
    """Every setting of one segmenter: class -> [wording][threshold] -> Setting."""
    grid = {
        name: [[Setting(w, t) for t in thresholds] for w in wordings] for name, wordings in class_map.items()
    }
    for index, photo in enumerate(photos):
        for name, rows in grid.items():
            truth = _truth(photo, name)
            for row in rows:
                _run_wording(seg, photo, index, truth, row, protect, params)
                if progress is not None:
                    progress(f"{seg.name}: {photo.name}")
    return grid


def pick_winner(rows: list[list[Setting]], default: float) -> Setting:
    """The best mean IoU; ties: the shorter wording, then the threshold nearest the default."""
    scored = [s for row in rows for s in row if s.error is None and s.ious]
    if not scored:
        return default_setting(rows, default)
    order = {s.wording: i for i, s in enumerate(r[0] for r in rows)}
    return min(
        scored,
        key=lambda s: (
            -round(_mean(s.ious), 6),
            len(s.wording),
            abs(s.threshold - default),
            order[s.wording],
        ),
    )


def default_setting(rows: list[list[Setting]], default: float) -> Setting:
    """The class's first wording at the default threshold."""
    return next(s for s in rows[0] if s.threshold == default)


def _class_summary(rows: list[list[Setting]], default: float) -> tuple[dict[str, Any], Setting]:
    chosen, best = default_setting(rows, default), pick_winner(rows, default)
    summary = {
        "default": {**chosen.scores(), "per_photo": chosen.per_photo},
        "best": {**best.scores(), "per_photo": best.per_photo},
        "sweep": [s.scores() for row in rows for s in row],
    }
    return summary, best


def _examples(best: Setting, photos: Sequence[LabelledPhoto], name: str) -> dict[str, Any]:
    """The winner's best and worst photo: photo, predicted and label masks as small images."""
    out: dict[str, Any] = {}
    for kind, ex in (("best", best.best), ("worst", best.worst)):
        if ex is None:
            continue
        photo = photos[ex.index]
        h, w = ex.pred.shape
        truth = np.asarray(photo.masks[name], dtype=bool)
        out[kind] = {
            "photo": photo.name,
            "iou": round(ex.iou, 4),
            "image": photo.image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR),
            "pred": Image.fromarray(ex.pred.astype(np.uint8) * 255, mode="L"),
            "truth": Image.fromarray(thumbnail(truth, max(h, w)).astype(np.uint8) * 255, mode="L"),
        }
    return out


def summarise_backend(
    seg: BaseSegmenter,
    grid: dict[str, list[list[Setting]]],
    photos: Sequence[LabelledPhoto],
    default: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One segmenter's JSON-ready figures and its example images."""
    classes, winners, examples = {}, {}, {}
    unreadable: list[str] = []  # classes some photo shows that no wording of this backend could mask
    for name, rows in grid.items():
        classes[name], best = _class_summary(rows, default)
        shown = any(name in p.masks and p.masks[name].any() for p in photos)
        if best.error is not None or not best.ious:  # never a winner: the table would hand it to requests
            if shown:
                unreadable.append(name)
            examples[name] = _examples(best, photos, name)
            continue
        winners[name] = {
            "wording": best.wording,
            "threshold": best.threshold,
            "candidates": [row[0].wording for row in rows],
            "iou": classes[name]["best"]["iou"],
            "default_iou": classes[name]["default"]["iou"],
            "boundary_f": classes[name]["best"]["boundary_f"],
            "fp_rate": classes[name]["best"]["fp_rate"],
            "missed_rate": classes[name]["best"]["missed_rate"],
            "photos": best.positives,
        }
        examples[name] = _examples(best, photos, name)
    seconds = [
        t for rows in grid.values() for row in rows for s in row if s.threshold == default for t in s.seconds
    ]
    figures = {
        "backend": seg.name,
        "model": seg.model_id,
        "license": getattr(seg, "license", "") or None,
        "preview": bool(seg.preview),
        # a class the backend cannot read counts 0, so closed-vocabulary backends compare fairly
        "miou_default": _num(_nanmean(_shown(classes, unreadable, "default"))),
        "miou_best": _num(_nanmean(_shown(classes, unreadable, "best"))),
        "classes_unreadable": unreadable,
        "seconds_per_photo": _num(_mean(seconds)),
        "classes": classes,
        "winners": winners,
    }
    return figures, examples


def _shown(classes: dict[str, Any], unreadable: list[str], which: str) -> list[float | None]:
    """Each class's IoU for the mIoU: its figure, or 0 where the backend could not read it at all."""
    return [0.0 if name in unreadable else c[which]["iou"] for name, c in classes.items()]


def _nanmean(values: Iterable[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else math.nan


def evaluate_masks(
    photos: Sequence[LabelledPhoto],
    segmenters: Mapping[str, BaseSegmenter],
    class_map: Mapping[str, Sequence[str]],
    thresholds: Sequence[float] = (0.3, 0.4, 0.5),
    protect: Sequence[str] | None = None,
    *,
    params: MaskParams = EVAL_PARAMS,
    dataset: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score every segmenter on a labelled set, sweeping wordings and thresholds.

    Args:
        photos: labelled photos (datasets.read_label_maps / read_coco / synthetic set).
        segmenters: name -> loaded segmenter.
        class_map: class -> candidate wordings, the first being the class's default.
        thresholds: garment thresholds to sweep; `params.threshold` (the default) is always added.
        protect: protect prompts; None: the params' (face, hands, hair), [] none.
        params: the rest of the mask settings (default: no grow, no feather).
        dataset: a name for the set, carried into the result.
        progress: called after each (photo, wording) with a short description.

    Returns:
        {"kind": "masks", "dataset", "photos", "class_photos", "thresholds", "default_threshold",
        "params", "classes", "preview", "backends": {name: figures}, "examples": {name: {class: images}}};
        everything but "examples" is JSON-ready.
    """
    if not photos:
        raise InvalidParameterError("photos: the labelled set is empty", field="photos")
    if not class_map or any(not w for w in class_map.values()):
        raise InvalidParameterError("classes: give every class at least one wording", field="classes")
    params.check()
    sweep = sweep_thresholds(thresholds, params.threshold)
    default = round(params.threshold, 4)
    result: dict[str, Any] = {
        "kind": "masks",
        "dataset": dataset,
        "photos": len(photos),
        "class_photos": {c: sum(_shows(p, c) for p in photos) for c in class_map},
        "thresholds": sweep,
        "default_threshold": default,
        "params": asdict(params),
        "classes": {c: list(w) for c, w in class_map.items()},
        "preview": any(s.preview for s in segmenters.values()),
        "backends": {},
        "examples": {},
    }
    for name, seg in segmenters.items():
        grid = run_backend(seg, photos, class_map, sweep, protect, params, progress)
        result["backends"][name], result["examples"][name] = summarise_backend(seg, grid, photos, default)
    return result


def _shows(photo: LabelledPhoto, name: str) -> bool:
    truth = photo.masks.get(name)
    return truth is not None and bool(np.asarray(truth).any())


def units(photos: Sequence[LabelledPhoto], class_map: Mapping[str, Sequence[str]]) -> int:
    """How many (photo, wording) runs one segmenter makes: the progress bar's total."""
    return len(photos) * sum(len(w) for w in class_map.values())
