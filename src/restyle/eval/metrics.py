"""The measurements of `restyle eval`: masks against labels, colours against swatches, results against
their photo. numpy, PIL and scipy only; CLIP similarity takes a model the caller already loaded.

Conventions:
- masks are boolean (H, W) arrays or PIL `L` images; an `L` mask's support is `> 0` (its feathered edge
  counts as repainted) and its core, used to read a colour, is `>= 128`;
- `iou` and `boundary_f` of two empty masks are NaN: nothing to measure, so a caller averaging over a
  set skips them (`np.nanmean`) instead of counting a free 1.0;
- colours are CIELAB (D65, 2° observer) from sRGB; differences are CIEDE2000 (kL = kC = kH = 1): about 2 is
  just noticeable.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from restyle.errors import InvalidParameterError, UnusableMaskError

MaskLike = Image.Image | np.ndarray

SRGB_TO_XYZ = np.array(  # IEC 61966-2-1 primaries, D65 (Lindbloom's matrix)
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])  # CIE 1931 2° observer
MAX_COLOR_SAMPLES = 20_000  # masked pixels k-means sees; a deterministic stride keeps it reproducible
KMEANS_K = 3  # light, mid and shadow tones of one garment colour
KMEANS_ITERATIONS = 8  # Lloyd steps; three clusters in Lab settle in a handful


def _bool_mask(mask: MaskLike, shape: tuple[int, int], core: bool = False) -> np.ndarray:
    """A mask as a boolean (H, W) array of `shape`; `core`: an `L` mask's >= 128 rather than > 0."""
    if isinstance(mask, Image.Image):
        values = np.asarray(mask.convert("L"))
        out = values >= 128 if core else values > 0
    else:
        out = np.asarray(mask).astype(bool)
    if out.shape != shape:
        raise UnusableMaskError(
            f"mask: shape {out.shape[::-1]} (W, H) differs from the image's {shape[::-1]}", field="mask"
        )
    return out


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)  # (H, W, 3); int16 so differences fit


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean (H, W) masks.

    Args:
        pred: the predicted mask.
        truth: the labelled mask.

    Returns:
        |pred & truth| / |pred | truth|; NaN when both are empty (no garment, none found: not scored).
    """
    pred, truth = np.asarray(pred, bool), _bool_mask(truth, np.shape(pred))
    union = np.count_nonzero(pred | truth)
    return float("nan") if union == 0 else np.count_nonzero(pred & truth) / union


def _boundary(mask: np.ndarray) -> np.ndarray:
    # inner 4-connected contour; the image frame is not a contour (border_value=1)
    return mask & ~ndimage.binary_erosion(
        mask, structure=ndimage.generate_binary_structure(2, 1), border_value=1
    )


def boundary_f(pred: np.ndarray, truth: np.ndarray, tolerance: int = 2) -> float:
    """Boundary F-score (DAVIS, Perazzi et al. 2016): how well the contours agree, not the areas.

    A contour pixel of one mask is matched when a contour pixel of the other lies within `tolerance` px
    (Euclidean). Precision is the matched share of `pred`'s contour, recall that of `truth`'s; F is their
    harmonic mean. Contours are the masks' inner 4-connected edges; the image frame is not a contour.

    Args:
        pred: the predicted mask, boolean (H, W).
        truth: the labelled mask, boolean (H, W).
        tolerance: the matching distance in pixels (DAVIS uses ~0.8% of the diagonal; 2 px at 256 px).

    Returns:
        F in [0, 1]; NaN when both masks are empty; 1.0 when neither has a contour (both fill the frame).
    """
    if tolerance < 0:
        raise InvalidParameterError(f"tolerance: must be >= 0, got {tolerance}", field="tolerance")
    pred, truth = np.asarray(pred, bool), _bool_mask(truth, np.shape(pred))
    if not pred.any() and not truth.any():
        return float("nan")
    if pred.any() != truth.any():  # one mask empty, the other not: no contour can agree
        return 0.0
    bp, bt = _boundary(pred), _boundary(truth)
    if not bp.any() or not bt.any():
        return 1.0 if not bp.any() and not bt.any() else 0.0
    near_t = ndimage.distance_transform_edt(~bt) <= tolerance  # (H, W) within reach of truth's contour
    near_p = ndimage.distance_transform_edt(~bp) <= tolerance
    precision = np.count_nonzero(bp & near_t) / np.count_nonzero(bp)
    recall = np.count_nonzero(bt & near_p) / np.count_nonzero(bt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def srgb_to_lab(rgb: Any) -> np.ndarray:
    """sRGB to CIELAB (D65, 2° observer), with the standard sRGB companding.

    Args:
        rgb: (..., 3) integer (0-255) or float (0-1) sRGB values.

    Returns:
        (..., 3) float64 L*, a*, b*; white is (100, 0, 0).
    """
    arr = np.asarray(rgb)
    c = arr / 255.0 if np.issubdtype(arr.dtype, np.integer) else arr.astype(np.float64)  # ints: 0-255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ SRGB_TO_XYZ.T / D65_WHITE
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def ciede2000(lab1: Any, lab2: Any) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), as Sharma, Wu & Dalal (2005) implement it.

    Args:
        lab1: (..., 3) L*a*b* values.
        lab2: (..., 3) L*a*b* values, broadcastable against `lab1`.

    Returns:
        ΔE00, of the broadcast shape without the last axis (a 0-d array for two colours).
    """
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_bar7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360  # atan2(0, 0) = 0, as the paper sets it
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma = c1p * c2p != 0  # where it is 0, ΔH' is 0: the paper's Δh' and h̄' rules then move nothing
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma, dh, 0.0)
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    l_bar, c_bar = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(
        np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2)
    )
    h_bar = np.where(chroma, h_bar, h_sum)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar
    s_h = 1 + 0.015 * c_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    lt, ct, ht = d_l / s_l, d_c / s_c, d_h / s_h
    return np.sqrt(lt**2 + ct**2 + ht**2 + r_t * ct * ht)


