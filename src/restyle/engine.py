"""The whole flow behind one object: photo + garment text -> mask -> restyled variants.

Used by the CLI and (later) the server; models load once, on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PIL import Image

from restyle.config import ModelConfig
from restyle.inpaint.params import StyleParams
from restyle.inpaint.pipeline import Inpainter, Prepared, Progress, StyleResult
from restyle.models.tiny import is_tiny
from restyle.segment import BaseSegmenter, MaskParams, MaskResult, load_segmenter
from restyle.segment.ops import feather, grow

log = logging.getLogger("restyle")


class Restyler:
    """A segmenter and an inpainter, each loaded the first time it is needed."""

    @classmethod
    def auto(cls, config: ModelConfig | None = None, *, say: Callable[[str], None] | None = None) -> Restyler:
        """The configured models (`config`, else defaults -> config file -> RESTYLE_* env) when their
        weights are on this machine; otherwise the tiny-model preview, said through `say` (default: a
        logged warning).

        A folder that does not exist is an error (ModelNotFoundError), never a preview.
        """
        from restyle.config import load_model_config
        from restyle.models.hub import preview_notice, resolve_or_preview

        resolved = resolve_or_preview(config or load_model_config())
        if resolved.preview:
            (say or log.warning)(preview_notice(resolved.missing))
        return cls(resolved.config, preview=resolved.preview)

    def __init__(
        self,
        config: ModelConfig | None = None,
        *,
        preview: bool = False,
        segmenter: BaseSegmenter | None = None,
        inpainter: Inpainter | None = None,
    ) -> None:
        self.config = config or ModelConfig()
        self.preview = preview or is_tiny(self.config.inpainter) or is_tiny(self.config.segmenter)
        self._segmenter = segmenter
        self._inpainter = inpainter
        self._table: Any = None  # the loaded mask table (config.mask_table), on first use

    @property
    def segmenter(self) -> BaseSegmenter:
        if self._segmenter is None:
            segmenter = load_segmenter(self.config.segmenter, device=self.config.device)
            if self.config.protector:  # e.g. SAM 3 finds the garment, a clothes parser protects
                from restyle.segment.combined import CombinedSegmenter

                protector = load_segmenter(self.config.protector, device=self.config.device)
                segmenter = CombinedSegmenter(segmenter, protector)
            self._segmenter = segmenter
        return self._segmenter

    @property
    def inpainter(self) -> Inpainter:
        if self._inpainter is None:
            c = self.config
            self._inpainter = Inpainter.from_pretrained(
                c.inpainter,
                device=c.device,
                dtype=c.dtype,
                attention_slicing=c.attention_slicing,
                vae_tiling=c.vae_tiling,
                fast=c.fast,
                offload=c.offload,
                quantize=c.quantize,
            )
        return self._inpainter

    def segmenter_info(self) -> dict | None:
        """The loaded segmenter's backend, model and licence (None when none is loaded)."""
        seg = self._segmenter
        if seg is None:
            return None
        return {
            "protector": getattr(getattr(seg, "protector", None), "name", None),  # CombinedSegmenter
            "backend": seg.name,
            "model": seg.model_id,
            "license": getattr(seg, "license", None),
            "preview": seg.preview,
        }

    def mask(
        self,
        image: Image.Image,
        garment: str | list[str],
        *,
        protect: list[str] | None = None,
        params: MaskParams | None = None,
    ) -> MaskResult:
        """Text to mask (see BaseSegmenter.segment), through the configured mask table if any."""
        garment, params = self.tuned(garment, params)
        return self.segmenter.segment(image, garment, protect=protect, params=params)

    def tuned(
        self, garment: str | list[str], params: MaskParams | None
    ) -> tuple[str | list[str], MaskParams | None]:
        """The mask table's wording for each garment text it knows ("the gown" -> "a dress"), and its
        threshold where the request left the default, per garment (`MaskParams.garment_thresholds`: a
        garment the table does not know keeps the default); unchanged without `config.mask_table`."""
        if not self.config.mask_table:
            return garment, params
        if self._table is None:
            from restyle.eval.table import load_mask_table

            self._table = load_mask_table(self.config.mask_table)
        texts = [garment] if isinstance(garment, str) else list(garment)
        hits = [self._table.lookup(text) for text in texts]
        if not any(hits):
            return garment, params
        words = [hit[0] if hit else text for text, hit in zip(texts, hits, strict=True)]
        params = params or MaskParams()
        if params.threshold == MaskParams().threshold:  # the request did not choose one
            from dataclasses import replace

            # each known garment its measured threshold; one the table does not know keeps the default
            thresholds = tuple(hit[1] if hit else params.threshold for hit in hits)
            params = replace(params, garment_thresholds=thresholds)
        return words, params

    def prepare(
        self,
        image: Image.Image,
        params: StyleParams,
        *,
        garment: str | list[str] | None = None,
        mask: Image.Image | None = None,
        protect: list[str] | None = None,
        mask_params: MaskParams | None = None,
        style: str | None = None,
        style_scale: float = 1.0,
    ) -> tuple[Prepared, MaskResult | None]:
        """Mask from `garment` text (or the given `mask`) and cut the working crop; no denoising yet.

        A given mask is used as is except for `mask_params.grow` / `.feather` when mask_params is passed.
        Denoise with `self.inpainter.run_batch([prepared, ...])`, alone or with others of the same key.

        Returns:
            (Prepared, MaskResult or None when a mask was given).
        """
        from restyle.errors import InvalidParameterError

        if (garment is None) == (mask is None):
            raise InvalidParameterError(
                "garment/mask: give exactly one of a garment text or a mask image", field="garment"
            )
        params.check()
        mask_result = None
        if mask is None:
            assert garment is not None
            mask_result = self.mask(image, garment, protect=protect, params=mask_params)
            mask = mask_result.mask
        elif mask_params is not None:
            mask = refine_given_mask(mask, mask_params)
        extra = {
            "mask_prompts": list(mask_result.prompts) if mask_result else [],
            "protect": list(mask_result.protect) if mask_result else [],
            "segmenter": self.config.segmenter if mask_result else None,
            "segmenter_backend": self.segmenter.name if mask_result else None,
            "preview": self.preview,
        }
        prepared = self.inpainter.prepare(
            image, mask, params, style=style, style_scale=style_scale, extra=extra
        )
        return prepared, mask_result

    def style(
        self,
        image: Image.Image,
        params: StyleParams,
        *,
        garment: str | list[str] | None = None,
        mask: Image.Image | None = None,
        protect: list[str] | None = None,
        mask_params: MaskParams | None = None,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
        style: str | None = None,
        style_scale: float = 1.0,
        color: str | None = None,
        rank: str | None = None,
    ) -> tuple[StyleResult, MaskResult | None]:
        """Restyle `image`: mask from `garment` text, or the given `mask`, then inpaint (see `prepare`).

        `color` (a vocabulary colour name) gives every variant its ΔE to that colour; `rank` orders the
        variants by "color" match or prompt "adherence" (restyle.eval.rank).

        Returns:
            (StyleResult, MaskResult or None when a mask was given).
        """
        self.check_rank(rank, color)
        prepared, mask_result = self.prepare(
            image,
            params,
            garment=garment,
            mask=mask,
            protect=protect,
            mask_params=mask_params,
            style=style,
            style_scale=style_scale,
        )
        result = self.inpainter.run_batch([prepared], progress=progress, cancel=cancel)[0]
        self.score(result, color=color, rank=rank)
        return result, mask_result

    def clip(self) -> Any:
        """The CLIP that scores prompt adherence: the CLIPSeg segmenter's, else None."""
        from restyle.eval.metrics import clip_from_segmenter

        if self._segmenter is None:
            return None
        return clip_from_segmenter(getattr(self._segmenter, "finder", self._segmenter))

    def check_rank(self, rank: str | None, color: str | None) -> None:
        """Refuse a rank this request cannot be ordered by, before anything runs."""
        import contextlib

        from restyle.errors import RestyleError
        from restyle.eval.rank import check_rank

        has_clip = False
        if rank == "adherence":
            # a request with its own mask has not loaded the segmenter yet; an archive may have none
            with contextlib.suppress(RestyleError):
                _ = self.segmenter
            has_clip = self.clip() is not None
        check_rank(rank, color, has_clip)

    def score(self, result: StyleResult, *, color: str | None = None, rank: str | None = None) -> None:
        """Per-variant scores into the result's metadata (dominant colour, ΔE to `color`, and CLIP
        adherence when ranking by it), then the variants in `rank` order."""
        from restyle.eval import rank as ranking

        ranking.score(result, color, self.clip() if rank == "adherence" else None)
        ranking.rank(result, rank)


def refine_given_mask(mask: Image.Image, params: MaskParams) -> Image.Image:
    """Grow/shrink and feather a user's mask with the same operations as segmenter masks."""
    import numpy as np

    params.check()
    binary = np.asarray(mask.convert("L")) > 127
    binary = grow(binary, params.grow)
    return Image.fromarray(feather(binary, params.feather), mode="L")
