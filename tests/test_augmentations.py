"""Every augmentation in the catalog keeps shape, dtype and range, and is identity at inference."""

import numpy as np
import pytest

from pneumokit import get_catalog

AUGMENTATIONS = get_catalog().list_augmentations()


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=[a.name for a in AUGMENTATIONS])
def test_augmentation_contract(aug):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (4, 48, 48, 1)).astype("float32"))
    layer = aug.build(**aug.params, seed=1) if "seed" in _params(aug) else aug.build(**aug.params)

    out = tf.convert_to_tensor(layer(images, training=True))
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    assert float(tf.reduce_min(out)) >= -1e-3
    assert float(tf.reduce_max(out)) <= 255.0 + 1e-3
    assert not np.allclose(out.numpy(), images.numpy()), f"{aug.name} changed nothing"

    same = tf.convert_to_tensor(layer(images, training=False))
    np.testing.assert_array_equal(same.numpy(), images.numpy())


def _params(aug):
    import inspect

    return inspect.signature(aug.build).parameters


def test_crop_fraction_is_validated():
    with pytest.raises(ValueError, match="fraction"):
        get_catalog().augmentation("crop").build(fraction=1.5)


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=[a.name for a in AUGMENTATIONS])
def test_float32_kept_under_mixed_precision(aug):
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = aug.build(**aug.params)
        images = tf.random.uniform((2, 32, 32, 1), 0, 255)
        assert layer(images, training=True).dtype == tf.float32
        assert layer(images, training=False).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_builder_without_seed_parameter_gets_none():
    from pneumokit import Augmentation
    from pneumokit.catalog import Catalog
    from pneumokit.pipeline import build_augmentations

    seen = {}

    def build(strength=1):
        seen["strength"] = strength
        return object()

    catalog = Catalog(augmentations={"plain": Augmentation(name="plain", build=build)})
    assert len(build_augmentations("plain:strength=3", catalog, seed=5)) == 1
    assert seen == {"strength": 3}
