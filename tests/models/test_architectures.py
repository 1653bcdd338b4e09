"""The transfer backbones' options and weights (the contract every architecture keeps is checked
by pneumokit.testing, in test_contract.py)."""

import numpy as np
import pytest

from pneumokit import get_catalog

SIZE = 32


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
    from pneumokit.models.architectures.transfer import WeightsUnavailableError

    arch = get_catalog().architecture("vgg16")
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsUnavailableError, match="nope.h5"):
        arch.build((SIZE, SIZE, 3), weights=str(missing))


def test_offline_imagenet_download_is_a_clear_error():
    from pneumokit.models.architectures.transfer import WeightsUnavailableError, build_transfer

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

    from pneumokit.models.architectures.transfer import build_transfer

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
