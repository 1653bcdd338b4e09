"""Class activation maps (Zhou et al. 2016) inside the Keras graph, so they export to ONNX.

A model whose logit is linear in globally average-pooled feature maps ``A`` —
``GlobalAveragePooling2D -> (Dropout) -> Dense(1)``, as ``cnn_optimized`` and the
transfer models end, possibly followed by pneumokit's temperature and the mean of
several fold models (``pneumokit.ensemble``) — has

    logit = mean over (y, x) of M(y, x) + b,    M = sum_k w_k A_k

so ``M`` splits the logit over the image exactly: where ``M`` is high, the
features there pushed the model towards PNEUMONIA. ``logit_map`` builds ``M`` from
the model's own layers (the dense weights applied to the last feature maps, no
gradients); ``with_heatmap`` adds the exported ``heatmap`` output: ``max(M, 0)``
divided by its maximum per image, an (N, h, w) map in [0, 1] at the feature
maps' resolution (all zeros where no region speaks for PNEUMONIA). Models of any
other shape return ``None`` here; ``explain`` uses Grad-CAM for them.
"""

from __future__ import annotations

import keras
from keras import ops

from ..data.contract import HEATMAP_OUTPUT

_EPS = 1e-6


def logit_map(model):
    """A Keras model from ``model``'s input to its class activation map ``M`` (N, h, w)
    in logit units without the bias, or ``None`` if the model's head is not of the
    shape above."""
    try:
        m = _logit_map(model.outputs[0], top=True)
    except _NotLinear:
        return None
    return keras.Model(_input(model), m, name=f"{model.name}_cam")


def with_heatmap(model):
    """``model`` with a second output ``heatmap`` (see the module's docstring), or ``None``."""
    cam = logit_map(model)
    if cam is None:
        return None
    heat = normalized(cam.outputs[0])
    return keras.Model(_input(model), [model.outputs[0], heat], name=model.name)


def _input(model):
    """The model's one input tensor (a list of one makes Keras warn at every call)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def scaled(m):
    """``max(m, 0) / max(max(m, 0), eps)`` per image: in [0, 1], 1 at the strongest evidence.
    The one scaling rule of every heatmap (CAM here, Grad-CAM in ``explain``); Keras ops, so it
    works on symbolic and eager tensors alike."""
    positive = ops.relu(ops.cast(m, "float32"))
    peak = ops.max(positive, axis=(1, 2), keepdims=True)
    return positive / ops.maximum(peak, _EPS)


def normalized(m):
    """``scaled(m)`` as the graph's output named ``heatmap``."""
    return keras.layers.Activation("linear", dtype="float32", name=HEATMAP_OUTPUT)(scaled(m))


class _NotLinear(Exception):
    """The path from the output to the features holds a layer CAM cannot see through."""


def _producer(tensor):
    layer, node_index, _ = tensor._keras_history
    return layer, layer._inbound_nodes[node_index].input_tensors


def _logit_map(tensor, top: bool = False):
    layer, inputs = _producer(tensor)
    if isinstance(layer, keras.layers.Activation) and top and layer.activation is keras.activations.sigmoid:
        return _logit_map(inputs[0])
    if isinstance(layer, keras.layers.Rescaling) and ops.ndim(layer.scale) == 0:
        return _logit_map(inputs[0]) * float(layer.scale)
    if isinstance(layer, keras.layers.Average):
        maps = [_logit_map(t) for t in inputs]
        return keras.layers.Average(dtype="float32")(maps) if len(maps) > 1 else maps[0]
    if isinstance(layer, keras.layers.Dropout):
        return _logit_map(inputs[0])
    if isinstance(layer, keras.layers.Dense) and layer.units == 1 and (
            layer.activation is keras.activations.linear
            or (top and layer.activation is keras.activations.sigmoid)):
        return _dense_map(layer, _features(inputs[0]))
    if isinstance(layer, keras.Model) and len(inputs) == 1:
        inner = logit_map(layer)
        if inner is not None:
            return inner(inputs[0])
    raise _NotLinear(layer.name)


def _dense_map(dense, features):
    """The one-unit dense layer's weights applied at every position of ``features``."""
    kernel = ops.convert_to_numpy(dense.kernel).astype("float32")
    linear = keras.layers.Dense(1, use_bias=False, dtype="float32")
    out = linear(ops.cast(features, "float32"))
    linear.set_weights([kernel])
    return ops.squeeze(out, axis=-1)


def _features(tensor):
    """The (N, h, w, C) feature maps that ``tensor`` is the global average of."""
    layer, inputs = _producer(tensor)
    if isinstance(layer, keras.layers.Dropout):
        return _features(inputs[0])
    if isinstance(layer, keras.layers.GlobalAveragePooling2D) and not layer.keepdims \
            and layer.data_format == "channels_last":
        return inputs[0]
    if isinstance(layer, keras.Model) and len(inputs) == 1:
        last = layer.layers[-1]
        if isinstance(last, keras.layers.GlobalAveragePooling2D) and not last.keepdims:
            extractor = keras.Model(_input(layer), _features(layer.outputs[0]), name=f"{layer.name}_features")
            return extractor(inputs[0])
    raise _NotLinear(layer.name)
