"""Fashion vocabulary for prompts, captions and the studio's suggestions.

The design-style, pattern, colour and fabric lists start from the original design's prompt vocabulary
for casual long skirts and widen it to other garment classes.
"""

GARMENTS: dict[str, tuple[str, ...]] = {
    "tops": (
        "t-shirt",
        "blouse",
        "shirt",
        "tank top",
        "crop top",
        "sweater",
        "cardigan",
        "hoodie",
        "camisole",
    ),
    "bottoms": ("skirt", "trousers", "jeans", "shorts", "leggings", "culottes"),
    "dresses": ("dress", "gown", "jumpsuit", "romper", "sundress", "shirt dress"),
    "outerwear": ("jacket", "coat", "blazer", "trench coat", "parka", "vest"),
    "accessories": ("scarf", "hat", "belt", "handbag", "shoes", "boots", "sneakers"),
}

DESIGN_STYLES: tuple[str, ...] = (
    "A-line",
    "wrap",
    "maxi",
    "midi",
    "mini",
    "pleated",
    "pencil",
    "bodycon",
    "tiered",
    "slip",
    "shift",
    "empire waist",
    "peplum",
    "ruffled",
    "asymmetric",
    "tailored",
    "oversized",
    "cropped",
)

PATTERNS: tuple[str, ...] = (
    "solid",
    "stripes",
    "florals",
    "polka dots",
    "plaid",
    "checks",
    "houndstooth",
    "paisley",
    "animal print",
    "geometric",
    "tie-dye",
    "abstract print",
    "embroidered",
    "color block",
)

COLORS: dict[str, str] = {
    # name -> sRGB hex, used for swatches in the studio
    "black": "#111111",
    "white": "#f7f7f5",
    "grey": "#8a8a8a",
    "pink": "#f2a7c3",
    "red": "#c8102e",
    "blue": "#1f4e9c",
    "navy": "#1b2a4a",
    "green": "#2e7d4f",
    "olive": "#6b6b2a",
    "yellow": "#f4c430",
    "orange": "#f28c28",
    "purple": "#6a3d9a",
    "beige": "#e8d8b9",
    "brown": "#7b4a2d",
    "teal": "#1c8c8c",
    "burgundy": "#7a1f35",
    "pastel": "#cfe3f2",
    "multi-colour": "linear-gradient",
}

FABRICS: tuple[str, ...] = (
    "cotton",
    "denim",
    "linen",
    "rayon",
    "silk",
    "satin",
    "chiffon",
    "wool",
    "cashmere",
    "leather",
    "velvet",
    "lace",
    "knit",
    "tweed",
    "corduroy",
    "jersey",
    "organza",
    "tulle",
)

FITS: tuple[str, ...] = (
    "fitted",
    "relaxed",
    "loose",
    "flowy",
    "high-waisted",
    "low-rise",
    "slim",
    "wide-leg",
)

LENGTHS: tuple[str, ...] = ("cropped", "short", "knee-length", "midi", "ankle-length", "long", "floor-length")

QUALITY_SUFFIX = "photorealistic, high quality, highly detailed, elegant, sharp focus"

DEFAULT_NEGATIVE = (
    "deformed, distorted, disfigured, bad anatomy, extra limbs, extra fingers, blurry, low quality, "
    "lowres, jpeg artifacts, watermark, text, logo"
)

DEFAULT_PROTECT: tuple[str, ...] = ("face", "hands", "hair")


def all_garments() -> tuple[str, ...]:
    """Every garment name, in category order."""
    return tuple(g for group in GARMENTS.values() for g in group)
