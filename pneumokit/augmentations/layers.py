"""Fast, seedable augmentation layers for batches of float32 images in [0, 255].

Each layer accepts an optional per-call ``seed`` (a shape-(2,) int tensor).
The pipeline passes one per batch, drawn from a seeded stream, so augmentation
can run in parallel and still give the same numbers on every run. Without a
seed a layer draws from its own generator (seeded by ``seed=`` at build).
All layers keep shape, dtype and range and are the identity when ``training``
is false.
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
        """One value per image in the batch, shape (B,)."""
        return tf.random.stateless_uniform(tf.shape(images)[:1], seed, low, high)


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomFlip(SeededAugmentation):
    """Mirror left-right with probability 0.5 (``mode="horizontal"``), or up-down."""

    def __init__(self, mode: str = "horizontal", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("horizontal", "vertical", "horizontal_and_vertical"):
            raise ValueError(f"flip mode must be horizontal, vertical or horizontal_and_vertical, "
                             f"got {mode!r}")
        self.mode = mode

    def augment(self, images, seed):
        out = images
        seeds = tf.random.experimental.stateless_split(seed, 2)
        for i, (axis, name) in enumerate(((2, "horizontal"), (1, "vertical"))):
            if name in self.mode:
                flip = self.uniform(images, seeds[i], 0.0, 1.0) < 0.5
                out = tf.where(flip[:, None, None, None], tf.reverse(out, [axis]), out)
        return out

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomBrightness(SeededAugmentation):
    """Add a shift of up to ``factor`` of the range (per image), clipped to [0, 255]."""

    def __init__(self, factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def augment(self, images, seed):
        delta = self.uniform(images, seed, -self.factor, self.factor) * (HIGH - LOW)
        return tf.clip_by_value(images + delta[:, None, None, None], LOW, HIGH)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomContrast(SeededAugmentation):
    """Scale deviations from each image's mean by 1 ± ``factor``, clipped to [0, 255]."""

    def __init__(self, factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def augment(self, images, seed):
        k = self.uniform(images, seed, 1.0 - self.factor, 1.0 + self.factor)[:, None, None, None]
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        return tf.clip_by_value((images - mean) * k + mean, LOW, HIGH)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomCropResize(SeededAugmentation):
    """Crop a window of ``fraction`` of each side at a random place, resize it back."""

    def __init__(self, fraction: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)

    def augment(self, images, seed):
        if self.fraction == 1.0:
            return images
        batch = tf.shape(images)[0]
        offsets = tf.random.stateless_uniform(tf.stack([batch, 2]), seed, 0.0, 1.0 - self.fraction)
        boxes = tf.concat([offsets, offsets + self.fraction], axis=1)
        return tf.image.crop_and_resize(images, boxes, tf.range(batch), tf.shape(images)[1:3])

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction}


class _AffineAugmentation(SeededAugmentation):
    """Rotation/zoom about the centre, one bilinear resampling pass, reflected borders."""

    def transforms(self, images, seed):
        raise NotImplementedError  # pragma: no cover - abstract

    def augment(self, images, seed):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=self.transforms(images, seed),
            output_shape=tf.shape(images)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT",
        )

    @staticmethod
    def affine(images, angle, scale):
        """Output->input maps for rotation by ``angle`` and zoom by 1/``scale``, about the centre."""
        h = tf.cast(tf.shape(images)[1], tf.float32)
        w = tf.cast(tf.shape(images)[2], tf.float32)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
        a0, a1, b0, b1 = cos, -sin, sin, cos
        a2 = cx - a0 * cx - a1 * cy
        b2 = cy - b0 * cx - b1 * cy
        zeros = tf.zeros_like(angle)
        return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomRotation(_AffineAugmentation):
    """Rotate by up to ± ``degrees``."""

    def __init__(self, degrees: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.degrees = float(degrees)

    def transforms(self, images, seed):
        r = math.radians(self.degrees)
        angle = self.uniform(images, seed, -r, r)
        return self.affine(images, angle, tf.ones_like(angle))

    def get_config(self):
        return {**super().get_config(), "degrees": self.degrees}


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomZoom(_AffineAugmentation):
    """Zoom in or out by up to ± ``factor`` (0.1 = 10%)."""

    def __init__(self, factor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"zoom factor must be in [0, 1), got {factor!r}")
        self.factor = float(factor)

    def transforms(self, images, seed):
        scale = self.uniform(images, seed, 1.0 - self.factor, 1.0 + self.factor)
        return self.affine(images, tf.zeros_like(scale), scale)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
