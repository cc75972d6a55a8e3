"""The preview segmenter: a tiny restyle-built CLIPSeg gives placeholder masks, labelled `preview`."""

from __future__ import annotations

import numpy as np
import pytest

from restyle.errors import NoGarmentFoundError
from restyle.segment import MaskParams
from restyle.segment.clipseg import ClipSegSegmenter
from restyle.segment.preview import PreviewClipSegSegmenter


def test_a_tiny_folder_loads_as_the_preview_segmenter(segmenter):
    assert type(segmenter) is PreviewClipSegSegmenter
    assert segmenter.preview is True and segmenter.name == "clipseg-preview"


def test_default_threshold_finds_a_torso_mask_labelled_preview(segmenter, photo):
    res = segmenter.segment(photo, "the dress")  # default MaskParams: 0.4, face/hands/hair protected
    assert res.params.threshold == 0.4
    assert res.preview is True and res.summary()["preview"] is True
    assert 0.05 < res.area < 0.9
    mask = np.asarray(res.mask)  # (H, W)
    h, w = mask.shape
    assert mask[int(0.48 * h), w // 2] == 255  # the torso is repainted
    assert mask[int(0.13 * h), w // 2] == 0  # the head is not
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() / w - 0.5) < 0.1 and abs(ys.mean() / h - 0.48) < 0.1


def test_protect_prompts_score_over_the_head_garments_over_the_torso(segmenter, photo):
    garment, guard = segmenter.role_logits(photo, ["the dress"], ["face"])
    h, w = photo.height, photo.width
    head, torso = (int(0.13 * h), w // 2), (int(0.48 * h), w // 2)
    assert garment.shape == guard.shape == (1, h, w)
    assert garment[0][torso] > 0 > garment[0][head]
    assert guard[0][head] > 0 > guard[0][torso]
    _, none = segmenter.role_logits(photo, ["the dress"], [])
    assert none.shape == (0, h, w)


def test_lower_thresholds_give_larger_masks(segmenter, photo):
    areas = [
        segmenter.segment(photo, "the dress", params=MaskParams(threshold=t)).area
        for t in (0.2, 0.4, 0.6, 0.8)
    ]
    assert areas == sorted(areas, reverse=True) and areas[0] > areas[-1], areas


def test_threshold_one_still_finds_nothing(segmenter, photo):
    with pytest.raises(NoGarmentFoundError, match="no garment found for 'the dress'"):
        segmenter.segment(photo, "the dress", params=MaskParams(threshold=1.0))


def test_the_plain_clipseg_on_the_same_model_is_not_a_preview(segmenter, photo):
    real = ClipSegSegmenter(segmenter.model, segmenter.processor)
    assert real.preview is False
    # The tiny random model scores garment and protect texts alike, so at 0.4 the protected regions cover
    # everything it finds: nothing is left, where the preview layout finds the torso.
    with pytest.raises(NoGarmentFoundError):
        real.segment(photo, "the dress")
    found = real.segment(photo, "the dress", params=MaskParams(protect=()))
    assert found.preview is False and found.summary()["preview"] is False
