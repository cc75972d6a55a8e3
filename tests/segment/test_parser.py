"""The clothes parser behind BaseSegmenter: words to ATR labels, label probabilities to masks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from restyle.errors import InvalidParameterError
from restyle.models.tiny import TINY_MARKER, published_config
from restyle.models.tiny_segmenters import SEGFORMER_B2_CLOTHES, build_tiny_parser
from restyle.prompts.vocabulary import DEFAULT_PROTECT, all_garments
from restyle.segment import MaskParams, load_segmenter
from restyle.segment.labels import ATR_LABELS, WORDS, prompt_labels, resolve_labels
from restyle.segment.parser import ClothesParser, PreviewClothesParser

SEGFORMER_B2_PARAMS = 27.5e6  # SegFormer MiT-B2 with the all-MLP head on ADE20K's 150 classes (see SOURCES)


@pytest.fixture(scope="session")
def tiny_parser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_parser(tmp_path_factory.mktemp("tiny-parser"))


@pytest.fixture(scope="session")
def parser(tiny_parser: Path) -> PreviewClothesParser:
    seg = load_segmenter(str(tiny_parser), device="cpu")
    assert isinstance(seg, PreviewClothesParser)
    return seg


class PaintedParser(torch.nn.Module):
    """A stand-in SegFormer whose logits paint known labels: Dress on the left half; top-left, Face at 0.55
    and Dress at 0.45, so that corner is garment (0.45 > 0.4) and protected (0.55 > 0.5) at once."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        super().__init__()
        self.config = SimpleNamespace(id2label=dict(enumerate(labels)))
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.labels = labels
        self.dtype = torch.float32

    def forward(self, pixel_values):
        side = pixel_values.shape[-1] // 4
        logits = torch.full((1, len(self.labels), side, side), -10.0)
        logits[0, self.labels.index("Background")] = 10.0
        logits[0, self.labels.index("Dress"), :, : side // 2] = 20.0
        logits[0, self.labels.index("Face"), : side // 4, : side // 4] = 20.2
        return SimpleNamespace(logits=logits * self.scale)


@pytest.mark.parametrize(
    ("prompt", "labels"),
    [
        ("the red dress", ("Dress",)),
        ("a floral shirt dress", ("Dress",)),  # the phrase, not its words
        ("blue jeans", ("Pants",)),
        ("two dresses", ("Dress",)),
        ("white sneakers", ("Left-shoe", "Right-shoe")),
        ("a T-shirt", ("Upper-clothes",)),
        ("the long skirt and a belt", ("Skirt", "Belt")),
        ("hands", ("Left-arm", "Right-arm")),
    ],
)
def test_prompt_words_map_to_labels(prompt, labels):
    assert prompt_labels(prompt) == labels


def test_every_vocabulary_garment_and_default_protect_word_maps():
    assert all(prompt_labels(g) for g in all_garments()), [g for g in all_garments() if not prompt_labels(g)]
    protected = {label for word in DEFAULT_PROTECT for label in resolve_labels(word, ATR_LABELS, "protect")}
    assert protected == {"Face", "Hair", "Left-arm", "Right-arm"}
    assert set().union(*WORDS.values()) <= set(ATR_LABELS)


def test_an_unmapped_prompt_lists_the_labels_and_the_words():
    with pytest.raises(InvalidParameterError) as err:
        resolve_labels("the shiny widget", ATR_LABELS)
    assert err.value.field == "garment"
    message = str(err.value)
    assert "'the shiny widget'" in message and "Upper-clothes" in message and "Scarf" in message
    assert "sundress" in message and "Background" not in message.split("words")[0]


def test_the_tiny_parser_keeps_the_published_labels(parser, tiny_parser):
    published = published_config(SEGFORMER_B2_CLOTHES)["id2label"]
    assert parser.labels == ATR_LABELS == tuple(published[str(i)] for i in range(18))
    marker = json.loads((tiny_parser / TINY_MARKER).read_text())
    assert marker["backend"] == "parser" and parser.name == "parser-preview" and parser.license == "MIT"
    assert type(parser.model).__name__ == "SegformerForSemanticSegmentation"


def test_label_probabilities_sum_to_one_at_the_photo_size(parser, photo):
    groups = [ATR_LABELS, ("Dress",), ("Face", "Hair")]
    probs = parser.group_probabilities(photo, groups)
    assert probs.shape == (3, photo.height, photo.width)
    assert np.allclose(probs[0], 1.0, atol=1e-4) and (probs[1] < probs[0]).all()


def test_labels_become_a_protected_mask(parser, photo):
    seg = ClothesParser(PaintedParser(ATR_LABELS), parser.processor)
    params = MaskParams(grow=0, feather=0, protect_margin=0, protect=("face",))
    res = seg.segment(photo, "the red dress", params=params)
    mask = np.asarray(res.mask)
    h, w = mask.shape
    assert (w, h) == photo.size and res.preview is False
    assert mask[h // 2, w // 8] == 255 and mask[h // 2, 7 * w // 8] == 0
    assert (mask[: h // 5, : w // 5] == 0).all()  # protected by the parser's Face label
    unprotected = np.asarray(seg.segment(photo, "the red dress", params=MaskParams(protect=())).mask)
    assert unprotected[h // 10, w // 10] == 255


def test_an_unknown_garment_fails_before_the_model_runs(parser, photo):
    with pytest.raises(InvalidParameterError, match="no label for 'the widget'"):
        parser.segment(photo, "the widget")
    with pytest.raises(InvalidParameterError) as err:
        parser.segment(photo, "the dress", protect=["the tattoo"])
    assert err.value.field == "protect"


def test_the_preview_finds_a_torso_mask_at_default_settings(parser, photo):
    res = parser.segment(photo, "the dress")
    mask = np.asarray(res.mask)
    h, w = mask.shape
    assert res.preview is True and 0.05 < res.area < 0.9
    assert mask[int(0.48 * h), w // 2] == 255 and mask[int(0.13 * h), w // 2] == 0


def test_the_published_processor_file_is_the_published_size():
    """The copied preprocessor_config.json is 431 bytes, as the repo's page says (SOURCES-segmenters.md)."""
    path = SEGFORMER_B2_CLOTHES / "preprocessor_config.json"
    assert path.stat().st_size == 431
    assert json.loads(path.read_text())["size"] == {"height": 512, "width": 512}


def test_the_published_architecture_has_segformer_b2s_parameter_count():
    """The published config on the meta device: SegFormer-B2 with 18 labels.

    The published 27.5M is for 150 ADE20K classes; the 18-label head is (150 - 18) x (768 + 1) smaller.
    The tolerance, 0.05M, is the rounding of the published figure to 0.1M.
    """
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    with torch.device("meta"):
        model = SegformerForSemanticSegmentation(
            SegformerConfig.from_dict(published_config(SEGFORMER_B2_CLOTHES))
        )
    n = sum(p.numel() for p in model.parameters())
    head_difference = (150 - 18) * (model.config.decoder_hidden_size + 1)
    assert abs(n + head_difference - SEGFORMER_B2_PARAMS) <= 0.05e6, n
