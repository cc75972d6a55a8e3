"""Training masks: random boxes and ellipses (the reference script), segmenter masks, user masks.

Each training image gets its mask source drawn per step from the configured mix, renormalised over the
sources that image has (a user mask or a segmenter mask may be missing for some images).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from restyle.errors import NoGarmentFoundError
from restyle.outputs import save_png
from restyle.train.data import Example

log = logging.getLogger(__name__)

MIN_COVER, MAX_COVER = 0.25, 0.9  # side of a random shape as a fraction of the image side


def random_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random box or ellipse: (size, size) bool, True = repaint."""
    w, h = (rng.uniform(MIN_COVER, MAX_COVER, 2) * size).astype(int).clip(8, size)
    left, top = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    shape = (left, top, left + w - 1, top + h - 1)
    if rng.random() < 0.5:
        draw.rectangle(shape, fill=255)
    else:
        draw.ellipse(shape, fill=255)
    return np.asarray(canvas) > 127


def centre_box(size: int) -> np.ndarray:
    """The middle half of the image: a fixed mask for validation when an image has no other."""
    out = np.zeros((size, size), bool)
    out[size // 4 : size - size // 4, size // 4 : size - size // 4] = True
    return out


def choose_source(mix: Sequence[tuple[str, float]], available: set[str], rng: np.random.Generator) -> str:
    """Draw a mask source by its share, among those this image has; random when none is."""
    names = [name for name, _ in mix if name in available]
    if not names:
        return "random"
    shares = np.array([share for name, share in mix if name in available], dtype=float)
    return names[int(rng.choice(len(names), p=shares / shares.sum()))]


def cache_name(path: Path) -> str:
    """A mask cache file name unique to the photo's full path (a.png and a.jpg, or two folders) and
    to its current contents (size and modification time: a replaced photo is segmented again)."""
    import hashlib

    stat = Path(path).stat()
    key = f"{Path(path).resolve()}\n{stat.st_size}\n{stat.st_mtime_ns}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"{Path(path).stem}-{digest}.png"


def segment_masks(
    examples: Sequence[Example],
    segment: Callable[[Image.Image], Image.Image],
    cache: Path,
    load: Callable[[Path], Image.Image],
) -> dict[Path, Path]:
    """Segmenter masks for `examples`, cached as PNGs in `cache` (kept across resumes).

    Args:
        examples: images to mask.
        segment: photo -> L mask (255 = garment); raises NoGarmentFoundError when it finds nothing.
        cache: folder for the masks (see cache_name); existing files are reused.
        load: reads an example's photo.

    Returns:
        image path -> mask PNG, for every image where the garment was found.
    """
    cache.mkdir(parents=True, exist_ok=True)
    found: dict[Path, Path] = {}
    missing = []
    for ex in examples:
        out = cache / cache_name(ex.path)
        if not out.is_file():
            try:
                save_png(segment(load(ex.path)), out)
            except NoGarmentFoundError:
                missing.append(ex.path.name)
                continue
        found[ex.path] = out
    if missing:
        log.warning(
            "segment masks: the garment was not found in %d image(s) (%s); they use the other mask sources",
            len(missing),
            ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
        )
    return found
