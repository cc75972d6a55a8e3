"""Results against their requests: every row of a request file run through every engine and scored.

Per variant:
- preservation: `outside_difference` (max and mean absolute difference outside the compositing mask;
  restyle pastes the input's own pixels back there, so both must be 0) and `seam` (the step across the
  mask's edge);
- colour: `color_delta`, CIEDE2000 ΔE between the repainted region's dominant colour and the vocabulary
  swatch of the requested `color`; it passes at ΔE <= COLOR_PASS_DE (20: the same colour family; about 2 is
  a just-noticeable difference, and folds and shading alone move a garment's dominant colour by 10 or so);
  rows whose colour is not a vocabulary name get no colour score;
- prompt adherence: `clip_similarity` of the variant to the request's description, with the CLIP inside
  a CLIPSeg segmenter when one is loaded (other backends: skipped, and said so);
- per request: `diversity` among its variants, seconds per image (masking and denoising, wall clock).

A row that fails (no garment found, an unreadable photo, a parameter the model refuses) is recorded with
its error; it never stops the run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from restyle.errors import InvalidParameterError, RestyleError
from restyle.eval.metrics import (
    clip_from_segmenter,
    clip_similarity,
    color_delta,
    diversity,
    outside_difference,
    seam,
)
from restyle.eval.rank import COLOR_PASS_DE, color_swatch

MAX_EXAMPLE_ROWS = 24  # rows per engine whose pictures the report shows
THUMB_SIDE = 256  # long side of those pictures
ATTRIBUTES = (
    "type",
    "style",
    "pattern",
    "color",
    "fabric",
    "fit",
    "length",
)  # build_prompt's, `type`: garment


@dataclass(frozen=True)
class StyleRow:
    """One request of a rows file."""

    photo: Path
    garment: str | None = None  # what to change, as mask text ("the dress") ...
    mask: Path | None = None  # ... or a mask file (white = repaint)
    prompt: str = ""  # free text for the new look
    type: str | None = None  # the new garment type ("skirt")
    style: str | None = None
    pattern: str | None = None
    color: str | None = None  # a vocabulary name ("red") gets a colour score
    fabric: str | None = None
    fit: str | None = None
    length: str | None = None
    negative: str | None = None
    num_images: int = 2
    seed: int = 0  # fixed by default: an evaluation must be repeatable
    steps: int | None = None  # None: the model's own (or the run's --steps)
    id: str = ""

    def attributes(self) -> dict[str, Any]:
        """build_prompt's keyword arguments for this row."""
        named = {k: getattr(self, k) for k in ATTRIBUTES if k != "type"}
        return dict(garment=self.type, text=self.prompt or None, negative=self.negative, **named)


_FIELDS = {f.name for f in fields(StyleRow)}
_INTS = {"num_images": (1, 8), "seed": (0, 2**32 - 1), "steps": (1, 150)}


def _int_field(name: str, value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or (isinstance(value, float) and value != number):
        raise InvalidParameterError(f"{where}: {name} must be a whole number, got {value!r}", field=name)
    lo, hi = _INTS[name]
    if not lo <= number <= hi:
        raise InvalidParameterError(f"{where}: {name} {number} is out of range [{lo}, {hi}]", field=name)
    return number


def parse_row(raw: Mapping[str, Any], where: str, folder: Path, index: int) -> StyleRow:
    """One row's fields checked and typed; paths relative to the rows file's folder.

    Raises:
        InvalidParameterError: naming `where` (file and line) and the field.
    """
    values = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k is not None}
    values = {k: v for k, v in values.items() if v not in ("", None)}
    unknown = set(values) - _FIELDS
    if unknown:
        raise InvalidParameterError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_FIELDS))}",
            field=sorted(unknown)[0],
        )
    if "photo" not in values:
        raise InvalidParameterError(f"{where}: photo: give the photo's path", field="photo")
    if ("garment" in values) == ("mask" in values):
        raise InvalidParameterError(
            f"{where}: give exactly one of garment (text) or mask (a file)", field="garment"
        )
    if not values.get("prompt") and not values.get("type"):
        raise InvalidParameterError(
            f"{where}: say what to make: prompt (free text) or type (the new garment, e.g. skirt)",
            field="prompt",
        )
    for name in _INTS:
        if name in values:
            values[name] = _int_field(name, values[name], where)
    for name in ("photo", "mask"):
        if name in values:
            values[name] = folder / Path(str(values[name])).expanduser()
    text = {k: str(v) for k, v in values.items() if k not in {*_INTS, "photo", "mask"}}
    row: dict[str, Any] = {**values, **text}
    row.setdefault("id", f"row {index}")
    return StyleRow(**row)


