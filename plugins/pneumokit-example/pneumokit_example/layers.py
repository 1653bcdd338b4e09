"""The Keras layer behind the ``gaussian_noise`` augmentation.

Kept in its own module because it imports Keras and TensorFlow at the top:
the package's ``__init__`` imports it only when the augmentation is built.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="pneumokit_example")
class ClippedGaussianNoise(keras.layers.Layer):
    """Add Gaussian noise to images in [0, 255] and clip the result back to [0, 255].

    ``keras.layers.GaussianNoise`` is not enough here: it only accepts a
    standard deviation up to 1 and does not clip, while pneumokit's
    augmentation contract is pixel values in [0, 255] in and out.

    With ``training=False`` the input is returned unchanged (the same tensor).
    As in Keras's ``Random*`` layers, ``training`` defaults to True, so a call
    without it (e.g. in a ``tf.data`` map) augments.

    Randomness comes from one of two places:

    - ``call(images, seed=...)`` with a shape-(2,) integer tensor: the noise is
      a pure function of that seed (``tf.random.stateless_normal``). pneumokit's
      input pipeline sees the ``seed`` argument of ``call`` and passes a fresh
      seed for every batch, drawn from the run's seeded stream, so it can
      augment batches in parallel and still repeat a seeded run exactly;
    - ``call(images)`` without a seed: the layer's own
      ``keras.random.SeedGenerator`` (seeded by ``seed=`` at construction),
      whose state advances on every call.
    """

    def __init__(self, stddev: float = 4.0, seed: int | None = None, **kwargs: Any) -> None:
        # No autocast: the contract says keep the dtype, so a mixed_float16
        # policy must not turn a float32 batch into float16.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not stddev >= 0.0:  # also rejects NaN
            raise ValueError(f"gaussian_noise stddev must be >= 0, got {stddev!r}")
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool = True, seed: Any = None) -> Any:
        if not training or self.stddev == 0.0:
            return images
        if seed is None:
            noise = keras.random.normal(
                ops.shape(images), stddev=self.stddev, dtype=images.dtype, seed=self.seed_generator
            )
        else:
            # keras.random takes only an int or a SeedGenerator, not a seed tensor.
            noise = tf.random.stateless_normal(
                tf.shape(images), seed=seed, stddev=self.stddev, dtype=images.dtype
            )
        return ops.clip(images + noise, 0.0, 255.0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}
