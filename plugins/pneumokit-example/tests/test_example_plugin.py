"""The example plugin: discovery through its entry point, tiny_cnn, gaussian_noise.

Needs the plugin installed (``pip install -e plugins/pneumokit-example``):
discovery goes through the installed distribution's metadata, as for any
third-party plugin.
"""

import json
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

import pneumokit

DIST = "pneumokit-example"
SIZE = 32


@pytest.fixture(scope="module")
def loaded():
    return pneumokit.load_plugins(load=[DIST])


@pytest.fixture(scope="module")
def catalog(loaded):
    return loaded.catalog


def test_entry_point_is_installed():
    eps = [ep for ep in metadata.entry_points(group="pneumokit") if ep.dist.name == DIST]
    assert [(ep.name, ep.value) for ep in eps] == [("example", "pneumokit_example")], (
        "the plugin is not installed: pip install -e plugins/pneumokit-example"
    )


def test_discovered_without_error(loaded):
    version = metadata.version(DIST)
    assert version == "0.1.0"
    infos = {p.name: p for p in loaded.plugins}
    info = infos[DIST]
    assert info.error is None
    assert info.version == version
    assert info.modules == ["pneumokit_example"]
    assert sorted(set(info.hooks)) == ["register_architectures", "register_augmentations"]
    assert info.architectures == ["tiny_cnn"]
    assert info.augmentations == ["gaussian_noise"]
    # No name clash with the built-ins, so they report no error either.
    assert infos["pneumokit"].error is None

    arch = loaded.catalog.architecture("tiny_cnn")
    aug = loaded.catalog.augmentation("gaussian_noise")
    for record in (arch, aug):
        assert (record.plugin, record.plugin_version) == (DIST, version)
    assert (arch.image_size, arch.channels, arch.preprocessing) == (64, 1, "unit")
    assert dict(arch.options) == {"filters": 8, "dropout": 0.2}
    assert dict(aug.params) == {"stddev": 4.0}


def test_not_loaded_when_excluded():
    catalog = pneumokit.load_plugins(load="").catalog
    assert "tiny_cnn" not in catalog.architectures
    assert "gaussian_noise" not in catalog.augmentations


def test_cli_lists_it_in_a_fresh_process_without_importing_keras():
    code = (
        "import json, sys; import pneumokit; "
        "c = pneumokit.load_plugins(load=['pneumokit-example']).catalog; "
        "print(json.dumps([c.architecture('tiny_cnn').to_dict(), "
        "'keras' in sys.modules, 'tensorflow' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    record, keras_imported, tf_imported = json.loads(out.stdout)
    assert record["plugin"] == DIST and record["image_size"] == 64
    # Listing must stay fast: registering must not pull in Keras or TensorFlow.
    assert not keras_imported and not tf_imported

    out = subprocess.run(
        [sys.executable, "-m", "pneumokit.cli", "list-models", "tiny*", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [r["name"] for r in json.loads(out.stdout)] == ["tiny_cnn"]


def test_tiny_cnn_builds_predicts_and_trains(catalog):
    import keras

    arch = catalog.architecture("tiny_cnn")
    model = arch.build((SIZE, SIZE, arch.channels), **arch.options)
    assert model.input_shape == (None, SIZE, SIZE, 1)
    assert model.output_shape == (None, 1)
    assert model.output.dtype == "float32"

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, SIZE, SIZE, 1)).astype("float32")
    y = np.array([0, 1, 0, 1], dtype="float32")
    p = keras.ops.convert_to_numpy(model(x, training=False))
    assert p.shape == (4, 1)
    assert np.all((p >= 0) & (p <= 1))

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    after = [w.numpy() for w in model.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_tiny_cnn_default_size(catalog):
    arch = catalog.architecture("tiny_cnn")
    model = arch.build((arch.image_size, arch.image_size, arch.channels))
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 1)


@pytest.fixture
def images():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (4, 48, 48, 1)).astype("float32")
    # Pixels at both ends of the range, where clipping has to act.
    batch[:, :4] = 0.0
    batch[:, -4:] = 255.0
    return tf.constant(batch)


