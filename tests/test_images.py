"""Images arrive in every mode and state; each either becomes RGB or fails with the file's name."""

import numpy as np
import pytest
from PIL import Image

from owlens.images import ImageReadError, load_image


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 7, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (7, 9)


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)  # fully transparent black
    assert np.asarray(load_image(rgba)).min() == 255


def test_sixteen_bit_grey_keeps_its_contrast():
    values = np.array([[1000, 2000]], dtype=np.uint16)
    loaded = np.asarray(load_image(Image.fromarray(values)))  # uint16 → mode "I;16"
    assert loaded[0, 0, 0] == 0 and loaded[0, 1, 0] == 255


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(path)


def test_truncated_jpeg_is_reported(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(path)


def test_missing_file_and_bad_arrays(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        load_image("/no/such/image.png")
    with pytest.raises(ImageReadError, match="expected an image file; received the folder"):
        load_image(tmp_path)
    with pytest.raises(ImageReadError, match=r"\(2, 2, 5\)"):
        load_image(np.zeros((2, 2, 5), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="float64"):
        load_image(np.zeros((2, 2, 3)))


def test_a_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 48)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3072 pixels: more than twice the limit, as a bomb is
    with pytest.raises(ImageReadError, match="bomb.png.*exceeds limit"):
        load_image(path)
