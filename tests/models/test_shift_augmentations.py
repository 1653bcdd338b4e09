"""What the acquisition-shift augmentations mean: crop's scale form, gamma, blur, sharpen, noise, jpeg."""

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import xray_like

from pneumokit import get_catalog
from pneumokit.models.augmentations.layers import parse_range
from pneumokit.training.pipeline import build_augmentations


def build(spec, seed=0):
    (layer,) = build_augmentations(spec, get_catalog(), seed=seed)
    return layer


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return np.stack([xray_like(i % 2, 64, rng) for i in range(8)])[..., None].astype(np.float32)


def test_crop_scale_draws_areas_and_ratios_in_range():
    import tensorflow as tf

    layer = build("crop:scale=0.35-0.6,ratio=0.75-1.33")
    maps = layer.inverse_maps(tf.constant(4000), 100, 100, tf.constant([1, 2], tf.int64)).numpy()
    fx, fy = maps[:, 0, 0], maps[:, 1, 1]
    area, ratio = fx * fy, fx / fy
    assert area.min() >= 0.35 - 1e-6 and area.max() <= 0.6 + 1e-6
    assert ratio.min() >= 0.75 - 1e-6 and ratio.max() <= 1.33 + 1e-6
    assert area.max() - area.min() > 0.2  # the range is used, not one value
    # every window lies inside the image: offset + span <= size - 1
    assert (maps[:, 0, 2] >= 0).all() and (maps[:, 0, 2] + fx * 99 <= 99 + 1e-3).all()
    assert (maps[:, 1, 2] >= 0).all() and (maps[:, 1, 2] + fy * 99 <= 99 + 1e-3).all()


def test_crop_full_scale_square_ratio_is_identity(images):
    out = build("crop:scale=1-1,ratio=1-1")(images, training=True)
    np.testing.assert_allclose(np.asarray(out), images, atol=1e-3)


def test_crop_fixed_form_unchanged():
    assert build("crop").scale is None and build("crop:fraction=0.8").fraction == 0.8
    assert build("crop:scale=None").scale is None  # the default as list-augmentations prints it


@pytest.mark.parametrize("spec, message", [
    ("crop:scale=abc", "crop scale 'abc'"),
    ("crop:scale=0.9-0.2", "MIN <= MAX"),
    ("jpeg:quality=0-50", "jpeg quality"),
    ("blur:sigma=-1", "blur sigma"),
    ("noise:std=2", "noise std"),
    ("noise:std=abc", "noise std .* got 'abc'"),
    ("gamma:factor=-1", "gamma factor must be a number >= 0"),
])
def test_bad_parameters_name_the_value(spec, message):
    with pytest.raises(ValueError, match=message):
        build(spec)


def test_parse_range_forms():
    assert parse_range("0.35-1", "x", 0, 1) == (0.35, 1.0)
    assert parse_range(0.5, "x", 0, 1) == (0.5, 0.5)
    assert parse_range([0.2, 0.4], "x", 0, 1) == (0.2, 0.4)


def test_gamma_is_a_power_law_within_its_range():
    import tensorflow as tf

    layer = build("gamma:factor=0.5")
    g = layer.sample(tf.constant(2000), tf.constant([3, 4], tf.int64)).numpy()
    assert g.min() >= 1 / 1.5 - 1e-6 and g.max() <= 1.5 + 1e-6 and (g < 1).any() and (g > 1).any()
    values = np.array([0.0, 63.75, 127.5, 255.0], dtype=np.float32)
    np.testing.assert_allclose(layer.apply(values, np.float32(2.0), None, np), [0, 15.9375, 63.75, 255],
                               rtol=1e-5, atol=1e-4)


def _roughness(x):
    """Mean absolute difference between horizontal neighbours: high frequencies."""
    return float(np.abs(np.diff(np.asarray(x), axis=2)).mean())


def test_blur_smooths_and_sharpen_sharpens(images):
    assert _roughness(build("blur:sigma=3")(images, training=True)) < 0.8 * _roughness(images)
    assert _roughness(build("sharpen:amount=3")(images, training=True)) > 1.2 * _roughness(images)
    np.testing.assert_array_equal(np.asarray(build("blur:sigma=0")(images, training=True)), images)


def test_noise_is_zero_mean_bounded_and_repeatable(images):
    import tensorflow as tf

    layer = build("noise:std=0.05")
    seed = tf.constant([9, 9], tf.int64)
    out = np.asarray(layer(images, training=True, seed=seed))
    again = np.asarray(layer(images, training=True, seed=seed))
    np.testing.assert_array_equal(out, again)
    diff = (out - images)[:, 8:-8, 8:-8]  # away from clipping at the range's ends
    assert abs(diff.mean()) < 1.0 and 0.5 < diff.std() < 0.05 * 255 * 1.1


def test_jpeg_changes_pixels_in_range_and_lower_quality_costs_more(images):
    low = np.asarray(build("jpeg:quality=5-5")(images, training=True))
    high = np.asarray(build("jpeg:quality=95-95")(images, training=True))
    assert low.min() >= 0 and low.max() <= 255 and not np.array_equal(low, images)
    assert np.abs(low - images).mean() > 2 * np.abs(high - images).mean()


def test_new_augmentations_listed_with_parameters():
    from pneumokit.cli import main

    out = CliRunner().invoke(main, ["list-augmentations"]).stdout
    for name, param in (("gamma", "factor=0.3"), ("blur", "sigma=1.0"), ("sharpen", "amount=1.0"),
                        ("noise", "std=0.03"), ("jpeg", "quality=30-95"), ("crop", "scale=None")):
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert param in line
