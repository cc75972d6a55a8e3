"""Batches as a pure function of (seed, step, process): a resumed run sees exactly the same data.

Images are fitted once and kept as uint8 (a dozen instance photos plus a few hundred class images is
well under a GiB at 512). The order is a fresh permutation each epoch; processes take interleaved
slots so no two see the same example at the same step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from restyle.train.data import Example, fit_square, read_mask
from restyle.train.masks import choose_source, random_mask

DATA_STREAM, MASK_STREAM, CLASS_OFFSET = 0, 1, 1_000_003  # keep the random streams independent


@dataclass
class Item:
    """One fitted image: pixels (S, S, 3) uint8, its caption and the masks it has by source."""

    pixels: np.ndarray
    caption: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # source -> (S, S) bool


def fit_items(
    examples: Sequence[Example],
    size: int,
    fit: str,
    load: Any,
    segment_masks: dict[Path, Path] | None = None,
) -> list[Item]:
    """Fit every example (and its user/segmenter masks, with the same crop) to size x size."""
    items = []
    for ex in examples:
        image = load(ex.path)
        given = {"file": ex.mask_path, "segment": (segment_masks or {}).get(ex.path)}
        raw = {k: read_mask(p, image.size) for k, p in given.items() if p is not None}
        # crop around the garment the user marked, else the one the segmenter found
        anchor = raw.get("file") or raw.get("segment")
        fitted, _ = fit_square(image, None, size, fit, anchor=anchor)
        masks = {}
        for name, m in raw.items():  # every mask gets the photo's own crop
            binary = np.asarray(fit_square(image, m, size, fit, anchor=anchor)[1]) > 127
            if binary.any():
                masks[name] = binary
        items.append(Item(np.asarray(fitted, dtype=np.uint8), ex.caption, masks))
    return items


class TrainSet:
    """Instance items, and class items for prior preservation, served as deterministic batches."""

    def __init__(
        self,
        instances: list[Item],
        classes: list[Item],
        *,
        seed: int,
        batch_size: int,
        mask_mix: Sequence[tuple[str, float]],
    ) -> None:
        if not instances:
            raise ValueError("TrainSet needs at least one instance image")
        self.instances, self.classes = instances, classes
        self.seed, self.batch_size, self.mask_mix = seed, batch_size, tuple(mask_mix)

    def _order(self, offset: int, n: int, epoch: int) -> np.ndarray:
        """This epoch's order: recomputed on demand (a permutation of a few hundred costs microseconds)."""
        return np.random.default_rng([self.seed, DATA_STREAM, offset, epoch]).permutation(n)

    def indices(self, slot: int, n: int, offset: int = 0) -> list[int]:
        """Example indices of global batch slot `slot` (one process' micro-batch)."""
        out = []
        for b in range(self.batch_size):
            position = slot * self.batch_size + b
            epoch, within = divmod(position, n)
            out.append(int(self._order(offset, n, epoch)[within]))
        return out

    def batch(self, step: int, micro: int, accumulation: int, rank: int, world: int) -> dict[str, Any]:
        """The micro-batch process `rank` trains on at optimizer step `step`.

        Returns:
            pixels (B, 3, S, S) float in [-1, 1], masks (B, 1, S, S) float {0, 1}, captions (B,),
            sources (B,): the mask source of each row, n_instance: how many rows are instance rows
            (class rows follow them).
        """
        import torch

        slot = (step * accumulation + micro) * world + rank
        rows = [(self.instances[i], 0, i) for i in self.indices(slot, len(self.instances))]
        if self.classes:
            rows += [
                (self.classes[i], CLASS_OFFSET, i)
                for i in self.indices(slot, len(self.classes), CLASS_OFFSET)
            ]
        pixels, masks, captions, sources = [], [], [], []
        for row, (item, offset, index) in enumerate(rows):
            rng = np.random.default_rng([self.seed, MASK_STREAM, slot, row, offset + index])
            source = choose_source(self.mask_mix, {"random", *item.masks}, rng)
            mask = item.masks[source] if source in item.masks else random_mask(item.pixels.shape[0], rng)
            pixels.append(item.pixels)
            masks.append(mask)
            captions.append(item.caption)
            sources.append(source)
        px = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, S, S)
        mk = torch.from_numpy(np.stack(masks)).unsqueeze(1).float()  # (B, 1, S, S)
        n_instance = self.batch_size
        return {"pixels": px, "masks": mk, "captions": captions, "sources": sources, "n_instance": n_instance}
