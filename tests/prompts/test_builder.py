import pytest

from restyle.errors import InvalidParameterError
from restyle.prompts import DEFAULT_NEGATIVE, QUALITY_SUFFIX, all_garments, build_prompt


def test_attributes_and_text_make_one_prompt():
    p = build_prompt(
        garment="skirt",
        style="A-line",
        pattern="florals",
        color="red",
        fabric="linen",
        length="long",
        text="casual vacation look",
    )
    assert p.text.startswith(
        "a model wearing a long A-line red linen skirt with florals".replace("a long", "long")
    )
    assert "casual vacation look" in p.text and p.text.endswith(QUALITY_SUFFIX)
    assert p.negative == DEFAULT_NEGATIVE


def test_solid_pattern_is_not_spelled_out_and_negative_can_be_cleared():
    p = build_prompt(garment="dress", pattern="solid", negative="", quality=False, subject=None)
    assert p.text == "dress" and p.negative == ""


def test_needs_something_to_describe():
    with pytest.raises(InvalidParameterError, match="prompt"):
        build_prompt(color="red")


def test_too_long_text_names_field_and_limit():
    with pytest.raises(InvalidParameterError, match="text: 1001 characters; the limit is 1000"):
        build_prompt(text="x" * 1001)


def test_vocabulary_covers_the_original_skirt_terms():
    assert {"skirt", "dress", "jacket"} <= set(all_garments())
