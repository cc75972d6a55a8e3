"""Training images: find them, check them before any compute, caption them, fit them to a square.

Everything here is plain PIL/numpy: the checks run in a second, before a model is loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from restyle.errors import InvalidImageError, InvalidParameterError, RestyleError
from restyle.images import FORMATS, as_mask, load_image
from restyle.prompts import COLORS, DESIGN_STYLES, FABRICS, FITS, LENGTHS, PATTERNS, all_garments

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
METADATA = "metadata.jsonl"  # the Hugging Face imagefolder convention: {"file_name": ..., "text": ...}
MASK_FOLDER = "masks"  # <instance_dir>/masks/<stem>.png, white = the garment
PAD_GREY = 127  # neutral border for --fit pad (mid-grey is zero after SD's [-1, 1] scaling)
MAX_LISTED = 20  # bad files named in one error; more are counted
MASK_ASPECT_TOLERANCE = 0.02  # a mask may be another resolution of its photo, not another shape
# caption attributes in the order they are appended, with the vocabulary each is checked against
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "garment": all_garments(),
    "style": DESIGN_STYLES,
    "length": LENGTHS,
    "fit": FITS,
    "color": tuple(COLORS),
    "pattern": PATTERNS,
    "fabric": FABRICS,
}


@dataclass
class Example:
    """One training image, fitted later: where it is, its caption, and its user mask if any."""

    path: Path
    caption: str
    mask_path: Path | None = None


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (not in masks/), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_images(files: list[Path], field: str, min_side: int) -> None:
    """Read every file as training will; raise one error naming every unusable image.

    Each photo goes through the same `load_image` (size limit, full decode, EXIF rotation) as the
    training data later, so a photo that passes here cannot fail after the model has loaded.
    """
    problems = []
    for path in files:
        try:
            w, h = load_image(path, field=path.name).size
        except InvalidImageError as err:
            problems.append(err.message)
            continue
        if min(w, h) < min_side:
            problems.append(f"{path.name}: {w}x{h} is too small; the shorter side must be >= {min_side}")
    if problems:
        shown = problems[:MAX_LISTED] + (
            [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        )
        raise InvalidImageError(
            f"{field}: {len(problems)} of {len(files)} images cannot be used:\n  " + "\n  ".join(shown),
            field=field,
        )


def scan_instances(
    folder: Path, prompt: str, *, min_side: int, min_images: int, mask_dir: Path | None = None
) -> list[Example]:
    """The instance images with captions (metadata.jsonl, else `prompt`) and user masks.

    Raises InvalidImageError naming bad files; warns when there are fewer than `min_images`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidParameterError(f"instance_dir: no such folder: {folder}", field="instance_dir")
    files = list_images(folder)
    if not files:
        raise InvalidImageError(
            f"instance_dir: no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})",
            field="instance_dir",
        )
    check_images(files, "instance_dir", min_side)
    if len(files) < min_images:
        log.warning(
            "instance_dir: only %d image(s); DreamBooth wants about a dozen, and fewer than %d "
            "usually over-fits to their backgrounds and poses",
            len(files),
            min_images,
        )
    captions = read_captions(folder, files, prompt)
    masks = find_masks(Path(mask_dir) if mask_dir else folder / MASK_FOLDER, files)
    check_masks(masks, files, "mask_dir")
    return [Example(p, captions[p.name], masks.get(p.name)) for p in files]


def scan_class_images(folder: Path, prompt: str, *, min_side: int) -> list[Example]:
    """Existing class images (all captioned with the class prompt); generated ones join later."""
    files = list_images(folder) if folder.is_dir() else []
    check_images(files, "class_dir", min_side)
    masks = find_masks(folder / MASK_FOLDER, files)
    check_masks(masks, files, "class_dir")
    return [Example(p, prompt, masks.get(p.name)) for p in files]


def find_masks(folder: Path, files: list[Path]) -> dict[str, Path]:
    """User masks named like their image (any image suffix) in `folder`."""
    if not folder.is_dir():
        return {}
    by_stem = {p.stem: p for p in list_images(folder)}
    return {f.name: by_stem[f.stem] for f in files if f.stem in by_stem}


def check_masks(masks: dict[str, Path], files: list[Path], field: str) -> None:
    """Decode every user mask; refuse unreadable ones and ones shaped unlike their photo, all named."""
    problems = []
    for photo in files:
        path = masks.get(photo.name)
        if path is None:
            continue
        try:
            with Image.open(path, formats=FORMATS) as m:
                m.load()
                mw, mh = m.size
            with Image.open(photo, formats=FORMATS) as img:
                w, h = img.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            problems.append(f"{path.name}: unreadable mask ({err.__class__.__name__}: {err})")
            continue
        if abs(mw / mh - w / h) > MASK_ASPECT_TOLERANCE * (w / h):
            problems.append(f"{path.name}: mask is {mw}x{mh} but its photo is {w}x{h} (another shape)")
    if problems:
        raise InvalidImageError(
            f"{field}: {len(problems)} mask(s) cannot be used:\n  " + "\n  ".join(problems[:MAX_LISTED]),
            field=field,
        )


def read_mask(path: Path, size: tuple[int, int]) -> Image.Image:
    """A user or segmenter mask as L at the photo's `size` (masks of another resolution are rescaled);
    a transparent one is read from its transparency, as everywhere (images.as_mask)."""
    with Image.open(path, formats=FORMATS) as m:
        return as_mask(m).resize(size, Image.Resampling.NEAREST)


