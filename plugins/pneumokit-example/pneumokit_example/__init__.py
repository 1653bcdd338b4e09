"""pneumokit-example: a template third-party plugin for pneumokit.

It registers one architecture, ``tiny_cnn``, and one augmentation,
``gaussian_noise``. pneumokit finds this module through the entry point
``example = "pneumokit_example"`` in the ``pneumokit`` group (see pyproject.toml).

Importing this module must stay cheap: pneumokit imports every plugin to list
models, so Keras and TensorFlow are imported inside the builders only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pneumokit

__all__ = ["build_tiny_cnn", "gaussian_noise", "register_architectures", "register_augmentations"]

TINY_CNN_OPTIONS: dict[str, Any] = {"filters": 8, "dropout": 0.2}
GAUSSIAN_NOISE_PARAMS: dict[str, Any] = {"stddev": 4.0}


def build_tiny_cnn(input_shape: tuple[int, ...], filters: int = 8, dropout: float = 0.2) -> Any:
    """Two small convolution blocks, global average pooling and one sigmoid unit.

    Parameters
    ----------
    input_shape : ``(height, width, channels)``; any size from 8x8 up works
        because global pooling removes the spatial dimensions.
    filters : filters of the first convolution; the second has twice as many.
    dropout : dropout rate before the output unit.

    Returns
    -------
    keras.Model
        Input ``(batch, height, width, channels)``, output ``(batch, 1)``: the
        probability of pneumonia, in float32.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for width in (filters, filters * 2):
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    # float32 even under a mixed_float16 policy: float16 probabilities lose
    # precision near 0 and 1, which makes the cross-entropy unstable (Keras's
    # mixed-precision guide asks for a float32 output layer; so does pneumokit).
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def gaussian_noise(stddev: float = 4.0, seed: int | None = None) -> Any:
    """A layer that adds N(0, stddev²) noise (in 0..255 pixel units) while training.

    Parameters
    ----------
    stddev : standard deviation of the noise, in pixel units of the 0..255 range.
    seed : seed of the layer's own generator, used when it is called without a
        per-call ``seed`` (pneumokit's input pipeline always passes one);
        ``None`` draws a fresh seed.
    """
    from .layers import ClippedGaussianNoise

    return ClippedGaussianNoise(stddev=stddev, seed=seed)


@pneumokit.hookimpl
def register_architectures(register: Callable[[pneumokit.Architecture], None]) -> None:
    """Register ``tiny_cnn``; pneumokit fills in the plugin name and version."""
    register(
        pneumokit.Architecture(
            name="tiny_cnn",
            build=build_tiny_cnn,
            image_size=64,
            channels=1,
            preprocessing="unit",
            description="Tiny grayscale CNN (example plugin): 2 conv blocks, global pooling",
            options=dict(TINY_CNN_OPTIONS),
        )
    )


@pneumokit.hookimpl
def register_augmentations(register: Callable[[pneumokit.Augmentation], None]) -> None:
    """Register ``gaussian_noise``."""
    register(
        pneumokit.Augmentation(
            name="gaussian_noise",
            build=gaussian_noise,
            description="Additive Gaussian pixel noise, clipped to [0, 255] (example plugin)",
            params=dict(GAUSSIAN_NOISE_PARAMS),
        )
    )
