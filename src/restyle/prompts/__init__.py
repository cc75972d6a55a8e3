"""Fashion vocabulary and prompt building."""

from restyle.prompts.builder import MAX_PROMPT_CHARS, Prompt, build_prompt
from restyle.prompts.vocabulary import (
    COLORS,
    DEFAULT_NEGATIVE,
    DEFAULT_PROTECT,
    DESIGN_STYLES,
    FABRICS,
    FITS,
    GARMENTS,
    LENGTHS,
    PATTERNS,
    QUALITY_SUFFIX,
    all_garments,
)

__all__ = [
    "COLORS",
    "DEFAULT_NEGATIVE",
    "DEFAULT_PROTECT",
    "DESIGN_STYLES",
    "FABRICS",
    "FITS",
    "GARMENTS",
    "LENGTHS",
    "MAX_PROMPT_CHARS",
    "PATTERNS",
    "QUALITY_SUFFIX",
    "Prompt",
    "all_garments",
    "build_prompt",
]