def _kmeans(lab: np.ndarray, k: int, iterations: int) -> np.ndarray:
    """Cluster labels (N,) of Lab points (N, 3): Lloyd's algorithm from the L* quantiles (deterministic)."""
    order = np.argsort(lab[:, 0], kind="stable")
    centres = lab[order[((2 * np.arange(k) + 1) * len(lab)) // (2 * k)]]  # (k, 3)
    labels = np.zeros(len(lab), dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmin(((lab[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            if np.any(labels == j):  # an empty cluster keeps its centre
                centres[j] = lab[labels == j].mean(0)
    return labels


def dominant_color(
    image: Image.Image, mask: MaskLike
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The dominant colour of the masked region, robust to shading and highlights.

    The core of the mask (`>= 128` for an `L` mask) is sampled with a fixed stride to at most
    MAX_COLOR_SAMPLES pixels, clustered in CIELAB by k-means (k = 3, initialised at the 1/6, 1/2 and 5/6
    quantiles of L*, KMEANS_ITERATIONS steps: deterministic), and the largest cluster wins: folds and
    highlights form their own clusters instead of pulling a plain mean towards grey.

    Args:
        image: PIL RGB photo.
        mask: PIL `L` (255 = garment) or boolean (H, W) array of the same size.

    Returns:
        (rgb, lab): the mean sRGB of the winning cluster's pixels (ints) and its Lab centre (floats).
    """
    pixels = np.asarray(image.convert("RGB"))
    inside = _bool_mask(mask, pixels.shape[:2], core=True)
    rgb = pixels[inside]  # (N, 3) uint8, raster order
    if len(rgb) == 0:
        raise UnusableMaskError("mask: empty, no pixels to read a colour from", field="mask")
    rgb = rgb[:: -(-len(rgb) // MAX_COLOR_SAMPLES)]
    lab = srgb_to_lab(rgb)
    labels = _kmeans(lab, min(KMEANS_K, len(lab)), KMEANS_ITERATIONS)
    best = np.argmax(np.bincount(labels))
    mean_rgb = np.rint(rgb[labels == best].mean(0)).astype(int)
    centre = lab[labels == best].mean(0)
    return (int(mean_rgb[0]), int(mean_rgb[1]), int(mean_rgb[2])), (
        float(centre[0]),
        float(centre[1]),
        float(centre[2]),
    )


def hex_to_lab(hex_color: str) -> tuple[float, float, float]:
    """A `#rrggbb` (or `#rgb`) sRGB swatch as L*a*b*.

    Args:
        hex_color: the swatch, with or without '#'.

    Returns:
        (L*, a*, b*).
    """
    digits = hex_color.strip().lstrip("#")
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    try:
        if len(digits) != 6:
            raise ValueError(hex_color)
        rgb = np.array([int(digits[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)
    except ValueError as err:
        raise InvalidParameterError(
            f"color: {hex_color!r} is not a hex colour like '#c8102e'", field="color"
        ) from err
    lab = srgb_to_lab(rgb)
    return float(lab[0]), float(lab[1]), float(lab[2])


def color_delta(image: Image.Image, mask: MaskLike, target_hex: str) -> float:
    """ΔE2000 between the masked region's dominant colour and a hex swatch (about 2: just noticeable).

    Args:
        image: PIL RGB result.
        mask: the repainted region (PIL `L` or boolean array).
        target_hex: the requested colour's swatch, e.g. COLORS["red"].

    Returns:
        The colour difference; 0 is the swatch itself.
    """
    return float(ciede2000(dominant_color(image, mask)[1], hex_to_lab(target_hex)))


def outside_difference(original: Image.Image, result: Image.Image, mask: MaskLike) -> tuple[int, float]:
    """How much the result changed outside the mask (`mask == 0`); restyle guarantees (0, 0.0).

    Args:
        original: the input photo (PIL RGB).
        result: the styled photo, same size.
        mask: the repaint mask (PIL `L` or boolean array).

    Returns:
        (max, mean) absolute channel difference (0-255) over the pixels outside; (0, 0.0) if none are.
    """
    a, b = _pixels(original), _pixels(result)
    if a.shape != b.shape:
        raise UnusableMaskError(f"result: size {result.size} differs from the photo's {original.size}")
    diff = np.abs(a - b)[~_bool_mask(mask, a.shape[:2])]  # (N, 3)
    return (0, 0.0) if diff.size == 0 else (int(diff.max()), float(diff.mean()))


def _gradient(pixels: np.ndarray) -> np.ndarray:
    luma = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0  # (H, W), 0-1
    return np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1)) / 8.0  # per-pixel intensity change


def seam(original: Image.Image, result: Image.Image, mask: MaskLike, width: int = 3) -> float:
    """A seam measure: how much edge strength changed in a band just outside the mask.

    Inside the band nothing is repainted, so any change of its gradient magnitude comes from the pixels
    across the mask's edge: a hard new edge where the repaint meets the photo (a visible seam), or a
    garment whose new colour contrasts differently with its surroundings. 0: the edge looks exactly as in
    the photo; compare settings by it rather than read it as an absolute.

    Args:
        original: the input photo (PIL RGB).
        result: the styled photo, same size.
        mask: the repaint mask; its support is `> 0` for an `L` mask.
        width: the band's width in pixels outside the support.

    Returns:
        Mean absolute difference of the luma gradient magnitude (intensity per pixel, 0-1 scale) over the
        band; 0.0 when the mask is empty or covers the photo (no band).
    """
    if width < 1:
        raise InvalidParameterError(f"width: must be >= 1, got {width}", field="width")
    a, b = _pixels(original), _pixels(result)
    if a.shape != b.shape:
        raise UnusableMaskError(f"result: size {result.size} differs from the photo's {original.size}")
    support = _bool_mask(mask, a.shape[:2])
    if not support.any():
        return 0.0
    band = ~support & (ndimage.distance_transform_edt(~support) <= width)  # (H, W)
    if not band.any():
        return 0.0
    return float(np.abs(_gradient(b) - _gradient(a))[band].mean())


def diversity(images: list[Image.Image], mask: MaskLike) -> float:
    """How different a request's variants are inside the mask.

    Args:
        images: the variants (PIL RGB, one size).
        mask: the repaint mask; its support is `> 0` for an `L` mask.

    Returns:
        Mean over pairs of the mean absolute channel difference inside the mask, 0-1; 0.0 for fewer than
        two images.
    """
    if len(images) < 2:
        return 0.0
    arrays = [_pixels(img) for img in images]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise InvalidParameterError("images: the variants differ in size", field="images")
    inside = _bool_mask(mask, arrays[0].shape[:2])
    if not inside.any():
        raise UnusableMaskError("mask: empty, nothing to compare the variants in", field="mask")
    pairs = [np.abs(x[inside] - y[inside]).mean() / 255.0 for x, y in combinations(arrays, 2)]
    return float(np.mean(pairs))


def _embedding(out: Any) -> Any:
    """A get_*_features result as a tensor: older transformers return one, 5.x a model output."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    raise TypeError(f"get_*_features returned {type(out).__name__}, which holds no embedding")


def clip_similarity(images: list[Image.Image], text: str, model: Any, processor: Any) -> list[float]:
    """Cosine similarity of each image with `text` in a CLIP's joint embedding space.

    Args:
        images: PIL RGB images (e.g. each variant's crop).
        text: the prompt.
        model: a transformers `CLIPModel`, `CLIPSegModel`, or `CLIPSegForImageSegmentation` (its `.clip`).
        processor: the model's processor (`CLIPProcessor`, `CLIPSegProcessor`).

    Returns:
        One similarity in [-1, 1] per image.
    """
    import torch

    if not text.strip():
        raise InvalidParameterError("prompt: empty, nothing to compare the images with", field="prompt")
    if not images:
        return []
    if not hasattr(model, "get_image_features") and hasattr(model, "clip"):
        model = model.clip
    param = next(model.parameters())
    inputs = processor(
        text=[text], images=[img.convert("RGB") for img in images], padding=True, truncation=True,
        return_tensors="pt",
    )  # fmt: skip
    with torch.inference_mode():
        image_emb = _embedding(model.get_image_features(pixel_values=inputs["pixel_values"].to(param)))
        text_kwargs = {k: inputs[k].to(param.device) for k in ("input_ids", "attention_mask") if k in inputs}
        text_emb = _embedding(model.get_text_features(**text_kwargs))
        sims = torch.nn.functional.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
    return [float(s) for s in sims.clamp(-1.0, 1.0).cpu()]


def clip_from_segmenter(segmenter: Any) -> tuple[Any, Any] | None:
    """The CLIP inside a loaded CLIPSeg segmenter, to score prompt adherence without loading another.

    Args:
        segmenter: any restyle segmenter.

    Returns:
        (CLIPSegModel, CLIPSegProcessor) for a `ClipSegSegmenter` (preview ones included), else None.
    """
    from restyle.segment.clipseg import ClipSegSegmenter

    if not isinstance(segmenter, ClipSegSegmenter):
        return None
    return getattr(segmenter.model, "clip", segmenter.model), segmenter.processor
