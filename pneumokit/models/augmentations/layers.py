"""Fast, seedable augmentation layers for batches of float32 images in [0, 255].

Each layer accepts an optional per-call ``seed`` (a shape-(2,) int tensor).
The pipeline passes one per batch, drawn from a seeded stream, so augmentation
can run in parallel and still give the same numbers on every run. Without a
seed a layer draws from its own generator (seeded by ``seed=`` at build).
All layers keep shape, dtype and range and are the identity when ``training``
is false.

The built-ins come in two kinds, and each describes its random draw as data
so the pipeline can fuse a list of them (``pneumokit.training.fused``):

- ``GeometricAugmentation`` (flip, crop, rotate, zoom) moves pixels. Per image
  it is a 3×3 matrix mapping output pixel coordinates to input coordinates;
  a chain of them is one matrix product and one resampling pass.
- ``ImageAugmentation`` (blur, sharpen, noise, jpeg) works on whole 8-bit
  gray images with OpenCV: per image, a few parameters and a function of the
  uint8 image. Both paths run the same NumPy/OpenCV code (in TensorFlow
  through ``tf.numpy_function``), on values rounded to uint8.
- ``PointwiseAugmentation`` (brightness, contrast, gamma) changes values only. Per
  image it is one parameter and a formula over values (and, for contrast, the
  image's mean), so a chain of them is one 256-entry lookup table.

As Keras layers they run the same draw with TensorFlow ops, one at a time.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from ...errors import ConfigError

LOW, HIGH = 0.0, 255.0


class SeededAugmentation(keras.layers.Layer):
    """Base class: subclasses implement ``augment(images, seed)`` with stateless ops."""

    def __init__(self, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # keep float32 under a mixed-precision policy
        super().__init__(**kwargs)
        self.seed = seed
        self._generator = (tf.random.Generator.from_seed(seed) if seed is not None
                           else tf.random.Generator.from_non_deterministic_state())

    def call(self, images, training=True, seed=None):
        if not training:
            return images
        if seed is None:
            seed = self._generator.make_seeds(1)[:, 0]
        images = tf.convert_to_tensor(images)
        return tf.cast(self.augment(images, tf.cast(seed, tf.int64)), images.dtype)

    def augment(self, images, seed):
        raise NotImplementedError  # pragma: no cover - abstract

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

    @staticmethod
    def uniform(images, seed, low, high):
        """One value per image in the batch ``images``, shape (B,)."""
        return SeededAugmentation.per_image(tf.shape(images)[0], seed, low, high)

    @staticmethod
    def per_image(batch, seed, low, high):
        """``batch`` values drawn uniformly from [low, high), shape (batch,)."""
        return tf.random.stateless_uniform(tf.reshape(batch, [1]), seed, low, high)


class GeometricAugmentation(SeededAugmentation):
    """Moves pixels: per image, a 3×3 map from output to input pixel coordinates.

    Pixel centres are at integer coordinates; x is the column. Samples outside
    the image are reflected at its edge; interpolation is bilinear.
    """

    def inverse_maps(self, batch, height, width, seed):
        """float32 (batch, 3, 3): output (x, y, 1) -> input (x', y', 1)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def augment(self, images, seed):
        shape = tf.shape(images)
        maps = self.inverse_maps(shape[0], shape[1], shape[2], seed)
        return project(images, maps)


