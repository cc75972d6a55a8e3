import io

import numpy as np
import pytest
from PIL import Image

from restyle.errors import InvalidImageError
from restyle.images import image_to_bytes, load_image, load_mask


def _rgb(w=40, h=30, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def test_rgb_png_round_trips_exactly():
    img = _rgb()
    out = load_image(image_to_bytes(img))
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "1"])
def test_modes_normalise_to_rgb(mode):
    img = _rgb().convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(image_to_bytes(img, fmt))
    assert out.mode == "RGB" and out.size == img.size


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    out = load_image(image_to_bytes(img))
    assert out.getpixel((3, 3)) == (255, 255, 255)


def test_16bit_is_scaled_to_8bit():
    arr = np.full((12, 12), 65535, dtype=np.uint16)
    arr[:6] = 0
    img16 = Image.fromarray(arr)
    assert img16.mode.startswith("I;16")
    out = load_image(image_to_bytes(img16))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((0, 11)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = _rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = io.BytesIO()
    img.save(data, format="JPEG", exif=exif.tobytes())
    assert load_image(data.getvalue()).size == (20, 40)


def test_truncated_file_is_a_clear_error():
    data = image_to_bytes(_rgb(200, 200))
    with pytest.raises(InvalidImageError, match="image: .*(corrupt|truncated)") as info:
        load_image(data[: len(data) // 2])
    assert info.value.field == "image"


def test_not_an_image():
    with pytest.raises(InvalidImageError, match="photo: not a readable image"):
        load_image(b"hello, not a picture", field="photo")


def test_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_too_small():
    with pytest.raises(InvalidImageError, match="at least 8"):
        load_image(image_to_bytes(_rgb(4, 30)))


def test_decompression_bomb_is_refused_before_decoding():
    bomb = image_to_bytes(Image.new("1", (10_000, 5_000)))  # 50 MP, a few KB on disk
    assert len(bomb) < 200_000
    with pytest.raises(InvalidImageError, match="the limit is 40,000,000"):
        load_image(bomb)


def test_pixel_limit_is_configurable():
    with pytest.raises(InvalidImageError, match="the limit is 1,000"):
        load_image(image_to_bytes(_rgb(40, 30)), max_pixels=1000)


def test_mask_of_another_size():
    mask = Image.new("L", (40, 31), 255)
    with pytest.raises(InvalidImageError, match="mask is 40x31 but the image is 40x30"):
        load_mask(image_to_bytes(mask), size=(40, 30))


def test_mask_from_alpha_channel():
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (5, 5, 10, 10))
    mask = load_mask(image_to_bytes(rgba), size=(20, 20))
    assert mask.getpixel((6, 6)) == 255 and mask.getpixel((0, 0)) == 0
