"""The classification head every built-in architecture ends in."""

from __future__ import annotations


def sigmoid_output(x, name: str = "probability"):
    """One sigmoid unit computed in float32, whatever the mixed-precision policy."""
    import keras

    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=name)(x)
