"""A synthetic sample photo (a drawn figure in a dress) for the demo and tests: no real photos ship."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFilter

# The original design's example prompt (its endpoint call: 3 images, 768 px, 45 steps, guidance 6.7)
ORIGINAL_PROMPT = (
    "A female super-model poses in a casual long vacation skirt, with full body length, bright colors, "
    "photorealistic, high quality, highly detailed, elegant, sharp focus"
)


def sample_photo(width: int = 384, height: int = 576) -> Image.Image:
    """A simple figure on a studio background: head, hair, arms, a red dress, legs (PIL RGB)."""
    img = Image.new("RGB", (width, height), (226, 220, 210))
    d = ImageDraw.Draw(img)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return (int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height))

    skin = (224, 182, 150)
    d.rectangle(box(0, 0.82, 1, 1), fill=(196, 188, 176))  # floor
    d.ellipse(box(0.40, 0.05, 0.60, 0.20), fill=(60, 40, 30))  # hair
    d.ellipse(box(0.42, 0.08, 0.58, 0.21), fill=skin)  # face
    d.rectangle(box(0.47, 0.20, 0.53, 0.25), fill=skin)  # neck
    d.polygon(
        [
            (int(0.36 * width), int(0.25 * height)),
            (int(0.64 * width), int(0.25 * height)),
            (int(0.74 * width), int(0.68 * height)),
            (int(0.26 * width), int(0.68 * height)),
        ],
        fill=(178, 34, 52),
    )  # dress
    d.line([box(0.36, 0.26, 0.28, 0.50)[:2], box(0.36, 0.26, 0.28, 0.50)[2:]], fill=skin, width=width // 22)
    d.line([box(0.64, 0.26, 0.72, 0.50)[:2], box(0.64, 0.26, 0.72, 0.50)[2:]], fill=skin, width=width // 22)
    d.ellipse(box(0.25, 0.49, 0.31, 0.53), fill=skin)  # hands
    d.ellipse(box(0.69, 0.49, 0.75, 0.53), fill=skin)
    d.rectangle(box(0.42, 0.68, 0.47, 0.92), fill=skin)  # legs
    d.rectangle(box(0.53, 0.68, 0.58, 0.92), fill=skin)
    return img.filter(ImageFilter.SMOOTH)
