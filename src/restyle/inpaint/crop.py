"""Crop geometry and compositing: inpaint only the mask's region, then paste it back exactly.

Guarantee: every pixel whose mask value is 0 is returned byte for byte as it came in.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right/bottom exclusive


def fit_size(width: int, height: int, long_side: int, multiple: int = 8) -> tuple[int, int]:
    """Scale (width, height) so the longer side is `long_side`; both rounded to `multiple`, aspect kept."""
    scale = long_side / max(width, height)
    w = max(multiple, round(width * scale / multiple) * multiple)
    h = max(multiple, round(height * scale / multiple) * multiple)
    return w, h


def mask_box(mask: Image.Image) -> Box | None:
    """Bounding box of the non-zero mask pixels, or None for an empty mask."""
    return mask.getbbox()


def crop_box(mask: Image.Image, work_long_side: int, context: float) -> Box:
    """The region to inpaint: the mask's bounding box, padded by `context` x its longer side.

    The box is widened to the photo's aspect ratio (diffusers' `get_crop_region`) and clamped
    to the photo; it always contains every non-zero mask pixel.
    """
    from diffusers.image_processor import VaeImageProcessor

    bbox = mask_box(mask)
    if bbox is None:
        raise ValueError("crop_box needs a non-empty mask")
    pad = max(8, round(context * max(bbox[2] - bbox[0], bbox[3] - bbox[1])))
    work_w, work_h = fit_size(*mask.size, work_long_side)
    binary = mask.point(lambda v: 255 if v > 0 else 0)
    x1, y1, x2, y2 = (int(v) for v in VaeImageProcessor.get_crop_region(binary, work_w, work_h, pad=pad))
    # Never cut into the mask, whatever the rounding above did.
    return min(x1, bbox[0]), min(y1, bbox[1]), max(x2, bbox[2]), max(y2, bbox[3])


def prepare_crop(
    image: Image.Image, mask: Image.Image, box: Box, work_long_side: int, multiple: int = 8
) -> tuple[Image.Image, Image.Image, tuple[int, int]]:
    """Cut `box` from image and mask and scale both to the model's working size (multiples of `multiple`:
    8 for SD's VAE, 16 where latents are packed 2x2 into tokens).

    The mask given to the model is binary and covers every pixel the soft mask touches.
    """
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    size = fit_size(crop_w, crop_h, work_long_side, multiple)
    work_image = image.crop(box).resize(size, Image.Resampling.LANCZOS)
    binary = mask.crop(box).point(lambda v: 255 if v > 0 else 0)
    work_mask = binary.resize(size, Image.Resampling.BILINEAR).point(lambda v: 255 if v > 0 else 0)
    return work_image, work_mask, size


def pad_to_bucket(image: Image.Image, mask: Image.Image, bucket: int) -> tuple[Image.Image, Image.Image]:
    """Pad a working crop on the right and bottom to multiples of `bucket` pixels (no-op for 0).

    Requests then share a few fixed shapes (what batching and a compiled UNet need) without stretching
    the photo. The padding repeats the crop's edge pixels and is never repainted (mask 0); the caller
    cuts the generated image back to the crop's own size.
    """
    w, h = image.size
    if bucket <= 0:
        return image, mask
    bw, bh = -(-w // bucket) * bucket, -(-h // bucket) * bucket  # ceil to the bucket
    if (bw, bh) == (w, h):
        return image, mask
    pixels = np.pad(np.asarray(image.convert("RGB")), ((0, bh - h), (0, bw - w), (0, 0)), mode="edge")
    padded_mask = Image.new("L", (bw, bh), 0)
    padded_mask.paste(mask, (0, 0))
    return Image.fromarray(pixels, mode="RGB"), padded_mask


COMMON_ASPECTS = ((1, 1), (3, 4), (4, 3), (2, 3), (3, 2), (9, 16), (16, 9))  # photos, as (width, height)


def bucket_shapes(long_side: int, bucket: int, aspects: tuple[tuple[int, int], ...] = COMMON_ASPECTS) -> list:
    """The padded working sizes that crops of photos with these aspects get (crops keep the photo's
    aspect), e.g. 5 shapes at 512 with 64 px buckets: what a compiled UNet should be warmed up on."""
    shapes: list[tuple[int, int]] = []
    for w, h in aspects:
        fw, fh = fit_size(w * long_side, h * long_side, long_side)
        shape = (-(-fw // bucket) * bucket, -(-fh // bucket) * bucket) if bucket > 0 else (fw, fh)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image, box: Box) -> Image.Image:
    """Blend the generated crop into the original with the soft mask as alpha.

    Pixels with mask == 0 are copied from `original` untouched (no float round trip).
    """
    x1, y1, x2, y2 = box
    gen = np.asarray(generated.convert("RGB").resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS))
    out = np.array(original.convert("RGB"))  # (H, W, 3) uint8 copy
    region = out[y1:y2, x1:x2]
    alpha_u8 = np.asarray(mask)[y1:y2, x1:x2, None]  # (h, w, 1)
    alpha = alpha_u8.astype(np.float32) / 255.0
    blended = np.rint(region.astype(np.float32) * (1.0 - alpha) + gen.astype(np.float32) * alpha)
    out[y1:y2, x1:x2] = np.where(alpha_u8 > 0, blended.clip(0, 255).astype(np.uint8), region)
    return Image.fromarray(out, mode="RGB")
