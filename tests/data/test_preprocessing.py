"""Decoding of unusual but valid images, and the preprocessing definition."""

import io

import numpy as np
import pytest
from PIL import Image

from pneumokit.data.preprocessing import ImageDecodeError, Preprocessing, decode


def _save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


GRADIENT = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))


def test_gray_rgb_rgba_decode_alike():
    gray = Image.fromarray(GRADIENT)
    expected = decode(_save(gray, "PNG"), 32)
    for mode in ("RGB", "RGBA", "LA", "P"):
        got = decode(_save(gray.convert(mode), "PNG"), 32)
        assert got.shape == (32, 32) and got.dtype == np.uint8
        np.testing.assert_allclose(got.astype(int), expected.astype(int), atol=1)


def test_sixteen_bit_png_is_scaled_not_clipped():
    wide = (np.tile(np.linspace(0, 65535, 64), (64, 1))).astype(np.uint16)
    img = Image.fromarray(wide)
    got = decode(_save(img, "PNG"), None)
    assert got.max() == 255 and got.min() == 0
    np.testing.assert_allclose(got[0].astype(int), np.linspace(0, 255, 64), atol=1)
    assert len(np.unique(got)) > 50  # not clipped to a few values


def test_cmyk_jpeg():
    rgb = Image.fromarray(np.stack([GRADIENT] * 3, axis=-1))
    got = decode(_save(rgb.convert("CMYK"), "JPEG", quality=95), None)
    np.testing.assert_allclose(got.astype(int), GRADIENT.astype(int), atol=6)


def test_large_and_tiny_images():
    big = Image.fromarray(np.tile(np.linspace(0, 255, 2900).astype(np.uint8), (2400, 1)))
    got = decode(_save(big, "JPEG", quality=90), 64)
    assert got.shape == (64, 64)
    np.testing.assert_allclose(got[0].astype(int), np.linspace(0, 255, 64), atol=8)
    tiny = decode(_save(Image.fromarray(GRADIENT[:3, :3]), "PNG"), 32)
    assert tiny.shape == (32, 32)


def test_garbage_raises_decode_error():
    with pytest.raises(ImageDecodeError):
        decode(b"hello, not an image", 32)


def test_normalize_broadcasts_gray_to_rgb_and_matches_presets():
    pixels = np.full((1, 4, 4, 1), 255, dtype=np.float32)
    unit = Preprocessing.from_preset("unit", 4, 1)
    assert unit.normalize(pixels).shape == (1, 4, 4, 1) and unit.normalize(pixels).max() == 1.0
    tf_mode = Preprocessing.from_preset("tf", 4, 3)
    out = tf_mode.normalize(np.zeros((1, 4, 4, 1), np.float32))
    assert out.shape == (1, 4, 4, 3) and np.allclose(out, -1.0)
    caffe = Preprocessing.from_preset("caffe", 4, 3)
    assert np.allclose(caffe.normalize(np.zeros((1, 1, 1, 1), np.float32))[0, 0, 0],
                       [-103.939, -116.779, -123.68])


def test_preprocessing_dict_round_trip():
    pre = Preprocessing.from_preset("caffe", 96, 3)
    d = pre.to_dict()
    assert d["color"] == "grayscale" and d["resize"] == "bilinear" and d["keep_aspect"] is False
    assert Preprocessing.from_dict(d) == pre


@pytest.mark.slow
def test_real_originals_decode(tmp_path):
    from pathlib import Path

    originals = sorted(Path(__file__).parents[3].joinpath("shared/data/originals/train").rglob("*.jpeg"))
    assert len(originals) == 60
    pre = Preprocessing.from_preset("unit", 224, 1)
    for path in originals:
        img = pre.load(path)
        assert img.shape == (224, 224, 1) and 10 < img.mean() < 245, path


def test_exif_orientation_is_applied():
    img = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    got = decode(_save(img, "JPEG", exif=exif.tobytes(), quality=100), None)
    assert got.shape == (4, 3)
