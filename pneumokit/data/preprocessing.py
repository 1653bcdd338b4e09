"""The one definition of how an image file becomes model input.

Training (the tf.data pipeline), ONNX export metadata and the inference
runtime all use this module, so what a model saw in training is replayed
exactly at inference:

1. decode the whole image with Pillow (with the opt-in ``jpeg_draft``, a JPEG
   is decoded by libjpeg at a reduced DCT scale no smaller than the target,
   Pillow's ``draft``: faster on large originals, but few runtimes can do it);
2. apply the EXIF orientation;
3. convert to 8-bit grayscale (16-bit images are scaled by 255/65535, not clipped);
4. resize to H x W with Pillow's bilinear filter (antialiased when shrinking;
   the aspect ratio is not kept);
5. ``x = (pixel * scale - mean) / std`` per channel; a 1-channel image
   broadcasts to the model's channels (grayscale is repeated into RGB).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.catalog import PREPROCESSING_PRESETS
from ..core.config import IMAGE_FORMATS, JPEG_DRAFT, RESIZE_METHOD, shape_refusal
from ..core.files import unreadable
from ..errors import ConfigError, ImageDecodeError, OutOfScopeError
from .dicom import DICOM_EXTENSIONS, is_dicom, read_dicom

# An image over Pillow's pixel limit is refused with a clear message instead of a
# printed warning and a slow decode: threads share the filter, so it is set once here.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")




def to_grayscale8(img: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit grayscale ("L"); 16-bit values are scaled, not clipped."""
    if img.mode == "L":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8))
    if img.mode == "F":
        raise ImageDecodeError("32-bit float images are not supported; save as 8- or 16-bit")
    if _has_alpha(img):
        # Flattened onto black, as a viewer shows it on a dark background: what is transparent is
        # not read (the input gate refuses such images before this; docs/gate.md)
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return img.convert("L")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info


def check_opaque(img: Image.Image) -> None:
    """``OutOfScopeError`` for an image with transparent pixels: a radiograph is opaque, and what
    a transparent pixel hides is not what anyone sees. An alpha channel that is opaque everywhere
    passes."""
    if not _has_alpha(img):
        return
    alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    see_through = float(np.mean(alpha < 255))
    if see_through > 0:
        raise OutOfScopeError(f"image has transparent pixels ({see_through:.0%} of them, "
                              f"{float(np.mean(alpha == 0)):.0%} fully); a chest X-ray is opaque: save it "
                              "without transparency")


def decode(source, size: int | None, *, draft: bool = JPEG_DRAFT) -> np.ndarray:
    """Decode ``source`` (path, bytes or file object) to a (size, size) uint8 grayscale array.

    ``size=None`` keeps the decoded size. Only regular files are opened (a FIFO
    cannot block), only the formats in ``IMAGE_FORMATS`` are decoded, and images
    over Pillow's ``Image.MAX_IMAGE_PIXELS`` are refused. Raises
    ``ImageDecodeError`` with the reason when the file is not a readable image.
    """
    return read_image(source, size, draft=draft, scope=False)[0]


def read_image(source, size: int | None, *, draft: bool = JPEG_DRAFT,
               scope: bool = True) -> tuple[np.ndarray, list[str]]:
    """``decode``, and with ``scope`` the file checks of the input gate first (docs/gate.md):
    a DICOM header that is not a frontal chest radiograph, or a colour image, raises
    ``OutOfScopeError``. Returns the pixels and notes (DICOM tags that could not be checked)."""
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("empty file (0 bytes)")
        source = io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        why = unreadable(source, "an image file")
        if why is not None:
            raise ImageDecodeError(why)
        if os.path.getsize(source) == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        if str(source).lower().endswith(DICOM_EXTENSIONS):
            with open(source, "rb") as f:
                source = io.BytesIO(f.read())
    if isinstance(source, io.BytesIO) and is_dicom(source.getvalue()[:132]):
        limit = Image.MAX_IMAGE_PIXELS or math.inf  # checked from the header, before decoding
        gray, notes = read_dicom(source.getvalue(), limit, scope=scope)
        return _sized(Image.fromarray(gray), size), notes
    try:
        with Image.open(source, formats=IMAGE_FORMATS) as img:
            if img.width * img.height > (Image.MAX_IMAGE_PIXELS or math.inf):  # whatever the filters
                raise Image.DecompressionBombError(f"Image size ({img.width * img.height} pixels)")
            if scope and (why := shape_refusal(img.width, img.height)):  # from the header: nothing decoded
                raise OutOfScopeError(why)
            if draft and size is not None and img.format == "JPEG":
                img.draft("L", (size, size))
            ImageOps.exif_transpose(img, in_place=True)
            if scope:
                check_opaque(img)
                check_grayscale(img)
            return _sized(to_grayscale8(img), size), []
    except (ImageDecodeError, OutOfScopeError):
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(_refused_format(source)) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(_too_large(exc)) from None
    except Exception as exc:  # Pillow raises many types for bad files
        raise ImageDecodeError(f"{type(exc).__name__}: {exc}") from exc


COLOUR_CHROMA = 24  # of 255: a pixel whose channels differ by more is coloured
COLOUR_FRACTION = 0.02  # an image with more coloured pixels than this is a colour image


