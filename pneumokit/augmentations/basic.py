"""Built-in augmentations with small, X-ray-sensible defaults.

Every layer gets float32 images in [0, 255], keeps shape, dtype and range,
and is the identity at inference (``training=False``).
"""

from __future__ import annotations

from ..catalog import Augmentation
from ..hookspecs import hookimpl


def flip(mode: str = "horizontal", seed: int | None = None):
    from .layers import RandomFlip

    return RandomFlip(mode, seed=seed)


def crop(fraction: float = 0.9, seed: int | None = None):
    from .layers import RandomCropResize

    return RandomCropResize(fraction, seed=seed)


def brightness(factor: float = 0.1, seed: int | None = None):
    from .layers import RandomBrightness

    return RandomBrightness(factor, seed=seed)


def contrast(factor: float = 0.1, seed: int | None = None):
    from .layers import RandomContrast

    return RandomContrast(factor, seed=seed)


def rotate(degrees: float = 5.0, seed: int | None = None):
    from .layers import RandomRotation

    return RandomRotation(degrees, seed=seed)


def zoom(factor: float = 0.1, seed: int | None = None):
    from .layers import RandomZoom

    return RandomZoom(factor, seed=seed)


_BUILTINS = [
    (flip, "Random horizontal flip", {"mode": "horizontal"}),
    (crop, "Random crop of 90% of each side, resized back", {"fraction": 0.9}),
    (brightness, "Random brightness shift of up to ±10% of the range", {"factor": 0.1}),
    (contrast, "Random contrast change of up to ±10%", {"factor": 0.1}),
    (rotate, "Random rotation of up to ±5 degrees", {"degrees": 5.0}),
    (zoom, "Random zoom in or out by up to 10%", {"factor": 0.1}),
]


@hookimpl
def register_augmentations(register):
    for build, description, params in _BUILTINS:
        register(
            Augmentation(name=build.__name__, build=build, description=description, params=params)
        )
