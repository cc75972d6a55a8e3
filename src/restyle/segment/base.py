"""The segmenter interface: text prompts in, a refined garment mask out.

Every backend implements `logits(image, texts)`, or, where its model gives probabilities rather than logits
(SAM 3, a parser), overrides `role_probabilities(image, garments, guards, params)`; prompt ensembling,
protection and mask refinement are shared here so that every segmenter gives the same `MaskResult` for the
same parameters.

A backend may declare `default_templates`: they replace `MaskParams`' default templates (a request that
leaves the templates at their default gets the backend's own); templates a caller sets are used as given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from restyle.errors import InvalidParameterError, NoGarmentFoundError
from restyle.prompts.vocabulary import DEFAULT_PROTECT
from restyle.segment import ops

MAX_PROMPTS = 16  # garment + protect prompts per request; each costs a decoder pass
MAX_GROW = 256  # pixels; beyond that a mask is a rectangle, not a garment


@dataclass(frozen=True)
class MaskParams:
    """How text becomes a mask. Pixel sizes are at the input photo's resolution."""

    threshold: float = 0.4  # probability above which a pixel is garment; CLIPSeg works at 0.3-0.5
    activation: str = "sigmoid"  # sigmoid, or ndtr (normal CDF) as the original notebook
    templates: tuple[str, ...] = ("{}", "a photo of {}.")  # prompt ensembling: logits averaged
    protect: tuple[str, ...] = DEFAULT_PROTECT  # regions never repainted
    protect_threshold: float = 0.5  # probability above which a pixel is protected
    protect_margin: int = 4  # pixels added around protected regions
    grow: int = 6  # pixels to dilate (negative: erode) the garment mask
    feather: int = 6  # pixels of soft outward edge for compositing
    fill_holes: bool = True  # close holes enclosed by the garment
    min_area: float = 0.0005  # components smaller than this fraction of the image are dropped
    # one threshold per garment prompt, in order, instead of `threshold` (a mask table's measured ones);
    # None: `threshold` for every garment
    garment_thresholds: tuple[float, ...] | None = None

    def thresholds(self, count: int) -> tuple[float, ...]:
        """The threshold of each of `count` garment prompts."""
        if self.garment_thresholds is None:
            return (self.threshold,) * count
        if len(self.garment_thresholds) != count:
            raise InvalidParameterError(
                f"garment_thresholds: {len(self.garment_thresholds)} thresholds for {count} garments",
                field="garment_thresholds",
            )
        return self.garment_thresholds

    def check(self) -> None:
        """Raise InvalidParameterError naming the first bad field and its limit."""
        _in_range("threshold", self.threshold, 0.0, 1.0)
        for value in self.garment_thresholds or ():
            _in_range("garment_thresholds", value, 0.0, 1.0)
        _in_range("protect_threshold", self.protect_threshold, 0.0, 1.0)
        _in_range("grow", self.grow, -MAX_GROW, MAX_GROW)
        _in_range("feather", self.feather, 0, MAX_GROW)
        _in_range("protect_margin", self.protect_margin, 0, MAX_GROW)
        _in_range("min_area", self.min_area, 0.0, 0.5)
        if self.activation not in ops.ACTIVATIONS:
            raise InvalidParameterError(
                f"activation: must be one of {', '.join(ops.ACTIVATIONS)}, got {self.activation!r}",
                field="activation",
            )
        if not self.templates or any("{}" not in t for t in self.templates):
            raise InvalidParameterError("templates: each template must contain '{}'", field="templates")


_DEFAULT_TEMPLATES = MaskParams().templates


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise InvalidParameterError(f"{name}: {value} is out of range [{lo}, {hi}]", field=name)


@dataclass
class MaskResult:
    """A garment mask and how sure the segmenter is of it."""

    mask: Image.Image  # L, input size, 255 = repaint, feathered outward edge
    probability: Image.Image  # L, input size, garment probability x 255 (union of prompts)
    area: float  # fraction of the photo that will be touched (mask > 0)
    confidence: float  # mean garment probability inside the thresholded mask
    prompts: tuple[str, ...]
    protect: tuple[str, ...]
    prompt_areas: dict[str, float] = field(default_factory=dict)  # each garment prompt's own area
    params: MaskParams = field(default_factory=MaskParams)
    preview: bool = False  # made by the preview segmenter: a placeholder, not a reading of the photo

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no pixels)."""
        return {
            "preview": self.preview,
            "prompts": list(self.prompts),
            "protect": list(self.protect),
            "area": round(self.area, 5),
            "confidence": round(self.confidence, 4),
            "prompt_areas": self.prompt_areas,
            "params": asdict(self.params),
            "size": list(self.mask.size),
        }


def clean_prompts(name: str, prompts: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Normalise one prompt or a list of them; empty strings dropped."""
    if prompts is None:
        return ()
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    out = tuple(" ".join(str(p).split()) for p in items if str(p).strip())
    if len(out) > MAX_PROMPTS:
        raise InvalidParameterError(f"{name}: {len(out)} prompts; the limit is {MAX_PROMPTS}", field=name)
    return out