def check_grayscale(img: Image.Image) -> None:
    """``OutOfScopeError`` for a colour image: an X-ray stored as RGB has equal channels (up to
    compression noise); more than ``COLOUR_FRACTION`` of coloured pixels (a photograph, a drawing,
    a stained slide) is not one. Small coloured annotations stay under it."""
    if img.mode in ("L", "LA", "1", "F", "I") or img.mode.startswith("I;"):
        return
    small = img.convert("RGB")
    small.thumbnail((128, 128))
    rgb = np.asarray(small, dtype=np.int16)
    coloured = float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1) > COLOUR_CHROMA))
    if coloured > COLOUR_FRACTION:
        raise OutOfScopeError(f"image is in colour ({coloured:.0%} of its pixels are coloured); a chest "
                              "X-ray is grayscale")


def _sized(img: Image.Image, size: int | None) -> np.ndarray:
    """A decoded 8-bit grayscale image through the size limit and the resize of the rule."""
    if img.width * img.height > (Image.MAX_IMAGE_PIXELS or math.inf):
        raise ImageDecodeError(_too_large(Image.DecompressionBombError(
            f"Image size ({img.width * img.height} pixels)")))
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _refused_format(source) -> str:
    """Why a file is refused, naming its real format when Pillow knows it (header only)."""
    accepted = " or ".join(IMAGE_FORMATS)
    with contextlib.suppress(OSError):
        if hasattr(source, "read"):
            source.seek(0)
            head = source.read(132)
        else:
            with open(source, "rb") as f:
                head = f.read(132)
        if is_dicom(head):
            return "content is DICOM: name the file .dcm"
    with contextlib.suppress(Exception):
        if hasattr(source, "seek"):
            source.seek(0)
        with Image.open(source) as img:  # reads the header only: nothing is decoded
            return f"content is {img.format}, which pneumokit does not read; convert it to {accepted}"
    return f"content is not a recognised image format ({', '.join(IMAGE_FORMATS)} or DICOM)"


def _too_large(exc: Exception) -> str:
    pixels = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(pixels.group(1)) / 1e6:.3g} megapixels" if pixels else "too many pixels"
    return (f"image is {size}, over the limit of {(Image.MAX_IMAGE_PIXELS or 0) / 1e6:.3g} megapixels "
            "(Pillow's guard against decompression bombs, PIL.Image.MAX_IMAGE_PIXELS); "
            "downscale it first")


@dataclass(frozen=True)
class Preprocessing:
    """How 8-bit pixels become model input; serialisable with ``to_dict``."""

    height: int
    width: int
    channels: int
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    preset: str = "unit"
    jpeg_draft: bool = JPEG_DRAFT

    @classmethod
    def for_architecture(cls, arch, image_size: int | None = None, *,
                         jpeg_draft: bool = JPEG_DRAFT) -> Preprocessing:
        size = int(image_size or arch.image_size)
        return cls.from_preset(arch.preprocessing, size, arch.channels, jpeg_draft=jpeg_draft)

    @classmethod
    def from_preset(cls, preset: str, image_size: int, channels: int, *,
                    jpeg_draft: bool = JPEG_DRAFT) -> Preprocessing:
        p = PREPROCESSING_PRESETS[preset]
        mean, std = list(p["mean"]), list(p["std"])
        if len(mean) == 1:
            mean, std = mean * channels, std * channels
        return cls(image_size, image_size, channels, float(p["scale"]), tuple(mean), tuple(std), preset,
                   bool(jpeg_draft))

    def to_dict(self) -> dict[str, Any]:
        """The ``pneumokit.preprocessing`` metadata: everything another runtime needs."""
        return {
            "color": "grayscale",
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "resize": RESIZE_METHOD,
            "antialias": True,
            "keep_aspect": False,
            "jpeg_draft": self.jpeg_draft,
            "library": "Pillow",
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "preset": self.preset,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            int(d["height"]), int(d["width"]), int(d["channels"]), float(d["scale"]),
            tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
            d.get("preset", "custom"), bool(d.get("jpeg_draft", False)),
        )

    def normalize(self, pixels):
        """``(pixels * scale - mean) / std`` for a float32 (N, H, W, 1) batch.

        Works on NumPy arrays and TensorFlow tensors alike; broadcasting
        repeats the gray channel into the model's channels.
        """
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return (pixels * np.float32(self.scale) - mean) / std

    def load(self, source) -> np.ndarray:
        """One file as a (H, W, 1) uint8 array, by the rule above."""
        return self.load_checked(source, scope=False)[0]

    def load_checked(self, source, scope: bool = True) -> tuple[np.ndarray, list[str]]:
        """``load`` after the input gate's file checks (``read_image``): pixels and notes."""
        if self.height != self.width:
            raise ConfigError("only square inputs are supported")
        pixels, notes = read_image(source, self.height, draft=self.jpeg_draft, scope=scope)
        return pixels[..., None], notes

    def prepare(self, sources) -> np.ndarray:
        """Files as a float32 (N, H, W, C) model-input batch."""
        batch = np.stack([self.load(s) for s in sources]).astype(np.float32)
        return self.normalize(batch)