def load_style_rows(path: str | Path) -> list[StyleRow]:
    """Read a JSONL (one object a line; blank and `#` lines skipped) or CSV (a header row) rows file.

    Args:
        path: the .jsonl / .json or .csv file.

    Returns:
        The rows, in order. Raises InvalidParameterError naming the file and line of a bad row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the first column
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidParameterError(f"{path}: cannot read the rows file: {error}", field="rows") from error
    raws: list[tuple[int, Any]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted cells may hold newlines
        raws = [(reader.line_num, raw) for raw in reader]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    raws.append((number, json.loads(line)))
                except ValueError as error:
                    raise InvalidParameterError(
                        f"{path}: line {number}: not JSON: {error}", field="rows"
                    ) from error
    rows = []
    for index, (number, raw) in enumerate(raws, 1):
        if not isinstance(raw, dict):
            raise InvalidParameterError(f"{path}: line {number}: expected an object", field="rows")
        rows.append(parse_row(raw, f"{path}: line {number}", path.parent, index))
    if not rows:
        raise InvalidParameterError(f"{path}: no rows", field="rows")
    return rows


def _clip_for(engine: Any) -> tuple[Any, str]:
    """(model, processor) of the engine's segmenter's CLIP, or None, and a line saying which was used."""
    try:
        seg = engine.segmenter
        seg = getattr(seg, "finder", seg)  # a finder + protector pair: the finder may be a CLIPSeg
        clip = clip_from_segmenter(seg)
    except RestyleError as error:
        return None, f"skipped: the segmenter did not load ({error})"
    if clip is None:
        return None, f"skipped: the segmenter ({seg.name}) has no CLIP; CLIPSeg's is used when it is loaded"
    return clip, f"CLIP of the CLIPSeg segmenter {seg.model_id}"


def _prompt(engine: Any, row: StyleRow) -> tuple[Any, str]:
    """The request's prompt (an edit instruction for an instruction editor) and the text CLIP compares."""
    from restyle.inpaint.families import family_for
    from restyle.prompts import build_prompt
    from restyle.prompts.builder import build_instruction

    attrs = row.attributes()
    if family_for(engine.config.inpainter).mode == "instruction":
        built = build_instruction(row.garment, **attrs)
    else:
        built = build_prompt(**attrs)
    return built, build_prompt(**attrs, subject=None, quality=False).text


def _thumb(image: Image.Image, side: int = THUMB_SIDE) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def _variant(photo: Image.Image, image: Image.Image, mask: Image.Image, swatch: str | None) -> dict[str, Any]:
    most, mean = outside_difference(photo, image, mask)
    delta = float(color_delta(image, mask, swatch)) if swatch else None
    return {
        "outside_max": _num(most),
        "outside_mean": _num(mean, 6),
        "preserved": float(most) == 0.0,
        "seam": _num(seam(photo, image, mask)),
        "delta_e": _num(delta, 2),
        "color_pass": None if delta is None else bool(delta <= COLOR_PASS_DE),
    }


