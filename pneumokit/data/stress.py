"""Synthetic acquisition shifts for stress-testing a model on held-out images.

Each shift turns one image (Pillow, 8-bit gray, as decoded from its file)
into the bytes of a new file, which then goes through the model's own
preprocessing rule, exactly as a file from another hospital would. They
imitate how acquisition and export differ between sites: exposure (darker,
brighter, contrast), compression, resampling, field of view and aspect,
borders, blur, noise and burned-in markers. It is a proxy: a model that
holds up here may still fail on a real new site, but one that fails here
will not hold up there.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _values(img: Image.Image, fn) -> bytes:
    v = np.asarray(img, dtype=np.float64)
    return _png(Image.fromarray(np.clip(np.rint(fn(v)), 0, 255).astype(np.uint8)))


def _gamma(g: float):
    return lambda img: _values(img, lambda v: 255.0 * (v / 255.0) ** g)


def _contrast(c: float):
    return lambda img: _values(img, lambda v: (v - v.mean()) * c + v.mean())


def _jpeg(quality: int):
    def shift(img):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    return shift


def _lowres(fraction: float):
    def shift(img):
        w, h = img.size
        small = img.resize((max(1, round(w * fraction)), max(1, round(h * fraction))),
                           Image.Resampling.BILINEAR)
        return _png(small.resize((w, h), Image.Resampling.BICUBIC))
    return shift


def _narrower(fraction: float):
    """The central ``fraction`` of the width: another field of view and aspect, squashed back to square."""
    def shift(img):
        w, h = img.size
        cut = round(w * (1 - fraction) / 2)
        return _png(img.crop((cut, 0, w - cut, h)))
    return shift


def _side_borders(fraction: float):
    """Black bands left and right, each ``fraction`` of the width: the image is squeezed between them."""
    def shift(img):
        w, h = img.size
        pad = round(w * fraction)
        canvas = Image.new("L", (w + 2 * pad, h), 0)
        canvas.paste(img, (pad, 0))
        return _png(canvas)
    return shift


def _blur(sigma: float):
    return lambda img: _png(img.filter(ImageFilter.GaussianBlur(sigma)))


def _noise(std: float, seed: int = 0):
    def shift(img):
        rng = np.random.default_rng(seed + img.size[0] * 7919 + int(np.asarray(img).sum()) % 100003)
        return _values(img, lambda v: v + rng.normal(0.0, std, v.shape))
    return shift


def _marker(img: Image.Image) -> bytes:
    """A burned-in white side marker ("R") in the top right corner."""
    out = img.copy()
    size = max(8, img.size[1] // 9)
    draw = ImageDraw.Draw(out)
    draw.text((img.size[0] - 1.6 * size, size // 3), "R", fill=255,
              font=ImageFont.load_default(size=size))
    return _png(out)


SHIFTS: dict[str, Callable[[Image.Image], bytes]] = {
    "none": _png,
    "darker": _gamma(1.5),
    "brighter": _gamma(1 / 1.5),
    "low_contrast": _contrast(0.7),
    "high_contrast": _contrast(1.3),
    "jpeg_q15": _jpeg(15),
    "lowres_30pct": _lowres(0.3),
    "narrower_80pct": _narrower(0.8),
    "side_borders_12pct": _side_borders(0.12),
    "blur_1.5px": _blur(1.5),
    "noise_10": _noise(10.0),
    "marker": _marker,
}


def shifted_file(path, shift: str) -> bytes:
    """The bytes of ``path`` after ``shift`` (a name in ``SHIFTS``), as a new image file."""
    from PIL import ImageOps

    from .preprocessing import to_grayscale8

    with Image.open(path) as img:
        img.load()
        gray = to_grayscale8(ImageOps.exif_transpose(img))
    return SHIFTS[shift](gray)
