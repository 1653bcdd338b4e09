"""Every architecture in the catalog builds, predicts in [0, 1] and trains one step."""

import numpy as np
import pytest

from pneumokit import get_catalog

SIZE = 32
ARCHITECTURES = get_catalog().list_architectures()


def small_options(arch):
    return {"weights": "none"} if "weights" in arch.options else {}


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[a.name for a in ARCHITECTURES])
def test_builds_predicts_and_trains(arch):
    import keras

    model = arch.build((SIZE, SIZE, arch.channels), **small_options(arch))
    assert model.output_shape == (None, 1)
    assert model.input_shape == (None, SIZE, SIZE, arch.channels)
    x = np.random.default_rng(0).uniform(0, 1, (4, SIZE, SIZE, arch.channels)).astype("float32")
    y = np.array([0, 1, 0, 1], dtype="float32")
    p = model(x, training=False).numpy()
    assert p.shape == (4, 1)
    assert np.all((p >= 0) & (p <= 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    after = [w.numpy() for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), "no weight changed"


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[a.name for a in ARCHITECTURES])
def test_output_is_float32_under_mixed_precision(arch):
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = arch.build((SIZE, SIZE, arch.channels), **small_options(arch))
        assert model.layers[-1].dtype_policy.compute_dtype == "float32"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_frozen_backbone_and_fine_tuning():
    arch = get_catalog().architecture("mobilenet_v2")
    frozen = arch.build((SIZE, SIZE, 3), weights="none")
    backbone = frozen.layers[1]
    assert not backbone.trainable
    head_only = len(frozen.trainable_weights)
    tuned = arch.build((SIZE, SIZE, 3), weights="none", fine_tune_layers=10)
    assert len(tuned.trainable_weights) > head_only
    unfrozen = arch.build((SIZE, SIZE, 3), weights="none", freeze_backbone=False)
    assert len(unfrozen.trainable_weights) > len(tuned.trainable_weights)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    from pneumokit.architectures.transfer import WeightsUnavailableError

    arch = get_catalog().architecture("vgg16")
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsUnavailableError, match="nope.h5"):
        arch.build((SIZE, SIZE, 3), weights=str(missing))


def test_offline_imagenet_download_is_a_clear_error():
    from pneumokit.architectures.transfer import WeightsUnavailableError, build_transfer

    def offline_application(**kwargs):
        assert kwargs["weights"] == "imagenet"
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    with pytest.raises(WeightsUnavailableError) as info:
        build_transfer(offline_application, (SIZE, SIZE, 3), label="VGG16", model_name="vgg16")
    message = str(info.value)
    assert "URL fetch failure" in message
    assert "weights='none'" in message and "models" in message


def test_local_weights_file_is_loaded(tmp_path):
    import keras

    from pneumokit.architectures.transfer import build_transfer

    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg"
    )
    path = tmp_path / "mobilenet_notop.weights.h5"
    source.save_weights(path)
    model = build_transfer(
        keras.applications.MobileNetV2, (SIZE, SIZE, 3), label="MobileNetV2",
        model_name="mobilenet_v2", weights=str(path),
    )
    loaded_backbone = model.layers[1]
    np.testing.assert_array_equal(
        loaded_backbone.weights[0].numpy(), source.weights[0].numpy()
    )