def read_captions(folder: Path, files: list[Path], prompt: str) -> dict[str, str]:
    """Per-image captions: metadata.jsonl `text`, or the prompt plus vocabulary `attributes`."""
    captions = {p.name: prompt for p in files}
    meta = folder / METADATA
    if not meta.is_file():
        return captions
    for number, line in enumerate(_metadata_lines(meta), 1):
        if not line.strip():
            continue
        where = f"{meta.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InvalidParameterError(f"metadata: {where}: not JSON ({err.msg})", field="metadata") from err
        name = row.get("file_name") if isinstance(row, dict) else None
        if not isinstance(name, str) or name not in captions:
            raise InvalidParameterError(
                f"metadata: {where}: file_name {name!r} is not an image in {folder}", field="metadata"
            )
        captions[name] = caption_for(row, prompt, where)
    return captions


def _metadata_lines(meta: Path) -> list[str]:
    """The lines of metadata.jsonl (UTF-8, a leading BOM allowed); not UTF-8: the first bad line, named."""
    raw = meta.read_bytes()
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        pass
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise InvalidParameterError(
                f"metadata: {meta} line {number}: not UTF-8 (byte 0x{line[err.start]:02x} at column "
                f"{err.start + 1}); save the file as UTF-8",
                field="metadata",
            ) from None
    raise AssertionError("unreachable: the whole file failed to decode but no line did")


def caption_for(row: dict, prompt: str, where: str = "metadata") -> str:
    """A row's `text` verbatim, else `prompt` followed by its vocabulary attributes."""
    if isinstance(row.get("text"), str) and row["text"].strip():
        return " ".join(row["text"].split())
    attrs = row.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise InvalidParameterError(f"metadata: {where}: attributes must be an object", field="metadata")
    unknown = set(attrs) - set(ATTRIBUTES)
    if unknown:
        raise InvalidParameterError(
            f"metadata: {where}: unknown attribute(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(ATTRIBUTES)}",
            field="metadata",
        )
    words = []
    for key, known in ATTRIBUTES.items():
        value = attrs.get(key)
        if not value:
            continue
        if str(value).lower() not in {k.lower() for k in known}:
            log.warning("metadata: %s: %s %r is not in the fashion vocabulary", where, key, value)
        words.append(str(value))
    return ", ".join([prompt, *words]) if words else prompt


def write_caption_template(folder: Path, *, overwrite: bool = False) -> Path:
    """Write metadata.jsonl with one row per image: the prompt and empty vocabulary attributes to fill."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidParameterError(f"instance_dir: no such folder: {folder}", field="instance_dir")
    out = folder / METADATA
    if out.exists() and not overwrite:
        raise RestyleError(f"{out} exists; pass --overwrite to replace it")
    rows = [
        {"file_name": p.name, "attributes": {k: "" for k in ATTRIBUTES if k != "garment"}}
        for p in list_images(folder)
    ]
    if not rows:
        raise InvalidImageError(f"instance_dir: no images in {folder}", field="instance_dir")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def load_example_image(path: Path) -> Image.Image:
    """A training photo; check_images has read it already, so a failure here names the whole path."""
    return load_image(path, field=str(path))


def fit_square(
    image: Image.Image,
    mask: Image.Image | None,
    size: int,
    mode: str = "crop",
    anchor: Image.Image | None = None,
) -> tuple[Image.Image, Image.Image | None]:
    """Fit a photo (and its mask) to size x size without squashing it.

    crop: scale the shorter side to `size` and cut a square centred on the garment of `anchor`
    (default: `mask`; neither: the middle); center: the same, always the middle square (the
    reference script's --center_crop); pad: scale the longer side to `size` and pad with neutral
    grey (mask 0 on the border). Masks fitted with the same anchor share one crop.
    """
    anchor = None if mode == "center" else mask if anchor is None else anchor
    w, h = image.size
    if mode == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        left, top = (size - nw) // 2, (size - nh) // 2
        canvas = Image.new("RGB", (size, size), (PAD_GREY,) * 3)
        canvas.paste(image.resize((nw, nh), Image.Resampling.LANCZOS), (left, top))
        if mask is None:
            return canvas, None
        mcanvas = Image.new("L", (size, size), 0)
        mcanvas.paste(mask.resize((nw, nh), Image.Resampling.NEAREST), (left, top))
        return canvas, mcanvas
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    cx, cy = _centre(anchor, scale) if anchor is not None else (nw / 2, nh / 2)
    left = int(np.clip(round(cx - size / 2), 0, nw - size))
    top = int(np.clip(round(cy - size / 2), 0, nh - size))
    box = (left, top, left + size, top + size)
    out = image.resize((nw, nh), Image.Resampling.LANCZOS).crop(box)
    if mask is None:
        return out, None
    return out, mask.resize((nw, nh), Image.Resampling.NEAREST).crop(box)


def _centre(mask: Image.Image, scale: float) -> tuple[float, float]:
    bbox = mask.getbbox()
    if bbox is None:
        return mask.size[0] * scale / 2, mask.size[1] * scale / 2
    return (bbox[0] + bbox[2]) / 2 * scale, (bbox[1] + bbox[3]) / 2 * scale
