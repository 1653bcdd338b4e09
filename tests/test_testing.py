"""pneumokit.testing: the contract checks pass on what keeps the contract and fail, saying why,
on what breaks it. (The built-ins and the example plugin run them in test_contract.py and in the
example plugin's own tests.)"""

import keras
import numpy as np
import pytest

from pneumokit import Architecture, Augmentation, PointwiseAugmentation
from pneumokit.testing import architecture_checks, augmentation_checks, check_architecture, plugin_checks


def run(checks, name):
    return dict(checks)[name]()


def _linear_head(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    head = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(5.0))
    return keras.Model(inputs, head(x))  # no sigmoid: outputs near 5, not probabilities


def _float16_head(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))  # follows the policy


def _frozen(input_shape):
    model = _float16_head(input_shape)
    model.trainable = False
    return model


@pytest.mark.parametrize("build, check, words", [
    (_linear_head, "float32_probability", "not probabilities in [0, 1]"),
    (_float16_head, "float32_under_mixed_precision", "give the last layer dtype='float32'"),
    (_frozen, "trains", "changed no weight"),
])
def test_architecture_checks_fail_on_broken_architectures(build, check, words):
    arch = Architecture(name="broken", build=build)
    with pytest.raises(AssertionError, match=words.replace("[", r"\[").replace("]", r"\]")):
        run(architecture_checks(arch, size=16), check)


def test_a_good_architecture_passes_every_check():
    def build(input_shape, units: int = 4):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(units, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x))

    check_architecture(Architecture(name="good", build=build, options={"units": 4}), size=16)


class Unclipped(PointwiseAugmentation):  # not serialisable, leaves the range, numpy differs
    def sample(self, batch, seed):
        return self.per_image(batch, seed, 1.5, 2.0)

    def apply(self, values, param, mean, xp):
        return values * param if xp is not np else values


class Stateful(keras.layers.Layer):  # draws from global state: no seed is honoured
    def call(self, images, training=True):
        return images if not training else images * 0 + np.random.uniform(0, 255)


@pytest.mark.parametrize("build, check, words", [
    (lambda seed=None: Unclipped(seed=seed), "keeps_shape_dtype_and_range", "leave the pixel range"),
    (lambda seed=None: Unclipped(seed=seed), "saves_and_reloads", "does not reload"),
    (lambda seed=None: Unclipped(seed=seed), "fused_matches_layer", "fused path differs"),
    (lambda: Stateful(), "identity_at_inference", None),
])
def test_augmentation_checks_fail_on_broken_augmentations(build, check, words):
    checks = augmentation_checks(Augmentation(name="broken", build=build))
    if words is None:  # a check that passes: the stateful layer is the identity at inference
        run(checks, check)
        assert "seed_repeats" not in dict(checks) and "per_call_seed_is_stateless" not in dict(checks)
        return
    with pytest.raises(AssertionError, match=words):
        run(checks, check)


def test_a_plugin_that_is_not_installed_gives_one_failing_check():
    [(name, check)] = plugin_checks("no-such-pneumokit-plugin")
    assert name == "no-such-pneumokit-plugin:loads"
    with pytest.raises(AssertionError, match="plugin no-such-pneumokit-plugin: .*no installed distribution"):
        check()
