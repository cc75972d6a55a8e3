"""Scores every variant of a result carries (its colour against the requested one, its CLIP adherence to the
prompt) and the order a request may ask for (`rank`).

The colour is the dominant colour of the repainted region (`metrics.dominant_color`, CIELAB) against the
vocabulary swatch of the requested colour, as CIEDE2000 ΔE: about 2 is a just-noticeable difference, and
beyond COLOR_PASS_DE the garment is not the colour that was asked for.
"""

from __future__ import annotations

from typing import Any

from restyle.errors import InvalidParameterError

RANKS = ("color", "adherence")  # what `rank` may order a request's variants by
COLOR_PASS_DE = 20.0  # ΔE2000 at which "red" stops reading as red: a colour family, not a shade


def color_swatch(color: str | None) -> str | None:
    """The vocabulary's hex swatch of a colour name ("Red", " navy "), else None (free text: no target)."""
    from restyle.prompts.vocabulary import COLORS

    if not color:
        return None
    return COLORS.get(" ".join(color.lower().split()))


def check_rank(by: str | None, color: str | None, has_clip: bool) -> None:
    """Refuse a `rank` the request cannot be ranked by, before any model runs."""
    if by is None:
        return
    if by not in RANKS:
        raise InvalidParameterError(f"rank: must be one of {', '.join(RANKS)}, got {by!r}", field="rank")
    if by == "color" and color_swatch(color) is None:
        raise InvalidParameterError(
            f"rank: ranking by colour needs a vocabulary colour in `color` (got {color!r}; see "
            "/v1/vocabulary)",
            field="rank",
        )
    if by == "adherence" and not has_clip:
        raise InvalidParameterError(
            "rank: ranking by adherence needs a CLIPSeg segmenter loaded (its CLIP scores the prompt)",
            field="rank",
        )


def score(result: Any, color: str | None = None, clip: Any = None) -> None:
    """Fill `result.scores`: per image its dominant colour, and the ΔE to `color`'s swatch when it has one;
    CLIP image-text similarity with the prompt when `clip` (model, processor) is given.

    Args:
        result: a StyleResult (its images, mask and prompt).
        color: the requested colour name, if any.
        clip: (model, processor) of a CLIP, e.g. `metrics.clip_from_segmenter(segmenter)`.
    """
    from restyle.eval.metrics import ciede2000, dominant_color, hex_to_lab

    swatch = color_swatch(color)
    target = hex_to_lab(swatch) if swatch else None
    scores = []
    import numpy as np

    region: Any = result.mask
    if not (np.asarray(result.mask) >= 128).any():  # a faint soft mask: read where it repaints at all
        region = np.asarray(result.mask) > 0
    for image in result.images:
        rgb, lab = dominant_color(image, region)
        entry: dict[str, Any] = {"dominant_color": "#{:02x}{:02x}{:02x}".format(*rgb)}
        if target is not None:
            delta = float(ciede2000(lab, target))
            entry.update(
                color_target=swatch, color_delta_e=round(delta, 2), color_match=delta <= COLOR_PASS_DE
            )
        scores.append(entry)
    if clip is not None:
        from restyle.eval.metrics import clip_similarity

        crops = [img.crop(result.box) for img in result.images]
        for entry, sim in zip(scores, clip_similarity(crops, result.params.prompt, *clip), strict=True):
            entry["clip_similarity"] = round(float(sim), 4)
    result.scores = scores


def rank(result: Any, by: str | None) -> None:
    """Order `result`'s variants best first by colour match (lowest ΔE) or adherence (highest similarity).

    Raises:
        InvalidParameterError when the scores it needs are missing (no colour asked, no CLIP loaded).
    """
    if by is None:
        return
    if by not in RANKS:
        raise InvalidParameterError(f"rank: must be one of {', '.join(RANKS)}, got {by!r}", field="rank")
    key = "color_delta_e" if by == "color" else "clip_similarity"
    if not result.scores or any(key not in s for s in result.scores):
        why = (
            "name a vocabulary colour (`color`) to rank by colour"
            if by == "color"
            else "ranking by adherence needs a CLIPSeg segmenter (its CLIP scores the prompt)"
        )
        raise InvalidParameterError(f"rank: {why}", field="rank")
    sign = 1.0 if by == "color" else -1.0
    order = sorted(range(len(result.images)), key=lambda i: sign * result.scores[i][key])
    result.images = [result.images[i] for i in order]
    result.seeds = [result.seeds[i] for i in order]
    result.scores = [{**result.scores[i], "rank": n + 1, "ranked_by": by} for n, i in enumerate(order)]
