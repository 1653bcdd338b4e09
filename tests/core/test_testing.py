"""pneumokit.testing: the contract checks pass on what keeps the contract and fail, saying why,
on what breaks it. (The built-ins and the example plugin run them in test_contract.py and in the
example plugin's own tests.)"""

import re

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


def _two_outputs(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid", dtype="float32")(x))


@pytest.mark.parametrize("build, check, words", [
    (_two_outputs, "builds", "expected (None, 1)"),
    (_linear_head, "float32_probability", "not probabilities in [0, 1]"),
    (_float16_head, "float32_under_mixed_precision", "give the last layer dtype='float32'"),
    (_frozen, "trains", "changed no weight"),
])
def test_architecture_checks_fail_on_broken_architectures(build, check, words):
    arch = Architecture(name="broken", build=build)
    with pytest.raises(AssertionError, match=re.escape(words)):
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


@keras.saving.register_keras_serializable(package="test_testing")
class Invert(keras.layers.Layer):  # float32 and identity at inference, but never random
    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, images, training=True):
        return 255.0 - images if training else images


@keras.saving.register_keras_serializable(package="test_testing")
class Forgetful(PointwiseAugmentation):  # get_config loses its factor
    def __init__(self, factor: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def sample(self, batch, seed):
        return self.per_image(batch, seed, 1 - self.factor, 1 + self.factor)

    def apply(self, values, param, mean, xp):
        return xp.minimum(xp.maximum(values * param, 0.0), 255.0)

    def get_config(self):
        return super().get_config()  # no "factor": a reloaded layer has the default


class Autocast(keras.layers.Layer):  # Keras casts its inputs to float16 under mixed precision
    def call(self, images, training=True):
        return images


def _ignores_seed(seed=None):
    return Stateful()


@pytest.mark.parametrize("build, check, words", [
    (lambda seed=None: Unclipped(seed=seed), "keeps_shape_dtype_and_range", "leave the pixel range"),
    (lambda seed=None: Unclipped(seed=seed), "saves_and_reloads", "does not reload"),
    (lambda seed=None: Unclipped(seed=seed), "fused_matches_layer", "fused path differs"),
    (lambda: Stateful(), "identity_at_inference", None),
    (lambda: Invert(), "pipeline_draws_anew_and_repeats_with_a_seed", "no random draw"),
    (lambda seed=None: Forgetful(factor=0.05, seed=seed), "saves_and_reloads", "augments differently"),
    (lambda: Autocast(), "float32_under_mixed_precision", "gives float16 under mixed_float16"),
    (_ignores_seed, "seed_repeats", "augment differently"),
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
    with pytest.raises(AssertionError, match="plugin no-such-pneumokit-plugin: no installed distribution"):
        check()


def test_a_plugin_that_registers_nothing_fails(fake_entry_points, monkeypatch):
    import types

    from helpers import FakeEntryPoint

    import pneumokit.testing as testing

    forgot = types.ModuleType("forgot")
    forgot.register_architectures = lambda register: None  # no @hookimpl: pluggy never calls it
    fake_entry_points(FakeEntryPoint("pneumokit-forgot", "forgot", forgot))
    monkeypatch.setattr(testing, "_installed", lambda: {"pneumokit-forgot"})
    [(name, check)] = plugin_checks("pneumokit_Forgot")  # names compare as PEP 503 says
    assert name == "pneumokit_Forgot:registers"
    with pytest.raises(AssertionError, match="loads but registers nothing"):
        check()


def test_a_builder_that_fails_is_one_failing_check():
    def build(seed=None):
        raise ImportError("no module named layers")

    [(name, check)] = augmentation_checks(Augmentation(name="broken", build=build))
    assert name == "builds"
    with pytest.raises(AssertionError, match="its builder fails .ImportError: no module named layers"):
        check()
