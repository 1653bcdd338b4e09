"""Temperature scaling, calibration measures, the calibrated head, the schedule and the BN refresh."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pneumokit.training.calibration import apply_temperature, fit_temperature, logit
from pneumokit.training.metrics import brier_score, expected_calibration_error, reliability


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = rng.random(20000) < 1 / (1 + np.exp(-true_logits))
    overconfident = 1 / (1 + np.exp(-3 * true_logits))  # the model's logits are 3x too large
    t = fit_temperature(labels, overconfident)
    assert t == pytest.approx(3.0, rel=0.05)
    fixed = apply_temperature(overconfident, t)
    assert expected_calibration_error(labels, fixed) < 0.3 * expected_calibration_error(labels, overconfident)
    assert brier_score(labels, fixed) < brier_score(labels, overconfident)
    np.testing.assert_array_equal(fixed >= 0.5, overconfident >= 0.5)  # the 0.5 decision is unchanged


def test_separable_predictions_give_a_finite_temperature():
    """Perfectly separated validation predictions must not drive T to its bound (outputs 0/1)."""
    labels = np.r_[np.zeros(10), np.ones(20)]
    prob = np.r_[np.linspace(0.05, 0.4, 10), np.linspace(0.6, 0.95, 20)]
    t = fit_temperature(labels, prob)
    assert 0.1 < t < 10
    assert apply_temperature(prob, t).max() < 0.999


def test_temperature_weighs_the_classes_equally():
    """Repeating one class's predictions does not move the fitted temperature."""
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(200), np.ones(200)]
    prob = 1 / (1 + np.exp(-(rng.normal(0, 1, 400) + 3 * (labels - 0.5)) * 2))
    more = np.r_[labels, np.ones(200)], np.r_[prob, prob[labels == 1]]
    # only the smoothed target (N+1)/(N+2) moves with N: a few percent here
    assert fit_temperature(*more) == pytest.approx(fit_temperature(labels, prob), rel=0.05)


def test_measures_on_hand_computed_cases():
    assert brier_score([0, 1], [0.0, 1.0]) == 0.0
    assert brier_score([0, 1], [0.5, 0.5]) == 0.25
    # two bins: probabilities 0.1 with outcomes 0, 1 (rate 0.5), and 0.9 with 1, 1 (rate 1.0)
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(
        0.5 * 0.4 + 0.5 * 0.1)
    bins = reliability([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9])
    assert [(b["count"], b["positive_rate"]) for b in bins] == [(2, 0.5), (2, 1.0)]
    assert fit_temperature([1, 1], [0.7, 0.8]) == 1.0  # one class: nothing to fit
    np.testing.assert_allclose(logit([0.5, 0.8807970779778823]), [0.0, 2.0], atol=1e-9)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_calibrated_head_matches_numpy_and_survives_save_load(tmp_path, temperature):
    import keras

    from pneumokit.models.ensemble import calibrated

    inputs = keras.Input((4,), name="image")
    base = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="probability")(inputs))
    x = np.random.default_rng(0).normal(0, 3, (16, 4)).astype(np.float32)
    model = calibrated(base, temperature)
    expected = apply_temperature(base.predict(x, verbose=0).ravel(), temperature)
    np.testing.assert_allclose(model.predict(x, verbose=0).ravel(), expected, rtol=1e-4, atol=1e-6)
    model.save(tmp_path / "m.keras")
    # stock layers only: plain Keras loads it in a process that never imported pneumokit
    code = ("import sys, json, keras, numpy as np; sys.modules['pneumokit'] = None; "
            f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r}); "
            "print(json.dumps(np.asarray(m.predict(np.load(sys.argv[1]), verbose=0)).ravel().tolist()))")
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy")], capture_output=True,
                         text=True, check=True, env={**os.environ, "KERAS_HOME": str(tmp_path)})
    again = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(again, model.predict(x, verbose=0).ravel(), atol=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        calibrated(base, 0.0)


def test_cosine_schedule_warms_up_and_decays_to_zero():
    from pneumokit.core.config import TrainConfig
    from pneumokit.training.fitting import learning_rate_schedule

    schedule = learning_rate_schedule(TrainConfig(learning_rate=1e-3), steps_per_epoch=10, epochs=20)
    rates = np.array([float(schedule(step)) for step in range(0, 201, 5)])
    assert rates[0] == 0.0 and rates[2] == pytest.approx(1e-3, rel=1e-3)  # step 10: the peak
    assert np.all(np.diff(rates[2:]) <= 1e-12) and rates[-1] < 1e-6
    assert learning_rate_schedule(TrainConfig(lr_schedule="constant"), 10, 20) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule 'step'"):
        TrainConfig(lr_schedule="step")  # refused before any training
    with pytest.raises(ValueError, match="threshold_rule 'f1'"):
        TrainConfig(threshold_rule="f1")


def test_bn_refresh_gives_the_exact_statistics_of_the_data():
    import keras

    from pneumokit.data.preprocessing import Preprocessing
    from pneumokit.training.fitting import refresh_batch_norm

    inputs = keras.Input((8, 8, 1))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(inputs))
    images = np.random.default_rng(0).integers(0, 256, (43, 8, 8, 1), dtype=np.uint8)
    pre = Preprocessing.from_preset("unit", 8, 1)
    assert refresh_batch_norm(model, images, pre, batch_size=10) == 1
    x = images.astype(np.float64) / 255
    batches = [x[i:i + 10] for i in range(0, 43, 10)]  # the last one holds 3 images
    sizes = [len(b) for b in batches]
    mean = np.average([b.mean() for b in batches], weights=sizes)
    var = np.average([b.var() for b in batches], weights=sizes)
    assert float(bn.moving_mean.numpy()[0]) == pytest.approx(mean, rel=1e-4)
    assert float(bn.moving_variance.numpy()[0]) == pytest.approx(var, rel=1e-3)
    assert bn.momentum == 0.99  # restored
    bn.trainable = False  # a frozen layer is left alone
    assert refresh_batch_norm(model, images, pre, batch_size=10) == 0


def test_head_without_from_logits_in_its_config_takes_probabilities():
    """A saved head whose config lacks ``from_logits`` (the first form) still reads probabilities."""
    from pneumokit.models.ensemble import CalibratedMean

    head = CalibratedMean.from_config({"name": "h", "temperature": 2.0})
    p = np.array([[0.2], [0.9]], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(head(p)), apply_temperature(p, 2.0), rtol=1e-5)