class BaseSegmenter:
    """Shared `segment()` on top of a backend's `logits()` (or its own `role_probabilities()`)."""

    name = "base"
    model_id = ""
    preview = False  # True for the tiny-model preview: its masks are placeholders
    license = ""  # the weights' licence as their publisher states it; "" where the backend does not say
    default_templates: tuple[str, ...] | None = None  # the backend's own prompt templates; None: MaskParams'

    def logits(self, image: Image.Image, texts: list[str]) -> np.ndarray:
        """Per-text logits at the image's own size: (len(texts), H, W) float32."""
        raise NotImplementedError

    def role_logits(
        self, image: Image.Image, garments: list[str], guards: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits of the garment texts and of the protect texts, from one backend call."""
        out = self.logits(image, [*garments, *guards])
        return out[: len(garments)], out[len(garments) :]

    def role_probabilities(
        self, image: Image.Image, garments: tuple[str, ...], guards: tuple[str, ...], params: MaskParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel probabilities of the garment prompts (P, H, W) and the protect prompts (Q, H, W).

        The default templates each prompt (`params.templates`), averages its logits over the templates and
        applies `params.activation`. A backend whose model gives probabilities overrides this.
        """
        templated = [
            [t.format(p) for p in prompts for t in params.templates] for prompts in (garments, guards)
        ]
        g_logits, p_logits = self.role_logits(image, *templated)  # (P * T, H, W), (Q * T, H, W)
        n_t = len(params.templates)
        g_probs = ops.activate(
            g_logits.reshape(len(garments), n_t, *g_logits.shape[1:]).mean(1), params.activation
        )
        p_probs = ops.activate(
            p_logits.reshape(len(guards), n_t, *p_logits.shape[1:]).mean(1), params.activation
        )
        return g_probs, p_probs

    def resolve_params(self, params: MaskParams | None) -> MaskParams:
        """`params` (default MaskParams()), the backend's own templates where they were left at default."""
        params = params or MaskParams()
        if self.default_templates is not None and params.templates == _DEFAULT_TEMPLATES:
            params = replace(params, templates=self.default_templates)
        return params

    def segment(
        self,
        image: Image.Image,
        prompts: str | list[str] | tuple[str, ...],
        *,
        protect: list[str] | tuple[str, ...] | None = None,
        params: MaskParams | None = None,
    ) -> MaskResult:
        """Mask the garment(s) named by `prompts` in `image`.

        Args:
            image: PIL RGB photo.
            prompts: one garment description or several (their masks are unioned).
            protect: prompts for regions never repainted; None uses `params.protect`, [] none.
            params: thresholds and refinement; defaults to MaskParams().

        Returns:
            MaskResult. Raises NoGarmentFoundError when nothing passes the threshold.
        """
        params = self.resolve_params(params)
        params.check()
        garments = clean_prompts("garment", prompts)
        if not garments:
            raise InvalidParameterError(
                "garment: give at least one garment prompt, e.g. 'the dress'", field="garment"
            )
        guards = clean_prompts("protect", params.protect if protect is None else protect)
        g_probs, p_probs = self.role_probabilities(image, garments, guards, params)
        result = refine(g_probs, p_probs, garments, guards, params)
        result.preview = self.preview
        return result


def refine(
    garment_probs: np.ndarray,
    protect_probs: np.ndarray,
    garments: tuple[str, ...],
    guards: tuple[str, ...],
    params: MaskParams,
) -> MaskResult:
    """Probability maps (P, H, W) and (Q, H, W) to a refined, feathered mask."""
    h, w = garment_probs.shape[1:]
    union = garment_probs.max(axis=0)
    limits = np.asarray(params.thresholds(len(garments)), dtype=garment_probs.dtype)
    over = garment_probs > limits[:, None, None]  # each garment above its own threshold
    mask = over.any(axis=0)
    if not mask.any():
        below = (
            f"the threshold {params.threshold:.2f}"
            if params.garment_thresholds is None
            else "their thresholds " + ", ".join(f"{t:.2f}" for t in limits)
        )
        raise NoGarmentFoundError(
            f"no garment found for {' + '.join(repr(g) for g in garments)}: the highest probability is "
            f"{float(union.max()):.2f}, below {below}. Try a lower threshold "
            "or other wording ('the dress', 'a long skirt').",
            field="garment",
        )
    protected = np.zeros_like(mask)
    if len(guards):
        protected = np.asarray((protect_probs > params.protect_threshold).any(axis=0))
    protected = ops.grow(protected, params.protect_margin)
    mask &= ~protected
    if params.fill_holes:
        mask = ops.fill_holes(mask) & ~protected
    mask = ops.remove_small(mask, max(16, int(params.min_area * h * w)))
    mask = ops.grow(mask, params.grow) & ~protected
    if not mask.any():
        raise NoGarmentFoundError(
            f"no garment found for {' + '.join(repr(g) for g in garments)} outside the protected regions "
            f"({', '.join(guards)}); try other wording, a lower threshold or fewer protected regions.",
            field="garment",
        )
    soft = ops.feather(mask, params.feather)
    soft[protected] = 0  # protection wins over the feathered edge
    confidence = float(union[mask].mean())
    return MaskResult(
        mask=Image.fromarray(soft, mode="L"),
        probability=Image.fromarray(np.rint(union * 255).astype(np.uint8), mode="L"),
        area=float((soft > 0).mean()),
        confidence=confidence,
        prompts=garments,
        protect=guards,
        prompt_areas={g: round(float(o.mean()), 5) for g, o in zip(garments, over)},
        params=params,
    )
