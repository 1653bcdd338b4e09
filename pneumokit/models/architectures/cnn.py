"""Custom CNNs: the original project's ``cnn`` and the CPU/GPU-efficient ``cnn_optimized``."""

from __future__ import annotations

from ...core.catalog import Architecture
from ...hookspecs import hookimpl
from .heads import sigmoid_output


def build_cnn(input_shape, dense_units: int = 128, dropout: float = 0.5):
    """Three convolution blocks, then dense layers (the original ``create_model``)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, sigmoid_output(x), name="cnn")


def build_cnn_optimized(input_shape, width: int = 32, dropout: float = 0.3):
    """Batch-normalised CNN with depthwise-separable convolutions and global pooling.

    A strided stem and separable convolutions keep the FLOPs low (fast on a
    CPU); batch normalisation, dropout and global average pooling replace the
    large dense layer of ``cnn`` (the original ``create_gpu_optimized_model``).
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, separable: bool, strides: int = 1):
        # He initialisation keeps pre-normalisation activations near unit variance, where
        # batch norm's moving variance starts, so inference-mode outputs are sane from the
        # first epochs. A depthwise kernel (3, 3, C, 1) has a per-channel fan-in of 9, which
        # Keras reports as its fan_out (its fan_in would be 9*C: far too small weights).
        if separable:
            depthwise = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")
            conv = layers.SeparableConv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                                          depthwise_initializer=depthwise,
                                          pointwise_initializer="he_normal")
        else:
            conv = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                                 kernel_initializer="he_normal")
        x = conv(x)
        # momentum 0.9 (not 0.99): moving statistics settle within a few epochs even on
        # small datasets, so validation in inference mode is meaningful early.
        x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.Activation("relu")(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = conv_bn(inputs, width // 2, separable=False, strides=2)
    x = conv_bn(x, width, separable=False)
    x = layers.MaxPooling2D()(x)
    for multiplier in (2, 4, 8):
        x = conv_bn(x, width * multiplier, separable=True)
        x = conv_bn(x, width * multiplier, separable=True)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, sigmoid_output(x), name="cnn_optimized")


@hookimpl
def register_architectures(register):
    register(
        Architecture(
            name="cnn",
            build=build_cnn,
            image_size=128,
            channels=1,
            preprocessing="unit",
            description="Original custom CNN: 3 conv blocks, dense 128, dropout",
            options={"dense_units": 128, "dropout": 0.5},
        )
    )
    register(
        Architecture(
            name="cnn_optimized",
            build=build_cnn_optimized,
            image_size=128,
            channels=1,
            preprocessing="unit",
            description="Efficient CNN: separable convs, batch norm, dropout, global pooling",
            options={"width": 32, "dropout": 0.3},
        )
    )
