"""The measurements of `restyle eval` against hand-computed values and published reference data."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from restyle.errors import InvalidParameterError, UnusableMaskError
from restyle.eval.metrics import (
    boundary_f,
    ciede2000,
    clip_from_segmenter,
    clip_similarity,
    color_delta,
    diversity,
    dominant_color,
    hex_to_lab,
    iou,
    outside_difference,
    seam,
    srgb_to_lab,
)
from restyle.prompts.vocabulary import COLORS

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes, supplementary
# test data, and mathematical observations", Color Res. Appl. 30(1), Table 1: (L1, a1, b1, L2, a2, b2, ΔE00).
# Data copied from github.com/sumtype/CIEDE2000 tests.py (commit 35e270e38917141327a893fd9ad63118aa3ca726),
# which transcribes the paper's ciede2000testdata.txt; all 34 rows cross-checked, identical, against the
# CIEDE2000 test cases of github.com/tompazourek/Colourful (ColorDifferenceFormulasTest).
SHARMA_2005 = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def _rect(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


TRUTH = _rect((40, 45), (10, 30), (10, 30))  # a 20 x 20 square: its contour has 4 * 20 - 4 = 76 pixels


def test_iou_of_rectangles_with_a_known_overlap():
    assert iou(_rect((40, 45), (10, 30), (15, 35)), TRUTH) == pytest.approx(300 / 500)  # 20x15 of 20x25
    assert iou(_rect((40, 45), (10, 30), (11, 31)), TRUTH) == pytest.approx(380 / 420)
    assert iou(TRUTH, TRUTH) == 1.0 and iou(_rect((40, 45), (0, 5), (0, 5)), TRUTH) == 0.0
    assert iou(np.zeros((40, 45), bool), TRUTH) == 0.0
    assert math.isnan(iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)))  # nothing to score
    with pytest.raises(UnusableMaskError):
        iou(TRUTH, TRUTH[:10])


def test_boundary_f_of_shifted_squares():
    # Shifted right by 5 with tolerance 2: of the prediction's 76 contour pixels, its top and bottom rows
    # match on columns 15..31 (17 each; 30 and 31 lie 1 and 2 px from the truth's corner) and its left
    # column on rows 11, 12, 27, 28 (within 2 px of the truth's top and bottom rows): 38 / 76. By symmetry
    # recall is 38 / 76 too, so F = 0.5.
    assert boundary_f(_rect((40, 45), (10, 30), (15, 35)), TRUTH, tolerance=2) == pytest.approx(0.5)
    shifted = _rect((40, 45), (10, 30), (11, 31))
    assert boundary_f(shifted, TRUTH, tolerance=2) == 1.0  # a 1-px shift is within tolerance
    # tolerance 0: only the 19 + 19 shared pixels of the top and bottom rows match, each way: 38 / 76
    assert boundary_f(shifted, TRUTH, tolerance=0) == pytest.approx(0.5)
    assert boundary_f(TRUTH, TRUTH, tolerance=0) == 1.0


def test_boundary_f_edge_cases():
    empty, full = np.zeros((8, 8), bool), np.ones((8, 8), bool)
    assert math.isnan(boundary_f(empty, empty))
    assert boundary_f(empty, TRUTH[:8, :8] | _rect((8, 8), (2, 6), (2, 6))) == 0.0
    assert boundary_f(full, full) == 1.0  # the image frame is not a contour
    top, lower = _rect((8, 8), (0, 3), (0, 8)), _rect((8, 8), (0, 5), (0, 8))  # bands from the top edge
    assert boundary_f(lower, top, tolerance=1) == 0.0  # only their lower edges count: 2 px apart
    with pytest.raises(InvalidParameterError, match="tolerance"):
        boundary_f(full, full, tolerance=-1)


@pytest.mark.parametrize("pair", SHARMA_2005, ids=[f"pair{i + 1}" for i in range(len(SHARMA_2005))])
def test_ciede2000_matches_sharma_2005_table_1(pair):
    *labs, expected = pair
    assert float(ciede2000(labs[:3], labs[3:])) == pytest.approx(expected, abs=1e-4)
    assert float(ciede2000(labs[3:], labs[:3])) == pytest.approx(expected, abs=1e-4)  # symmetric


def test_ciede2000_is_vectorised():
    data = np.array(SHARMA_2005)
    out = ciede2000(data[:, :3], data[:, 3:6])
    assert out.shape == (34,) and np.allclose(out, data[:, 6], atol=1e-4)
    grid = ciede2000(data[:6, None, :3], data[None, :5, 3:6])  # broadcasting (6, 1, 3) x (1, 5, 3)
    assert grid.shape == (6, 5) and float(ciede2000([50, 0, 0], [50, 0, 0])) == 0.0


def test_srgb_to_lab_of_known_colours():
    white, red, black = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]], dtype=np.uint8))
    assert np.allclose(white, (100.0, 0.0, 0.0), atol=1e-3)
    assert np.allclose(red, (53.2408, 80.0925, 67.2032), atol=1e-3)
    assert np.allclose(black, 0.0, atol=1e-9)
    assert np.allclose(
        srgb_to_lab(np.array([128, 128, 128], np.uint8)), (53.585, 0, 0), atol=1e-3
    )  # companded
    assert np.allclose(srgb_to_lab(np.array([1.0, 0.0, 0.0])), red)  # floats are 0-1
    assert srgb_to_lab(np.zeros((2, 3, 3), np.uint8)).shape == (2, 3, 3)
    assert hex_to_lab("#ff0000") == pytest.approx(tuple(red)) and hex_to_lab("fff") == pytest.approx(white)
    with pytest.raises(InvalidParameterError, match="linear-gradient"):
        hex_to_lab(COLORS["multi-colour"])


def _dress(color: str, size: tuple[int, int] = (64, 96)) -> tuple[Image.Image, Image.Image]:
    """A shaded dress: 60% its swatch, a 25% fold at half brightness, a 15% highlight towards white."""
    hex_rgb = COLORS[color].lstrip("#")
    base = np.array([int(hex_rgb[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float64)
    w, h = size
    img = np.full((h, w, 3), 170.0)
    img[16:76, 8:56] = base
    img[16:76, 8:20] = base * 0.5  # fold: 12 of 48 columns
    img[16:76, 49:56] = base + 0.4 * (255 - base)  # highlight: 7 of 48 columns
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle([8, 16, 55, 75], fill=255)
    return Image.fromarray(img.round().astype(np.uint8)), mask


def test_dominant_colour_sees_through_shading():
    red, mask = _dress("red")
    rgb, lab = dominant_color(red, mask)
    assert rgb == (200, 16, 46) and color_delta(red, mask, COLORS["red"]) < 1.0
    plain_mean = np.asarray(red)[np.asarray(mask) > 0].mean(0) / 255.0
    assert float(ciede2000(srgb_to_lab(plain_mean), hex_to_lab(COLORS["red"]))) > 4.0  # a mean: 2x a JND off
    assert dominant_color(red, np.asarray(mask) > 0) == (rgb, lab)  # a boolean mask reads the same
    blue, _ = _dress("blue")
    assert color_delta(blue, mask, COLORS["red"]) > 40.0


def test_dominant_colour_subsamples_large_regions_and_refuses_an_empty_mask():
    img = Image.new("RGB", (240, 200), (31, 78, 156))  # 48,000 pixels: 40% blue rows, then 60% red
    img.paste((200, 16, 46), (0, 80, 240, 200))
    assert dominant_color(img, np.ones((200, 240), bool))[0] == (200, 16, 46)  # strided, not the first 20k
    with pytest.raises(UnusableMaskError, match="empty"):
        dominant_color(img, Image.new("L", (240, 200), 0))
    with pytest.raises(UnusableMaskError, match="differs"):
        dominant_color(img, Image.new("L", (24, 20), 255))


def _square_mask(size: int = 32) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (8, 8, 24, 24))
    return mask


def test_outside_difference():
    original = Image.new("RGB", (32, 32), (120, 120, 120))
    result = original.copy()
    result.paste((10, 200, 30), (8, 8, 24, 24))
    assert outside_difference(original, result, _square_mask()) == (0, 0.0)
    result.putpixel((0, 0), (127, 120, 120))
    worst, mean = outside_difference(original, result, _square_mask())
    assert worst == 7 and mean == pytest.approx(7 / ((32 * 32 - 16 * 16) * 3))


def test_seam_sees_an_edge_change_not_an_interior_one():
    ramp = np.broadcast_to(np.linspace(60, 190, 32)[None, :, None], (32, 32, 3))
    original = Image.fromarray(ramp.round().astype(np.uint8))
    mask = _square_mask()
    assert seam(original, original.copy(), mask) == 0.0
    interior = original.copy()
    interior.paste((255, 0, 0), (10, 10, 22, 22))  # 2 px inside the edge: beyond the gradient's reach
    assert seam(original, interior, mask) == 0.0
    edge = original.copy()
    edge.paste((255, 0, 0), (8, 8, 24, 24))  # up to the edge: a new hard border
    assert seam(original, edge, mask) > 0.02
    assert seam(original, edge, Image.new("L", (32, 32), 0)) == 0.0  # nothing repainted, no band


def test_diversity():
    mask = _square_mask()
    grey = [Image.new("RGB", (32, 32), (v, v, v)) for v in (0, 51, 102)]
    assert diversity(grey[:1], mask) == 0.0 and diversity([grey[0], grey[0].copy()], mask) == 0.0
    assert diversity(grey[:2], mask) == pytest.approx(0.2)
    assert diversity(grey, mask) == pytest.approx((0.2 + 0.4 + 0.2) / 3)
    outside = grey[0].copy()
    outside.paste((255, 255, 255), (0, 0, 8, 8))  # differences outside the mask do not count
    assert diversity([grey[0], outside], mask) == 0.0


@pytest.fixture(scope="module")
def tiny_clipseg(tmp_path_factory: pytest.TempPathFactory):
    from restyle.models.tiny import build_tiny_segmenter
    from restyle.segment.clipseg import ClipSegSegmenter

    folder = build_tiny_segmenter(tmp_path_factory.mktemp("clip") / "s")
    return ClipSegSegmenter.from_pretrained(str(folder), device="cpu")


def test_clip_similarity_with_the_clip_of_a_clipseg_segmenter(tiny_clipseg):
    from restyle.samples import sample_photo

    clip = clip_from_segmenter(tiny_clipseg)
    assert clip is not None and clip[0] is tiny_clipseg.model.clip
    photos = [sample_photo(96, 144), Image.new("RGB", (40, 40), (20, 80, 160))]
    sims = clip_similarity(photos, "a red dress", *clip)
    assert len(sims) == 2 and all(math.isfinite(s) and -1.0 <= s <= 1.0 for s in sims)
    assert sims[0] != sims[1]
    whole = clip_similarity(photos, "a red dress", tiny_clipseg.model, tiny_clipseg.processor)
    assert whole == pytest.approx(sims, abs=1e-6)  # CLIPSegForImageSegmentation: its .clip is used
    assert clip_from_segmenter(object()) is None
    assert clip_similarity([], "a red dress", *clip) == []


def test_clip_similarity_with_a_clipmodel(tmp_path: Path):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from restyle.models.tiny import build_tiny_tokenizer

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(**small, vocab_size=49408),
        vision_config=dict(**small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "requires torchvision": its PIL fallback is what we want
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer())
    sims = clip_similarity(
        [Image.new("RGB", (48, 64), (200, 16, 46))], "a red dress", CLIPModel(config), processor
    )
    assert len(sims) == 1 and -1.0 <= sims[0] <= 1.0


class _TensorClip:
    """A CLIP whose get_*_features return plain tensors, as transformers < 5 does."""

    def __init__(self) -> None:
        import torch

        self.weight = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.weight])

    def get_image_features(self, pixel_values):
        import torch

        return torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[: len(pixel_values)]

    def get_text_features(self, input_ids, attention_mask=None):
        import torch

        return torch.tensor([[2.0, 0.0]])


def test_clip_similarity_is_the_cosine_of_the_embeddings():
    import torch

    def processor(text, images, **kwargs):
        return {
            "pixel_values": torch.zeros(len(images), 3, 4, 4),
            "input_ids": torch.zeros(1, 3, dtype=torch.long),
        }

    images = [Image.new("RGB", (8, 8))] * 3
    assert clip_similarity(images, "a dress", _TensorClip(), processor) == pytest.approx([1.0, 0.0, 0.5**0.5])
    with pytest.raises(InvalidParameterError, match="prompt"):
        clip_similarity(images, "  ", _TensorClip(), processor)


def test_an_empty_prediction_of_a_full_frame_label_has_no_agreeing_contour():
    from restyle.eval.metrics import boundary_f, srgb_to_lab

    assert boundary_f(np.zeros((8, 8), bool), np.ones((8, 8), bool)) == 0.0
    assert np.allclose(srgb_to_lab([200, 16, 46]), srgb_to_lab(np.array([200, 16, 46], np.uint8)))
