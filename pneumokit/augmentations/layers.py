"""Keras layers for augmentations that Keras does not ship as such."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="pneumokit")
class RandomCropResize(keras.layers.Layer):
    """Crop a random square-ish window of ``fraction`` of each side, resize it back.

    Each image in the batch gets its own window. Identity when ``training`` is false.
    """

    def __init__(self, fraction: float = 0.9, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)
        self.seed = seed
        self._generator = tf.random.Generator.from_non_deterministic_state() if seed is None \
            else tf.random.Generator.from_seed(seed)

    def call(self, images, training=True):
        if not training or self.fraction == 1.0:
            return images
        images = tf.convert_to_tensor(images)
        batch = tf.shape(images)[0]
        size = tf.shape(images)[1:3]
        offsets = self._generator.uniform((batch, 2), 0.0, 1.0 - self.fraction)
        boxes = tf.concat([offsets, offsets + self.fraction], axis=1)
        cropped = tf.image.crop_and_resize(
            images, boxes, tf.range(batch), crop_size=size, method="bilinear"
        )
        return tf.cast(cropped, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction, "seed": self.seed}
