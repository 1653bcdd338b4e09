"""Calibrated heads in the Keras graph: temperature scaling, and the mean of several models.

``calibrated(models, temperature)`` wraps one model or k fold models into one
Keras model whose output is ``sigmoid(mean_i(z_i) / T)``, z_i being model i's
logit: the same input, the same ``probability`` output, so export, ONNX
metadata, ``predict`` and ``evaluate`` need nothing new. Averaging logits (not
probabilities) keeps a confident majority confident and lets the one
temperature apply to both cases.

A model that ends in a one-unit sigmoid ``Dense`` layer (every built-in does)
gives its logit exactly: the layer's weights are reused without the sigmoid,
and the head is built from stock Keras layers. Recovering the logit from the
probability instead (``log p - log(1 - p)``) is ill-conditioned near 0 and 1,
where float32 rounding of ``p`` moves the logit a lot; that, in the custom
``CalibratedMean`` layer, is only the fallback for other models. Importing
this module registers that layer with Keras's loader.
"""

from __future__ import annotations

import keras
from keras import ops

from ..core.config import EPS


@keras.saving.register_keras_serializable(package="pneumokit")
class CalibratedMean(keras.layers.Layer):
    """``sigmoid(mean(z_i) / temperature)`` over one or more (N, 1) probability inputs p_i,
    z_i = logit(clip(p_i)), clipped to [EPS, 1 - EPS]."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def call(self, inputs):
        values = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        logits = []
        for v in values:
            v = ops.clip(ops.cast(v, "float32"), EPS, 1.0 - EPS)
            logits.append(ops.log(v) - ops.log(1.0 - v))  # log1p has no tf2onnx converter
        mean = logits[0] if len(logits) == 1 else ops.mean(ops.stack(logits, axis=0), axis=0)
        # never exactly 0 or 1: a threshold of 0 or 1 keeps its meaning
        return ops.clip(ops.sigmoid(mean / self.temperature), EPS, 1.0 - EPS)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape, list) else input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def logit_tensor(model):
    """The model's logit as a tensor of its own graph (its inputs), or None if it ends neither
    in a one-unit sigmoid ``Dense`` layer nor in the stock head ``calibrated`` builds (a deep
    ensemble's mean, whose logit is the temperature layer's output)."""
    last = model.layers[-1]
    if last.name == "calibrated_probability" and isinstance(last, keras.layers.Activation) \
            and isinstance(_producer(last.input), keras.layers.Rescaling):
        return last.input
    if not (isinstance(last, keras.layers.Dense) and last.units == 1
            and last.activation is keras.activations.sigmoid):
        return None
    linear = keras.layers.Dense(1, dtype="float32", name="logit")
    z = linear(last.input)
    linear.set_weights(last.get_weights())
    return z


def _inputs(model):
    """The model's input tensor, or its list when it has several (a list of one makes Keras warn
    at every call of the model built on it)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _producer(tensor):
    """The layer whose output ``tensor`` is."""
    return tensor._keras_history[0]


def calibrated(models, temperature: float = 1.0, name: str | None = None, member_name: str = "fold"):
    """One Keras model: the (mean of the) given model(s), temperature-scaled.

    Models ending in a sigmoid ``Dense`` (every built-in) are combined from
    stock Keras layers only — their logits, ``Average``, ``Rescaling(1 / T)``
    and a sigmoid — so the saved file loads with plain Keras. Other models go
    through ``CalibratedMean`` on their probabilities. A single model is
    extended in place of its own graph (no nesting); several become sub-models
    of one graph, named ``fold_1`` ... ``fold_k`` (``member_name``: ``member_1`` ... for the
    networks of a deep ensemble). A model that is itself ``calibrated`` gives its logit exactly
    (``logit_tensor``), so calibrating a deep ensemble, or averaging several, stays exact.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if len(models) == 1 and temperature_of(models[0]) is not None:  # already has the stock head
        return retempered(models[0], temperature, name=name)
    shape = tuple(models[0].input_shape[1:])
    if any(tuple(m.input_shape[1:]) != shape for m in models):
        raise ValueError("models to average must share one input shape")
    logits = [logit_tensor(m) for m in models]
    exact = all(z is not None for z in logits)
    if len(models) == 1:
        inputs, outs = _inputs(models[0]), [logits[0] if exact else models[0].outputs[0]]
    else:
        members = [keras.Model(_inputs(m), z if exact else m.outputs[0], name=f"{member_name}_{k}")
                   for k, (m, z) in enumerate(zip(models, logits, strict=True), start=1)]
        inputs = keras.Input(shape=shape, name="image")
        outs = [m(inputs) for m in members]
    if exact:
        z = outs[0] if len(outs) == 1 else keras.layers.Average(dtype="float32", name="mean_logit")(outs)
        z = keras.layers.Rescaling(1.0 / float(temperature), dtype="float32", name="temperature")(z)
        out = keras.layers.Activation("sigmoid", dtype="float32", name="calibrated_probability")(z)
    else:
        out = CalibratedMean(temperature, name="calibrated_probability")(
            outs if len(outs) > 1 else outs[0])
    return keras.Model(inputs, out, name=name or (models[0].name if len(models) == 1 else "ensemble"))


def retempered(model, factor: float, shift: float = 0.0, name: str | None = None):
    """``model`` (a ``calibrated`` one) with its calibrated logit ``u`` replaced by ``u / factor +
    shift``: the temperature multiplied by ``factor`` and (Platt) the logit moved by ``shift``.
    The weights are shared, not copied."""
    if not factor > 0:
        raise ValueError(f"temperature factor must be > 0, got {factor!r}")
    try:
        head = model.get_layer("temperature")
    except ValueError:
        head = None
    if not isinstance(head, keras.layers.Rescaling):  # a probability head: wrap it once more
        if shift:
            raise ValueError("moving the logit needs a model with pneumokit's stock calibrated head")
        return calibrated(model, factor, name=model.name)
    scale = float(head.scale) / float(factor)
    offset = float(head.offset) / float(factor) + float(shift)
    z = keras.layers.Rescaling(scale, offset, dtype="float32", name="temperature")(head.input)
    out = keras.layers.Activation("sigmoid", dtype="float32", name="calibrated_probability")(z)
    return keras.Model(_inputs(model), out, name=name or model.name)


def temperature_of(model) -> float | None:
    """The temperature of a ``calibrated`` model's stock head, or None."""
    try:
        head = model.get_layer("temperature")
    except ValueError:
        return None
    return 1.0 / float(head.scale) if isinstance(head, keras.layers.Rescaling) else None
