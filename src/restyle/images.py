"""Image input at the edge: any file, mode or orientation becomes a PIL RGB image (masks: `L`).

Inside restyle every image is PIL RGB and every mask is PIL `L` with 255 = repaint.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from restyle.errors import InvalidImageError, UnusableMaskError

MAX_PIXELS = 40_000_000  # ~40 MP: larger photos are a decompression-bomb risk, not a styling input
MIN_SIDE = 8  # below this there is nothing to segment or repaint
MAX_SIDE = 16_384  # a side beyond this is no photo of a person, and every derived image scales with it
MAX_ASPECT = 8.0  # long side / short side: a 1:8 strip already leaves the model almost nothing to paint
# The formats restyle reads. Pillow is never asked to try another plugin: some (EPS) hand the file to an
# external program (Ghostscript), others are fuzzing targets nobody styles photos in.
FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")  # JPEG includes MPO (phone photos)

ImageSource = str | Path | bytes | Image.Image


def _open(source: ImageSource, field: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    try:
        if isinstance(source, bytes):
            return Image.open(io.BytesIO(source), formats=FORMATS)
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{field}: no such file: {path}", field=field)
        return Image.open(path, formats=FORMATS)
    except UnidentifiedImageError as err:
        raise InvalidImageError(
            f"{field}: not a readable image (expected PNG, JPEG, WebP, TIFF, BMP or GIF)", field=field
        ) from err
    except Image.DecompressionBombError as err:  # PIL refuses far-too-large headers before we can look
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise InvalidImageError(
            f"{field}: image declares {size}; the limit is {max_pixels:,}", field=field
        ) from err
    except (OSError, ValueError, SyntaxError) as err:  # e.g. a text chunk that inflates past PIL's limit
        raise InvalidImageError(f"{field}: cannot read image: {err}", field=field) from err


def _check_size(img: Image.Image, field: str, max_pixels: int) -> None:
    w, h = img.size
    if w < MIN_SIDE or h < MIN_SIDE:
        raise InvalidImageError(
            f"{field}: image is {w}x{h} pixels; each side must be at least {MIN_SIDE}", field=field
        )
    if w * h > max_pixels:
        raise InvalidImageError(
            f"{field}: image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}", field=field
        )
    if max(w, h) > MAX_SIDE:
        raise InvalidImageError(
            f"{field}: image is {w}x{h} pixels; the longest side may be {MAX_SIDE:,}", field=field
        )
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise InvalidImageError(
            f"{field}: image is {w}x{h} pixels, {max(w, h) / min(w, h):.0f}:1; the limit is "
            f"{MAX_ASPECT:.0f}:1 (long side to short side)",
            field=field,
        )


def _to_8bit(img: Image.Image) -> Image.Image:
    """High-bit-depth single-channel images (I;16, I, F) scaled to 8-bit L."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif arr.size and arr.max() > 255:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
    elif img.mode == "F" and arr.size and arr.max() <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def normalize_image(img: Image.Image) -> Image.Image:
    """Any PIL image to RGB: EXIF orientation applied, alpha composited over white, 16-bit scaled."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(source: ImageSource, *, field: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read and normalise an input photo.

    Args:
        source: a path, raw file bytes or a PIL image.
        field: the name used in error messages (the CLI argument or JSON field).
        max_pixels: the largest accepted width*height, checked before the pixels are decoded.

    Returns:
        A fully loaded PIL RGB image, upright.
    """
    img = _open(source, field, max_pixels)
    _check_size(img, field, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise InvalidImageError(f"{field}: image data is corrupt or truncated ({err})", field=field) from err
    img = normalize_image(img)
    _check_size(img, field, max_pixels)
    return img


def load_mask(
    source: ImageSource, *, size: tuple[int, int], field: str = "mask", max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Read a mask and return it as `L` (255 = repaint, soft values allowed).

    Alpha-only masks (transparent = keep) are read from their alpha channel.

    Raises:
        InvalidImageError: unreadable, or its size differs from `size` (the photo's, after EXIF rotation).
    """
    img = _open(source, field, max_pixels)
    _check_size(img, field, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidImageError(f"{field}: image data is corrupt or truncated ({err})", field=field) from err
    mask = as_mask(img)
    if mask.size != tuple(size):
        raise UnusableMaskError(
            f"{field}: mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}; "
            "they must be the same size",
            field=field,
        )
    return mask


def as_mask(img: Image.Image) -> Image.Image:
    """A decoded mask image as `L`, 255 = repaint: upright; a transparent one (alpha, or palette and
    colour-key transparency) is read from its transparency (transparent = keep), any other from its grey
    levels."""
    img = ImageOps.exif_transpose(img) or img
    if "transparency" in img.info and img.mode in {"P", "L", "RGB"}:
        img = img.convert("RGBA")  # palette/colour-key transparency is an alpha mask too
    if img.mode in {"RGBA", "LA", "PA"} and np.asarray(img.getchannel("A")).min() < 255:
        return img.getchannel("A")
    return normalize_image(img).convert("L")


def image_to_bytes(img: Image.Image, fmt: str = "PNG", **save_kwargs: object) -> bytes:
    """Encode a PIL image to file bytes (PNG by default)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()
