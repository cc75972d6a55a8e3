"""Class images for prior preservation, generated from the base model before training.

As in the reference run, the class is whatever the base model draws for the class prompt. The
inpainting model draws from scratch when the whole canvas is masked. Processes split the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from restyle.inpaint.params import MAX_SEED, StyleParams
from restyle.inpaint.pipeline import Inpainter
from restyle.outputs import save_png
from restyle.train.data import list_images

log = logging.getLogger(__name__)

CANVAS_GREY = 127  # fully masked, so its colour only seeds the masked-image latents


def missing_class_images(class_dir: Path, wanted: int) -> list[int]:
    """Indices of generated class images still to make (existing files of any name count)."""
    have = len(list_images(class_dir)) if class_dir.is_dir() else 0
    made = {p.stem for p in class_dir.glob("generated-*.png")} if class_dir.is_dir() else set()
    todo: list[int] = []
    index = 0
    while have + len(todo) < wanted:
        if f"generated-{index:05d}" not in made:
            todo.append(index)
        index += 1
    return todo


def generate_class_images(
    inpainter: Inpainter,
    class_dir: Path,
    todo: list[int],
    *,
    prompt: str,
    size: int,
    steps: int,
    seed: int,
    batch: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Draw `generated-<index>.png` for each index in `todo` with seed `seed + index`, `batch` per call.

    Each file is written atomically with its prompt and seed in the PNG metadata, so a killed run
    leaves no half image and the next run picks up where it stopped. A seed draws the same image in
    any batch (up to floating-point rounding).
    """
    class_dir.mkdir(parents=True, exist_ok=True)
    canvas = Image.new("RGB", (size, size), (CANVAS_GREY,) * 3)
    full = Image.new("L", (size, size), 255)
    written = []
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        params = StyleParams(  # seeds wrap like the inpainter's own (seed + i) % 2**32
            prompt=prompt,
            steps=steps,
            num_images=len(chunk),
            seeds=tuple((seed + index) % (MAX_SEED + 1) for index in chunk),
            size=size,
            crop=False,
        )
        result = inpainter.run(canvas, full, params)
        for i, index in enumerate(chunk):
            out = class_dir / f"generated-{index:05d}.png"
            save_png(result.images[i], out, {**result.metadata(i), "class_image": True})
            written.append(out)
            if progress is not None:
                progress(1)
    return written