def project(images, maps):
    """Resample float32 (B, H, W, C) ``images`` through (B, 3, 3) output->input ``maps``."""
    flat = tf.reshape(maps / maps[:, 2:3, 2:3], [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )


def _affine(a, b, c, d, e, f):
    """(B, 3, 3) matrices [[a, b, c], [d, e, f], [0, 0, 1]] from (B,) tensors."""
    zeros, ones = tf.zeros_like(a), tf.ones_like(a)
    return tf.reshape(tf.stack([a, b, c, d, e, f, zeros, zeros, ones], axis=1), [-1, 3, 3])


class PointwiseAugmentation(SeededAugmentation):
    """Changes values only: ``v -> apply(v, param, mean)`` with one random ``param`` per image."""

    uses_mean = False  # whether ``apply`` needs the image's mean value

    def sample(self, batch, seed):
        """float32 (batch,): this layer's random parameter for each image."""
        raise NotImplementedError  # pragma: no cover - abstract

    def apply(self, values, param, mean, xp):
        """The new values; ``xp`` is ``numpy`` or ``tf.math`` (both have minimum/maximum)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def augment(self, images, seed):
        param = self.sample(tf.shape(images)[0], seed)[:, None, None, None]
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True) if self.uses_mean else None
        return self.apply(images, param, mean, tf.math)


def _clip(values, xp):
    return xp.minimum(xp.maximum(values, LOW), HIGH)


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomFlip(GeometricAugmentation):
    """Mirror left-right with probability 0.5 (``mode="horizontal"``), or up-down."""

    def __init__(self, mode: str = "horizontal", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("horizontal", "vertical", "horizontal_and_vertical"):
            raise ConfigError(f"flip mode must be horizontal, vertical or horizontal_and_vertical, "
                             f"got {mode!r}")
        self.mode = mode

    def inverse_maps(self, batch, height, width, seed):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        signs = []
        for i, name in enumerate(("horizontal", "vertical")):
            flip = self.per_image(batch, seeds[i], 0.0, 1.0) < 0.5
            if name not in self.mode:
                flip = tf.zeros_like(flip)
            signs.append(tf.where(flip, -1.0, 1.0))
        sx, sy = signs
        w1 = tf.cast(width - 1, tf.float32)
        h1 = tf.cast(height - 1, tf.float32)
        zeros = tf.zeros_like(sx)
        # x' = x or (W - 1) - x; likewise y
        return _affine(sx, zeros, (1.0 - sx) / 2 * w1, zeros, sy, (1.0 - sy) / 2 * h1)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomBrightness(PointwiseAugmentation):
    """Add a shift of up to ``factor`` of the range (per image), clipped to [0, 255]."""

    def __init__(self, factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.factor = number_in(factor, "brightness factor", 0.0, 1.0)

    def sample(self, batch, seed):
        return self.per_image(batch, seed, -self.factor, self.factor) * (HIGH - LOW)

    def apply(self, values, param, mean, xp):
        return _clip(values + param, xp)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomContrast(PointwiseAugmentation):
    """Scale deviations from each image's mean by 1 ± ``factor``, clipped to [0, 255]."""

    uses_mean = True

    def __init__(self, factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.factor = number_in(factor, "contrast factor", 0.0, 1.0)

    def sample(self, batch, seed):
        return self.per_image(batch, seed, 1.0 - self.factor, 1.0 + self.factor)

    def apply(self, values, param, mean, xp):
        return _clip((values - mean) * param + mean, xp)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def number_in(value, name: str, low: float, high: float = math.inf) -> float:
    """``value`` as a float within [low, high], or a ValueError that names it and the range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:
        bound = f"in [{low:g}, {high:g}]" if high < math.inf else f">= {low:g}"
        raise ConfigError(f"{name} must be a number {bound}, got {value!r}")
    return number


def parse_range(value, name: str, low: float, high: float) -> tuple[float, float]:
    """``"0.35-1"``, ``(0.35, 1)`` or a single number as a (min, max) pair within [low, high]."""
    if isinstance(value, str):
        first, sep, second = value.partition("-")
        try:
            pair = (float(first), float(second if sep else first))
        except ValueError:
            raise ConfigError(f"{name} {value!r}: expected MIN-MAX, e.g. {low:g}-{high:g}") from None
    elif isinstance(value, (int, float)):
        pair = (float(value), float(value))
    else:
        pair = tuple(float(v) for v in value)  # type: ignore[assignment]  # its length is checked next
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ConfigError(f"{name} {value!r}: expected MIN-MAX with {low:g} <= MIN <= MAX <= {high:g}")
    return pair


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomCropResize(GeometricAugmentation):
    """Crop a random window and resize it back to the full image.

    Two forms. ``fraction``: a window of that fraction of each side. ``scale``
    (RandomResizedCrop): a window covering a random fraction of the area in
    ``scale`` with a width:height ratio drawn log-uniformly from ``ratio``
    (relative to the image's own aspect; sides longer than the image are cut
    to the image). ``scale`` wins when given.
    """

    def __init__(self, fraction: float = 0.9, scale=None, ratio=(0.75, 4 / 3), **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"crop fraction must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)
        # "None" as list-augmentations prints the default, in any case: the fixed form
        unset = scale is None or str(scale).strip().lower() in ("", "none")
        self.scale = None if unset else parse_range(scale, "crop scale", 1e-3, 1.0)
        self.ratio = parse_range(ratio, "crop ratio", 0.1, 10.0)

    def inverse_maps(self, batch, height, width, seed):
        if self.scale is None:  # the fixed form draws as it always has (same seed, same crop)
            fx = fy = tf.fill(tf.reshape(batch, [1]), self.fraction)
            offsets = tf.random.stateless_uniform(tf.stack([batch, 2]), seed, 0.0, 1.0 - self.fraction)
        else:
            seeds = tf.random.experimental.stateless_split(seed, 3)
            area = self.per_image(batch, seeds[0], *self.scale)
            ratio = tf.exp(self.per_image(batch, seeds[1], math.log(self.ratio[0]),
                                          math.log(self.ratio[1])))
            fx, fy = tf.minimum(tf.sqrt(area * ratio), 1.0), tf.minimum(tf.sqrt(area / ratio), 1.0)
            offsets = tf.random.stateless_uniform(tf.stack([batch, 2]), seeds[2], 0.0, 1.0)
            offsets = offsets * tf.stack([1.0 - fy, 1.0 - fx], axis=1)
        zeros = tf.zeros_like(fx)
        # the window starts at offset * (size - 1) and spans fraction * (size - 1) pixels
        return _affine(fx, zeros, offsets[:, 1] * tf.cast(width - 1, tf.float32),
                       zeros, fy, offsets[:, 0] * tf.cast(height - 1, tf.float32))

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction,
                "scale": None if self.scale is None else list(self.scale), "ratio": list(self.ratio)}


class _CentredAffine(GeometricAugmentation):
    """Rotation and zoom about the image centre."""

    @staticmethod
    def about_centre(height, width, angle, scale):
        """Output->input maps for rotation by ``angle`` and zoom by 1/``scale``, about the centre."""
        cx = (tf.cast(width, tf.float32) - 1) / 2
        cy = (tf.cast(height, tf.float32) - 1) / 2
        cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
        return _affine(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomRotation(_CentredAffine):
    """Rotate by up to ± ``degrees``."""

    def __init__(self, degrees: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.degrees = number_in(degrees, "rotate degrees", 0.0, 180.0)

    def inverse_maps(self, batch, height, width, seed):
        r = math.radians(self.degrees)
        angle = self.per_image(batch, seed, -r, r)
        return self.about_centre(height, width, angle, tf.ones_like(angle))

    def get_config(self):
        return {**super().get_config(), "degrees": self.degrees}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomZoom(_CentredAffine):
    """Zoom in or out by up to ± ``factor`` (0.1 = 10%)."""

    def __init__(self, factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.factor = number_in(factor, "zoom factor", 0.0, 0.99)

    def inverse_maps(self, batch, height, width, seed):
        scale = self.per_image(batch, seed, 1.0 - self.factor, 1.0 + self.factor)
        return self.about_centre(height, width, tf.zeros_like(scale), scale)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomGamma(PointwiseAugmentation):
    """``v -> 255 (v / 255) ** g`` with g drawn log-uniformly from [1 / (1 + factor), 1 + factor]."""

    def __init__(self, factor: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.factor = number_in(factor, "gamma factor", 0.0)

    def sample(self, batch, seed):
        r = math.log1p(self.factor)
        return tf.exp(self.per_image(batch, seed, -r, r))

    def apply(self, values, param, mean, xp):
        unit = xp.maximum(values / HIGH, 1e-6)
        return _clip(HIGH * xp.exp(param * xp.log(unit)), xp)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class ImageAugmentation(SeededAugmentation):
    """Works on whole 8-bit gray images: ``apply_image(uint8 (H, W), params) -> uint8 (H, W)``.

    ``sample`` draws ``n_params`` float32 parameters per image with stateless
    TensorFlow ops; ``apply_image`` is NumPy/OpenCV code, shared by the fused
    path and this layer (which rounds its float input to uint8 first).
    """

    n_params = 1

    def sample(self, batch, seed):
        """float32 (batch, n_params)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def apply_image(self, image: np.ndarray, params: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - abstract

    def augment(self, images, seed):
        params = self.sample(tf.shape(images)[0], seed)
        out = tf.numpy_function(self._apply_batch, [images, params], tf.float32, stateful=False)
        return tf.ensure_shape(out, images.shape)

    def _apply_batch(self, images, params):
        pixels = np.clip(np.rint(images), LOW, HIGH).astype(np.uint8)
        out = np.empty(pixels.shape, dtype=np.float32)
        for b in range(pixels.shape[0]):
            for c in range(pixels.shape[-1]):
                out[b, ..., c] = self.apply_image(np.ascontiguousarray(pixels[b, ..., c]), params[b])
        return out


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomBlur(ImageAugmentation):
    """Gaussian blur with a standard deviation drawn from [0, ``sigma``] pixels."""

    def __init__(self, sigma: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.sigma = number_in(sigma, "blur sigma (pixels)", 0.0, 10.0)

    def sample(self, batch, seed):
        return self.per_image(batch, seed, 0.0, self.sigma)[:, None]

    def apply_image(self, image, params):
        import cv2

        sigma = float(params[0])
        if sigma < 0.05:
            return image
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomSharpen(ImageAugmentation):
    """Unsharp mask ``(1 + a) x - a blur(x)`` (blur sigma 1 pixel), a drawn from [0, ``amount``]."""

    def __init__(self, amount: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.amount = number_in(amount, "sharpen amount", 0.0, 10.0)

    def sample(self, batch, seed):
        return self.per_image(batch, seed, 0.0, self.amount)[:, None]

    def apply_image(self, image, params):
        import cv2

        a = float(params[0])
        blurred = cv2.GaussianBlur(image, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
        return cv2.addWeighted(image, 1.0 + a, blurred, -a, 0.0)  # rounds and saturates to uint8

    def get_config(self):
        return {**super().get_config(), "amount": self.amount}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomNoise(ImageAugmentation):
    """Add Gaussian noise whose standard deviation is drawn from [0, ``std``] of the range."""

    n_params = 2  # the standard deviation and a seed for the noise

    def __init__(self, std: float = 0.03, **kwargs):
        super().__init__(**kwargs)
        self.std = number_in(std, "noise std (a fraction of the range)", 0.0, 1.0)

    def sample(self, batch, seed):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        sigma = self.per_image(batch, seeds[0], 0.0, self.std * (HIGH - LOW))
        noise_seed = tf.floor(self.per_image(batch, seeds[1], 0.0, 2.0 ** 24))  # exact in float32
        return tf.stack([sigma, noise_seed], axis=1)

    def apply_image(self, image, params):
        rng = np.random.default_rng(int(params[1]))
        noisy = image + rng.normal(0.0, float(params[0]), image.shape)
        return np.clip(np.rint(noisy), LOW, HIGH).astype(np.uint8)

    def get_config(self):
        return {**super().get_config(), "std": self.std}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomJpeg(ImageAugmentation):
    """Re-encode as JPEG at a quality drawn from ``quality`` (MIN-MAX, 1-100), decode again."""

    def __init__(self, quality="30-95", **kwargs):
        super().__init__(**kwargs)
        self.quality = parse_range(quality, "jpeg quality", 1, 100)

    def sample(self, batch, seed):
        low, high = self.quality
        return tf.floor(self.per_image(batch, seed, low, high + 1.0 - 1e-3))[:, None]

    def apply_image(self, image, params):
        import cv2

        quality = int(min(max(params[0], 1), 100))
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 gray image
            raise RuntimeError("OpenCV could not encode a JPEG")
        return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)

    def get_config(self):
        return {**super().get_config(), "quality": f"{self.quality[0]:g}-{self.quality[1]:g}"}
