from __future__ import annotations

import pytest
from PIL import Image


@pytest.fixture
def box_mask(photo: Image.Image) -> Image.Image:
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (20, 40, 70, 120))
    return mask