def test_gaussian_noise_in_training(catalog, images):
    import tensorflow as tf

    layer = catalog.augmentation("gaussian_noise").build(stddev=4.0, seed=1)
    out = tf.convert_to_tensor(layer(images, training=True))
    assert out.shape == images.shape
    assert out.dtype == images.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0.0
    assert float(tf.reduce_max(out)) <= 255.0
    diff = (out - images).numpy()[:, 4:-4]  # away from the clipped rows
    assert 3.0 < float(diff.std()) < 5.0, "noise should have about the asked stddev"


def test_gaussian_noise_is_identity_at_inference(catalog, images):
    import tensorflow as tf

    layer = catalog.augmentation("gaussian_noise").build(seed=1)
    out = tf.convert_to_tensor(layer(images, training=False))
    np.testing.assert_array_equal(out.numpy(), images.numpy())


def test_gaussian_noise_seed_and_validation(catalog, images):
    build = catalog.augmentation("gaussian_noise").build
    first = build(seed=7)(images, training=True).numpy()
    again = build(seed=7)(images, training=True).numpy()
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="stddev"):
        build(stddev=-1.0)


def test_gaussian_noise_takes_a_per_call_stateless_seed(catalog, images):
    import inspect

    import tensorflow as tf

    build = catalog.augmentation("gaussian_noise").build
    layer = build(stddev=4.0)
    # pneumokit's pipeline passes a per-batch seed to layers whose call() has a seed parameter.
    assert "seed" in inspect.signature(layer.call).parameters
    seed = tf.constant([3, 4], tf.int64)
    first = layer(images, training=True, seed=seed).numpy()
    assert first.shape == tuple(images.shape) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 255.0
    assert 3.0 < float((first - images.numpy())[:, 4:-4].std()) < 5.0
    # A pure function of the seed: no state advances, and a fresh layer gives the same noise.
    np.testing.assert_array_equal(first, layer(images, training=True, seed=seed).numpy())
    np.testing.assert_array_equal(first, build(stddev=4.0, seed=99)(images, training=True, seed=seed).numpy())
    assert not np.array_equal(first, layer(images, training=True, seed=seed + [0, 1]).numpy())
    same = layer(images, training=False, seed=seed)
    np.testing.assert_array_equal(tf.convert_to_tensor(same).numpy(), images.numpy())


def test_gaussian_noise_in_pneumokit_input_pipeline_repeats_with_a_seed(catalog):
    from pneumokit.pipeline import build_augmentations, make_dataset
    from pneumokit.preprocessing import Preprocessing

    cached = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 1), dtype=np.uint8)
    pre = Preprocessing.from_preset("raw", 16, 1)  # model input = the augmented pixels

    def run(seed):
        augs = build_augmentations("gaussian_noise:stddev=8", catalog, seed=seed)
        ds = make_dataset([f"x{i}.png" for i in range(8)], None, pre, batch_size=4, training=True,
                          augmentations=augs, seed=seed, images=cached)
        return [np.concatenate([b.numpy() for b in ds]) for _epoch in range(2)]

    first = run(1)
    assert not np.array_equal(first[0], np.round(first[0])), "noise was not applied"
    assert not np.array_equal(first[0], first[1]), "each epoch should draw new noise"
    for a, b in zip(first, run(1), strict=True):
        np.testing.assert_array_equal(a, b)


def test_gaussian_noise_keeps_float32_under_mixed_precision(catalog, images):
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = catalog.augmentation("gaussian_noise").build(seed=1)
        assert layer(images, training=True).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_gaussian_noise_in_a_tf_data_pipeline(catalog, images):
    import tensorflow as tf

    layer = catalog.augmentation("gaussian_noise").build(seed=3)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(2).map(lambda x: layer(x, training=True))
    out = np.concatenate([b.numpy() for b in ds])
    assert out.shape == tuple(images.shape)
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not np.array_equal(out, images.numpy())


def test_gaussian_noise_survives_keras_save_and_load(catalog, images, tmp_path):
    import keras

    layer = catalog.augmentation("gaussian_noise").build(stddev=2.5, seed=5)
    inputs = keras.Input((48, 48, 1))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "noise.keras")
    restored = keras.models.load_model(tmp_path / "noise.keras")
    noise = restored.layers[-1]
    assert (type(noise).__name__, noise.stddev, noise.seed) == ("ClippedGaussianNoise", 2.5, 5)
    np.testing.assert_array_equal(restored.predict(images, verbose=0), images.numpy())
