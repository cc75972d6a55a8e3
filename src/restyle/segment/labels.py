"""Fashion words to the labels of a human/clothes parser (SegFormer fine-tuned on ATR, 18 labels).

A parser does not read text: it labels every pixel with one of a fixed set of classes. A prompt is turned
into labels by the words in it ("the red dress" -> Dress): phrases are matched longest first ("shirt
dress" is a dress, not a shirt), plurals fall back to their singular, and words the vocabulary does not
know ("the", "red", "photo") are ignored. A prompt with no known word is an error that lists the labels
and the words known.

ATR has no hand label: its arm labels cover the bare arm down to the fingers, so "hands" protects the arms.
"""

from __future__ import annotations

import re

from restyle.errors import InvalidParameterError

# The published label order of mattmdjaga/segformer_b2_clothes (id2label of its config.json; see
# models/published/SOURCES-segmenters.md). A model's own id2label is what the parser uses at run time.
ATR_LABELS: tuple[str, ...] = (
    "Background",
    "Hat",
    "Hair",
    "Sunglasses",
    "Upper-clothes",
    "Skirt",
    "Pants",
    "Dress",
    "Belt",
    "Left-shoe",
    "Right-shoe",
    "Face",
    "Left-leg",
    "Right-leg",
    "Left-arm",
    "Right-arm",
    "Bag",
    "Scarf",
)

UPPER = ("Upper-clothes",)
SHOES = ("Left-shoe", "Right-shoe")
ARMS = ("Left-arm", "Right-arm")
LEGS = ("Left-leg", "Right-leg")
CLOTHES = ("Upper-clothes", "Skirt", "Pants", "Dress")

_GROUPS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    # (words and phrases, labels); a phrase is matched before its words
    (("dress", "gown", "sundress", "shirt dress", "frock", "maxi dress", "slip dress"), ("Dress",)),
    (("jumpsuit", "romper", "playsuit", "overalls", "dungarees"), ("Dress", "Upper-clothes", "Pants")),
    (("skirt", "miniskirt", "maxi skirt"), ("Skirt",)),
    (
        (
            "t-shirt",
            "tshirt",
            "tee",
            "blouse",
            "shirt",
            "dress shirt",
            "top",
            "tank top",
            "crop top",
            "tank",
            "sweater",
            "jumper",
            "pullover",
            "sweatshirt",
            "cardigan",
            "hoodie",
            "camisole",
            "tunic",
            "polo",
            "jacket",
            "coat",
            "trench coat",
            "blazer",
            "parka",
            "vest",
            "waistcoat",
            "bodice",
        ),
        UPPER,
    ),
    (
        ("trousers", "pants", "jeans", "shorts", "leggings", "culottes", "slacks", "chinos", "joggers"),
        ("Pants",),
    ),
    (
        ("shoe", "shoes", "boot", "boots", "sneaker", "sneakers", "heels", "sandal", "loafer", "trainer"),
        SHOES,
    ),
    (("hat", "cap", "beanie", "beret"), ("Hat",)),
    (("sunglasses", "glasses", "shades"), ("Sunglasses",)),
    (("belt",), ("Belt",)),
    (("bag", "handbag", "purse", "backpack", "tote", "clutch"), ("Bag",)),
    (("scarf", "shawl", "stole"), ("Scarf",)),
    (("clothes", "clothing", "outfit", "garment", "garments"), CLOTHES),
    # protect words: the body, never repainted by default (DEFAULT_PROTECT: face, hands, hair)
    (("face", "head"), ("Face",)),
    (("hair", "hairstyle"), ("Hair",)),
    (("hand", "hands", "arm", "arms", "finger", "fingers"), ARMS),
    (("leg", "legs"), LEGS),
    (("skin",), ("Face", *ARMS, *LEGS)),
)

WORDS: dict[str, tuple[str, ...]] = {word: labels for words, labels in _GROUPS for word in words}
_MAX_WORDS = max(len(w.split()) for w in WORDS)
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _lookup(phrase: str) -> tuple[str, ...] | None:
    """The labels of a phrase, trying its singular ("dresses" -> "dress") when the plural is unknown."""
    if phrase in WORDS:
        return WORDS[phrase]
    for suffix in ("es", "s"):
        if phrase.endswith(suffix) and phrase[: -len(suffix)] in WORDS:
            return WORDS[phrase[: -len(suffix)]]
    return None


def prompt_labels(prompt: str) -> tuple[str, ...]:
    """The parser labels a prompt names, in label order; () when it has no known word.

    Args:
        prompt: a garment or protect prompt ("the red dress", "hands").

    Returns:
        The ATR label names its known words map to, without duplicates.
    """
    tokens = _TOKEN.findall(prompt.lower())
    found: set[str] = set()
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_WORDS, len(tokens) - i), 0, -1):  # longest phrase first
            labels = _lookup(" ".join(tokens[i : i + n]))
            if labels is not None:
                found.update(labels)
                i += n
                break
        else:
            i += 1
    return tuple(label for label in ATR_LABELS if label in found) + tuple(sorted(found - set(ATR_LABELS)))


def resolve_labels(prompt: str, known: tuple[str, ...], field: str = "garment") -> tuple[str, ...]:
    """`prompt_labels`, restricted to the labels a model has; a prompt that names none is an error.

    Args:
        prompt: the prompt to map.
        known: the label names of the model (its id2label values).
        field: the request field the prompt came from ("garment" or "protect"), for the error.

    Returns:
        The model labels the prompt names.

    Raises:
        InvalidParameterError: naming `field`, listing the model's labels and the words restyle knows.
    """
    labels = tuple(label for label in prompt_labels(prompt) if label in known)
    if not labels:
        raise InvalidParameterError(
            f"{field}: the clothes parser finds no label for {prompt!r}. It segments only these labels: "
            f"{', '.join(k for k in known if k != 'Background')}; the words it knows are: "
            f"{', '.join(sorted(WORDS))}. Use one of those words, or a text-prompted segmenter (CLIPSeg, "
            "SAM 3) for other garments.",
            field=field,
        )
    return labels
