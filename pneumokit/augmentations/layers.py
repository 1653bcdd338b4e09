"""Fast, seedable augmentation layers for batches of float32 images in [0, 255].

Each layer accepts an optional per-call ``seed`` (a shape-(2,) int tensor).
The pipeline passes one per batch, drawn from a seeded stream, so augmentation
can run in parallel and still give the same numbers on every run. Without a
seed a layer draws from its own generator (seeded by ``seed=`` at build).
All layers keep shape, dtype and range and are the identity when ``training``
is false.

The built-ins come in two kinds, and each describes its random draw as data
so the pipeline can fuse a list of them (``pneumokit.fused``):

- ``GeometricAugmentation`` (flip, crop, rotate, zoom) moves pixels. Per image
  it is a 3×3 matrix mapping output pixel coordinates to input coordinates;
  a chain of them is one matrix product and one resampling pass.
- ``PointwiseAugmentation`` (brightness, contrast) changes values only. Per
  image it is one parameter and a formula over values (and, for contrast, the
  image's mean), so a chain of them is one 256-entry lookup table.

As Keras layers they run the same draw with TensorFlow ops, one at a time.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

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
            raise ValueError(f"flip mode must be horizontal, vertical or horizontal_and_vertical, "
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
        self.factor = float(factor)

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
        self.factor = float(factor)

    def sample(self, batch, seed):
        return self.per_image(batch, seed, 1.0 - self.factor, 1.0 + self.factor)

    def apply(self, values, param, mean, xp):
        return _clip((values - mean) * param + mean, xp)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomCropResize(GeometricAugmentation):
    """Crop a window of ``fraction`` of each side at a random place, resize it back."""

    def __init__(self, fraction: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)

    def inverse_maps(self, batch, height, width, seed):
        offsets = tf.random.stateless_uniform(tf.stack([batch, 2]), seed, 0.0, 1.0 - self.fraction)
        f = tf.fill([batch], self.fraction)
        zeros = tf.zeros_like(f)
        # the window starts at offset * (size - 1) and spans fraction * (size - 1) pixels
        return _affine(f, zeros, offsets[:, 1] * tf.cast(width - 1, tf.float32),
                       zeros, f, offsets[:, 0] * tf.cast(height - 1, tf.float32))

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction}


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
        self.degrees = float(degrees)

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
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"zoom factor must be in [0, 1), got {factor!r}")
        self.factor = float(factor)

    def inverse_maps(self, batch, height, width, seed):
        scale = self.per_image(batch, seed, 1.0 - self.factor, 1.0 + self.factor)
        return self.about_centre(height, width, tf.zeros_like(scale), scale)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
