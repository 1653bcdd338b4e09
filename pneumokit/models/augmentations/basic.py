"""Built-in augmentations with small, X-ray-sensible defaults.

Every layer gets float32 images in [0, 255], keeps shape, dtype and range,
and is the identity at inference (``training=False``). The defaults of the
older ones (flip..zoom) are small; gamma, blur, sharpen, noise and jpeg imitate
how another hospital's acquisition and export differ (docs/data.md).
"""

from __future__ import annotations

from ...core.catalog import Augmentation
from ...hookspecs import hookimpl


def flip(mode: str = "horizontal", seed: int | None = None):
    from .layers import RandomFlip

    return RandomFlip(mode, seed=seed)


def crop(fraction: float = 0.9, scale=None, ratio="0.75-1.33", seed: int | None = None):
    from .layers import RandomCropResize

    return RandomCropResize(fraction, scale=scale, ratio=ratio, seed=seed)


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


def gamma(factor: float = 0.3, seed: int | None = None):
    from .layers import RandomGamma

    return RandomGamma(factor, seed=seed)


def blur(sigma: float = 1.0, seed: int | None = None):
    from .layers import RandomBlur

    return RandomBlur(sigma, seed=seed)


def sharpen(amount: float = 1.0, seed: int | None = None):
    from .layers import RandomSharpen

    return RandomSharpen(amount, seed=seed)


def noise(std: float = 0.03, seed: int | None = None):
    from .layers import RandomNoise

    return RandomNoise(std, seed=seed)


def jpeg(quality: str = "30-95", seed: int | None = None):
    from .layers import RandomJpeg

    return RandomJpeg(quality, seed=seed)


_BUILTINS = [
    (flip, "Random horizontal flip", {"mode": "horizontal"}),
    (crop, "Random crop resized back: fraction of each side, or scale=MIN-MAX of the area "
           "(RandomResizedCrop) with ratio=MIN-MAX", {"fraction": 0.9, "scale": None, "ratio": "0.75-1.33"}),
    (brightness, "Random brightness shift of up to ±10% of the range", {"factor": 0.1}),
    (contrast, "Random contrast change of up to ±10%", {"factor": 0.1}),
    (rotate, "Random rotation of up to ±5 degrees", {"degrees": 5.0}),
    (zoom, "Random zoom in or out by up to 10%", {"factor": 0.1}),
    (gamma, "Random gamma in [1/(1+factor), 1+factor], log-uniform", {"factor": 0.3}),
    (blur, "Gaussian blur, sigma drawn from [0, sigma] pixels", {"sigma": 1.0}),
    (sharpen, "Unsharp mask, amount drawn from [0, amount]", {"amount": 1.0}),
    (noise, "Gaussian noise, std drawn from [0, std] of the range", {"std": 0.03}),
    (jpeg, "Re-encode as JPEG at a quality drawn from MIN-MAX", {"quality": "30-95"}),
]


@hookimpl
def register_augmentations(register):
    for build, description, params in _BUILTINS:
        register(
            Augmentation(name=build.__name__, build=build, description=description, params=params)
        )
