"""A heatmap drawn over its X-ray, with the prediction in a caption: one PNG per image.

The (h, w) map is stretched over the whole image bilinearly (as the page served by
``pneumokit serve`` draws it) and coloured with matplotlib's ``inferno``; its value
is also the colour's opacity, so regions with no evidence for PNEUMONIA keep the
plain X-ray. The image is shown as decoded (full resolution, at most
``MAX_SIDE`` pixels on its longer side), not as the model's small input.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 1024
MIN_WIDTH = 512  # smaller images are enlarged, so the caption fits
OPACITY = 0.6  # at a heatmap value of 1


def overlay(gray: np.ndarray, heat: np.ndarray, caption: str) -> Image.Image:
    """An RGB image: ``gray`` (H, W) uint8 under ``heat`` (h, w) in [0, 1], ``caption`` above
    (at least ``MIN_WIDTH`` pixels wide, at most ``MAX_SIDE`` on its longer side)."""
    from matplotlib import colormaps

    img = Image.fromarray(gray)
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    if img.width < MIN_WIDTH:
        img = img.resize((MIN_WIDTH, max(1, round(img.height * MIN_WIDTH / img.width))),
                         Image.Resampling.BILINEAR)
    heat_img = Image.fromarray(np.asarray(heat, dtype=np.float32))
    stretched = heat_img.resize(img.size, Image.Resampling.BILINEAR)
    h = np.clip(np.asarray(stretched), 0.0, 1.0)[..., None]
    color = colormaps["inferno"](h[..., 0])[..., :3] * 255.0
    base = np.repeat(np.asarray(img, dtype=np.float32)[..., None], 3, axis=-1)
    alpha = OPACITY * h
    blended = Image.fromarray(np.rint(base * (1 - alpha) + color * alpha).astype(np.uint8))
    return _captioned(blended, caption)


def _captioned(img: Image.Image, caption: str) -> Image.Image:
    size = max(12, img.width // 40)
    font = ImageFont.load_default(size=size)
    while size > 8 and font.getlength(caption) > img.width - size:  # shrink until it fits
        size -= 1
        font = ImageFont.load_default(size=size)
    bar = size * 2
    out = Image.new("RGB", (img.width, img.height + bar), "black")
    out.paste(img, (0, bar))
    ImageDraw.Draw(out).text((size // 2, size // 2), caption, fill="white", font=font)
    return out


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def caption(row: dict, threshold: float, method: str) -> str:
    """``PNEUMONIA  p = 0.9370  (threshold 0.5000, cam)``."""
    return f"{row['label']}  p = {row['probability']:.4f}  (threshold {threshold:.4f}, {method})"
