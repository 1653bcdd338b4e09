"""Calibrated heads in the Keras graph: temperature scaling, and the mean of several models.

``calibrated(models, temperature)`` wraps one model or k fold models into one
Keras model whose output is ``sigmoid(mean_i(z_i) / T)``, z_i being model i's
logit: the same input, the same ``probability`` output, so export, ONNX
metadata, ``predict`` and ``evaluate`` need nothing new. Averaging logits (not
probabilities) keeps a confident majority confident and lets the one
temperature apply to both cases.

A model that ends in a one-unit sigmoid ``Dense`` layer (every built-in does)
gives its logit exactly: the layer's weights are reused without the sigmoid.
Recovering it from the probability instead (``log p - log(1 - p)``) is
ill-conditioned near 0 and 1, where float32 rounding of ``p`` moves the logit
a lot; that is only the fallback for other models. Importing this module
registers the layer with Keras's loader.
"""

from __future__ import annotations

import keras
from keras import ops

from .calibration import EPS


@keras.saving.register_keras_serializable(package="pneumokit")
class CalibratedMean(keras.layers.Layer):
    """``sigmoid(mean(z_i) / temperature)`` over one or more (N, 1) inputs, clipped to
    [EPS, 1 - EPS]. The inputs are logits z_i, or with ``from_logits=False``
    probabilities p_i (then z_i = logit(clip(p_i)))."""

    def __init__(self, temperature: float = 1.0, from_logits: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.from_logits = bool(from_logits)

    def call(self, inputs):
        values = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        logits = []
        for v in values:
            v = ops.cast(v, "float32")
            if not self.from_logits:
                v = ops.clip(v, EPS, 1.0 - EPS)
                v = ops.log(v) - ops.log(1.0 - v)  # log1p has no tf2onnx converter
            logits.append(v)
        mean = logits[0] if len(logits) == 1 else ops.mean(ops.stack(logits, axis=0), axis=0)
        # never exactly 0 or 1: a threshold of 0 or 1 keeps its meaning
        return ops.clip(ops.sigmoid(mean / self.temperature), EPS, 1.0 - EPS)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape, list) else input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "from_logits": self.from_logits}


def logit_tensor(model):
    """The model's logit as a tensor of its own graph (its inputs), or None if it does not
    end in a one-unit sigmoid ``Dense`` layer."""
    last = model.layers[-1]
    if not (isinstance(last, keras.layers.Dense) and last.units == 1
            and last.activation is keras.activations.sigmoid):
        return None
    linear = keras.layers.Dense(1, dtype="float32", name="logit")
    z = linear(last.input)
    linear.set_weights(last.get_weights())
    return z


def _head_input(model):
    """(tensor, from_logits) of ``model``'s graph to feed the calibrated head."""
    z = logit_tensor(model)
    return (z, True) if z is not None else (model.outputs[0], False)


def calibrated(models, temperature: float = 1.0, name: str | None = None):
    """One Keras model: the (mean of the) given model(s), temperature-scaled.

    A single model is extended in place of its own graph (no nesting); several
    models become sub-models of one graph, renamed ``fold_1`` ... ``fold_k``.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if len(models) == 1:
        base = models[0]
        head, from_logits = _head_input(base)
        out = CalibratedMean(temperature, from_logits, name="probability_calibrated")(head)
        return keras.Model(base.inputs, out, name=name or base.name)
    shape = tuple(models[0].input_shape[1:])
    if any(tuple(m.input_shape[1:]) != shape for m in models):
        raise ValueError("models to average must share one input shape")
    heads = [_head_input(m) for m in models]
    from_logits = all(f for _, f in heads)
    members = [keras.Model(m.inputs, head if from_logits else m.outputs[0], name=f"fold_{k}")
               for k, (m, (head, _)) in enumerate(zip(models, heads, strict=True), start=1)]
    inputs = keras.Input(shape=shape, name="image")
    out = CalibratedMean(temperature, from_logits, name="probability_calibrated")(
        [m(inputs) for m in members])
    return keras.Model(inputs, out, name=name or "ensemble")