def run_row(
    engine: Any, row: StyleRow, clip: Any, steps: int | None = None, mask_params: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request through one engine: its figures, and its pictures for the report.

    Raises:
        RestyleError / OSError: the row failed (the caller records it).
    """
    from restyle.images import load_image, load_mask
    from restyle.inpaint import StyleParams

    built, clip_text = _prompt(engine, row)
    photo = load_image(row.photo, field=f"{row.id}: photo")
    given = load_mask(row.mask, size=photo.size, field=f"{row.id}: mask") if row.mask else None
    params = StyleParams(
        prompt=built.text,
        negative_prompt=built.negative if built.negative is not None else StyleParams.negative_prompt,
        num_images=row.num_images,
        seed=row.seed,
        steps=steps or row.steps,
    )
    start = time.perf_counter()
    result, mask_result = engine.style(
        photo, params, garment=row.garment, mask=given, mask_params=mask_params if given is None else None
    )
    elapsed = time.perf_counter() - start
    swatch = color_swatch(row.color)
    variants = [_variant(photo, img, result.mask, swatch) for img in result.images]
    crops = [img.crop(result.box) for img in result.images]  # CLIP reads the garment, not the room
    scores = clip_similarity(crops, clip_text, *clip) if clip else [None] * len(variants)
    for seed, variant, score in zip(result.seeds, variants, scores):
        variant.update(seed=seed, clip=_num(score))
    figures = {
        "prompt": built.text,
        "clip_text": clip_text,
        "mask_area": _num(float((np.asarray(result.mask) > 0).mean())),
        "mask_prompts": list(mask_result.prompts) if mask_result else [],
        "diversity": _num(diversity(result.images, result.mask)) if len(result.images) > 1 else None,
        "seconds_per_image": _num(elapsed / len(result.images), 3),
        "variants": variants,
    }
    captions = [_caption(v) for v in variants]
    title = f"{row.garment or (row.mask.name if row.mask else '')} → {clip_text}"
    pictures = {"title": title, "original": _thumb(photo), "images": [_thumb(i) for i in result.images]}
    pictures["captions"] = captions
    return figures, pictures


def _caption(variant: dict[str, Any]) -> str:
    parts = [f"seed {variant['seed']}"]
    if variant["delta_e"] is not None:
        parts.append(f"ΔE {variant['delta_e']:.1f}")
    if variant["clip"] is not None:
        parts.append(f"CLIP {variant['clip']:.3f}")
    return " · ".join(parts)


def _num(value: Any, digits: int = 4) -> float | None:
    if value is None:
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def _row_base(row: StyleRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "photo": str(row.photo),
        "garment": row.garment,
        "mask": str(row.mask) if row.mask else None,
        "color": row.color,
        "num_images": row.num_images,
        "seed": row.seed,
        "error": None,
    }


def _mean(values: list[Any]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return _num(float(np.mean(kept))) if kept else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """An engine's figures over its rows (failed rows counted, not averaged)."""
    variants = [v for r in records for v in r.get("variants", [])]
    passes = [v["color_pass"] for v in variants if v["color_pass"] is not None]
    return {
        "rows": len(records),
        "failed": sum(r["error"] is not None for r in records),
        "variants": len(variants),
        "preserved": sum(v["preserved"] for v in variants),
        "outside_max": max((v["outside_max"] or 0.0 for v in variants), default=None),
        "seam_mean": _mean([v["seam"] for v in variants]),
        "delta_e_mean": _mean([v["delta_e"] for v in variants]),
        "color_pass_rate": _num(sum(passes) / len(passes)) if passes else None,
        "clip_mean": _mean([v["clip"] for v in variants]),
        "diversity_mean": _mean([r.get("diversity") for r in records]),
        "seconds_per_image": _mean([r.get("seconds_per_image") for r in records]),
    }


def evaluate_engine(
    engine: Any,
    rows: Sequence[StyleRow],
    *,
    steps: int | None = None,
    mask_params: Any = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every row through one engine: (figures, pictures of the first MAX_EXAMPLE_ROWS rows that ran)."""
    clip, clip_note = _clip_for(engine)
    records: list[dict[str, Any]] = []
    pictures: list[dict[str, Any]] = []
    for row in rows:
        record = _row_base(row)
        try:
            figures, shown = run_row(engine, row, clip, steps, mask_params)
            record.update(figures)
            if len(pictures) < MAX_EXAMPLE_ROWS:
                pictures.append({"id": row.id, **shown})
        except (RestyleError, OSError, ValueError) as error:  # recorded, never fatal: the run goes on
            record["error"] = f"{type(error).__name__}: {error}"
        records.append(record)
        if progress is not None:
            progress(row.id)
    info = {
        "inpainter": engine.config.inpainter,
        "segmenter": engine.config.segmenter,
        "preview": bool(engine.preview),
        "clip_model": clip_note,
        "summary": summarise(records),
        "rows": records,
    }
    return info, pictures


def evaluate_styles(
    rows: Sequence[StyleRow],
    engines: Mapping[str, Any],
    *,
    steps: int | None = None,
    mask_params: Any = None,
    source: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run and score every row with every engine.

    Args:
        rows: from `load_style_rows`.
        engines: name -> Restyler (one per inpainter compared).
        steps: denoising steps for every row (None: each row's own, else the model's default).
        mask_params: MaskParams for rows that mask by text (None: the defaults).
        source: the rows file, carried into the result.
        progress: called after each row of each engine with the row's id.

    Returns:
        {"kind": "styles", "source", "rows", "delta_e_pass", "preview", "engines": {name: {"inpainter",
        "segmenter", "preview", "clip_model", "summary", "rows": [...]}}, "examples": {name: [pictures]}};
        everything but "examples" is JSON-ready.
    """
    if not rows:
        raise InvalidParameterError("rows: no requests to evaluate", field="rows")
    result: dict[str, Any] = {
        "kind": "styles",
        "source": source,
        "rows": len(rows),
        "steps": steps,
        "delta_e_pass": COLOR_PASS_DE,
        "preview": any(bool(e.preview) for e in engines.values()),
        "engines": {},
        "examples": {},
    }
    for name, engine in engines.items():
        info, pictures = evaluate_engine(
            engine, rows, steps=steps, mask_params=mask_params, progress=progress
        )
        result["engines"][name], result["examples"][name] = info, pictures
    return result
