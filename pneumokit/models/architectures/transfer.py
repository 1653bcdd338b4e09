"""The keras.applications backbones with a pneumonia head: one builder, one table, one entry point."""

from __future__ import annotations

import os
from pathlib import Path

from ...core.catalog import Architecture
from ...errors import WeightsUnavailableError  # noqa: F401  (re-exported)
from ...hookspecs import hookimpl
from .heads import sigmoid_output


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights ($KERAS_HOME/models or ~/.keras/models)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def resolve_weights(weights):
    """Map the user's ``weights`` option to what keras.applications accepts."""
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {str(path)!r} does not exist. Pass the path of a Keras "
            "'notop' weights file (.h5 or .weights.h5), 'imagenet' or 'none'."
        )
    return str(path)


def build_transfer(
    application,
    input_shape,
    *,
    label: str,
    model_name: str,
    weights="imagenet",
    freeze_backbone: bool = True,
    fine_tune_layers: int = 0,
    dropout: float = 0.2,
):
    """Backbone (no top, global average pooling) + dropout + one sigmoid unit.

    Parameters
    ----------
    application : a keras.applications constructor, e.g. ``keras.applications.VGG16``.
    weights : ``"imagenet"`` (Keras downloads and caches them), ``"none"`` or a
        path to a local weights file.
    freeze_backbone : keep the backbone's weights fixed.
    fine_tune_layers : with a frozen backbone, unfreeze its top N layers
        (batch-normalisation layers stay frozen, as Keras's fine-tuning guide advises).
    """
    import keras

    resolved = resolve_weights(weights)
    try:
        backbone = application(
            include_top=False, weights=resolved, input_shape=tuple(input_shape), pooling="avg"
        )
    except Exception as exc:
        if resolved != "imagenet":
            raise
        raise WeightsUnavailableError(
            f"could not get ImageNet weights for {label}: {exc}\n"
            f"Keras downloads them once into {keras_cache_dir()}. Offline, copy the "
            f"{label} 'notop' weights file there, pass weights=<path to the file> "
            "(CLI: --option weights=PATH), or weights='none' to train from scratch."
        ) from exc

    backbone.trainable = not freeze_backbone
    if freeze_backbone and fine_tune_layers > 0:
        for layer in backbone.layers[-int(fine_tune_layers):]:
            if not isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    # training=False keeps batch-norm statistics fixed, also while fine-tuning.
    x = backbone(inputs, training=False)
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, sigmoid_output(x), name=model_name)


TRANSFER_OPTIONS = {"weights": "imagenet", "freeze_backbone": True, "fine_tune_layers": 0,
                    "dropout": 0.2}


def transfer_architecture(*, name: str, application: str, preprocessing: str, description: str):
    """The catalog record of a keras.applications backbone named ``application``."""
    def build(input_shape, **options):
        import keras

        return build_transfer(
            getattr(keras.applications, application),
            input_shape,
            label=application,
            model_name=name,
            **options,
        )

    build.__doc__ = f"{application} backbone + dropout + sigmoid (see build_transfer)."
    return Architecture(
        name=name,
        build=build,
        image_size=224,
        channels=3,
        preprocessing=preprocessing,
        description=description,
        options=dict(TRANSFER_OPTIONS),
    )


# The keras.applications backbones pneumokit offers, in one table (as the augmentations are):
# name, keras.applications class, preprocessing preset, description. The original project's
# create_optimized_transfer_learning_model('EfficientNetB0' | 'MobileNetV2' | 'VGG16').
BACKBONES = (
    ("efficientnet_b0", "EfficientNetB0", "raw",
     "EfficientNetB0 backbone (rescales inside), ImageNet weights"),
    ("mobilenet_v2", "MobileNetV2", "tf", "MobileNetV2 backbone, ImageNet weights, inputs in [-1, 1]"),
    ("vgg16", "VGG16", "caffe", "VGG16 backbone, ImageNet weights, caffe mean subtraction"),
)


@hookimpl
def register_architectures(register):
    for name, application, preprocessing, description in BACKBONES:
        register(transfer_architecture(name=name, application=application, preprocessing=preprocessing,
                                       description=description))
