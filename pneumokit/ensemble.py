"""Calibrated heads in the Keras graph: temperature scaling, and the mean of several models.

``calibrated(models, temperature)`` wraps one model or k fold models into one
Keras model whose output is ``sigmoid(mean_i(logit(p_i)) / T)``: the same
input, the same ``probability`` output, so export, ONNX metadata, ``predict``
and ``evaluate`` need nothing new. Averaging logits (not probabilities) keeps
a confident majority confident and lets the one temperature apply to both
cases. Importing this module registers the layer with Keras's loader.
"""

from __future__ import annotations

import keras
from keras import ops

from .calibration import EPS


@keras.saving.register_keras_serializable(package="pneumokit")
class CalibratedMean(keras.layers.Layer):
    """``sigmoid(mean(logit(clip(p_i))) / temperature)`` over one or more (N, 1) probability
    inputs, clipped to [EPS, 1 - EPS]."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def call(self, inputs):
        probs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        logits = []
        for p in probs:
            p = ops.clip(ops.cast(p, "float32"), EPS, 1.0 - EPS)
            logits.append(ops.log(p) - ops.log(1.0 - p))  # log1p has no tf2onnx converter
        mean = logits[0] if len(logits) == 1 else ops.mean(ops.stack(logits, axis=0), axis=0)
        # never exactly 0 or 1: a threshold of 0 or 1 keeps its meaning
        return ops.clip(ops.sigmoid(mean / self.temperature), EPS, 1.0 - EPS)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape, list) else input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def calibrated(models, temperature: float = 1.0, name: str | None = None):
    """One Keras model: the (mean of the) given model(s), temperature-scaled.

    A single model is extended in place of its own graph (no nesting); several
    models become sub-models of one graph, renamed ``fold_1`` ... ``fold_k``.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if len(models) == 1:
        base = models[0]
        out = CalibratedMean(temperature, name="probability_calibrated")(base.outputs[0])
        return keras.Model(base.inputs, out, name=name or base.name)
    shape = tuple(models[0].input_shape[1:])
    if any(tuple(m.input_shape[1:]) != shape for m in models):
        raise ValueError("models to average must share one input shape")
    inputs = keras.Input(shape=shape, name="image")
    for k, m in enumerate(models, start=1):
        m.name = f"fold_{k}"
    outs = [m(inputs) for m in models]
    out = CalibratedMean(temperature, name="probability_calibrated")(outs)
    return keras.Model(inputs, out, name=name or "ensemble")
