"""Deep ensembles (``members``, issue 25): several networks from consecutive seeds whose logits are
averaged, calibrated exactly, registered, exported and explained like one model."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import TINY_FIT, make_dataset

from pneumokit.cli import main
from pneumokit.core.config import TrainConfig
from pneumokit.errors import ConfigError
from pneumokit.models.architectures.cnn import build_cnn_optimized
from pneumokit.models.ensemble import calibrated, logit_tensor, temperature_of
from pneumokit.models.heatmap import logit_map
from pneumokit.registry.store import Registry

TINY = TINY_FIT


def _logits(models, x):
    import keras

    return np.stack([keras.Model(m.inputs[0], logit_tensor(m))(x).numpy().ravel() for m in models])


def test_calibrating_a_deep_ensemble_is_exact_and_keeps_one_head(tmp_path):
    import keras

    nets = [build_cnn_optimized((32, 32, 1), width=8) for _ in range(3)]
    ensemble = calibrated(nets, 1.0, name="cnn_optimized", member_name="member")
    assert [la.name for la in ensemble.layers if isinstance(la, keras.Model)] == [
        "member_1", "member_2", "member_3"]
    model = calibrated(ensemble, 2.0)  # as train does: the temperature replaces the ensemble's 1.0
    names = [la.name for la in model.layers]
    assert len(names) == len(set(names)) and names.count("temperature") == 1
    assert temperature_of(model) == pytest.approx(2.0) and model.name == "cnn_optimized"
    x = np.random.default_rng(0).random((6, 32, 32, 1), dtype=np.float32)
    want = 1 / (1 + np.exp(-_logits(nets, x).mean(axis=0) / 2.0))
    np.testing.assert_allclose(model(x).numpy().ravel(), want, rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.keras"
    model.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path)(x).numpy().ravel(), want, rtol=1e-5, atol=1e-6)
    assert logit_map(model) is not None  # the CAM heatmap sees through the mean


def test_two_deep_ensembles_average_exactly():
    """A fold ensemble (cv --ensemble) of deep ensembles: each fold's logit is exact, not recovered
    from its probability."""
    nets = [build_cnn_optimized((32, 32, 1), width=8) for _ in range(4)]
    folds = [calibrated(nets[:2], 1.0, member_name="member"), calibrated(nets[2:], 1.0, member_name="member")]
    model = calibrated(folds, 1.5)
    assert "CalibratedMean" not in {type(la).__name__ for la in model.layers}
    x = np.random.default_rng(1).random((5, 32, 32, 1), dtype=np.float32)
    z = _logits(nets, x)
    want = 1 / (1 + np.exp(-((z[0] + z[1]) / 2 + (z[2] + z[3]) / 2) / 2 / 1.5))
    np.testing.assert_allclose(model(x).numpy().ravel(), want, rtol=1e-5, atol=1e-6)


def test_members_is_checked_before_training():
    with pytest.raises(ConfigError, match="members must be an integer in 1..20, got 0"):
        TrainConfig(members=0)
    out = CliRunner().invoke(main, ["train", "--members", "0"])
    assert out.exit_code == 2 and "--members" in out.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("members") / "chest_xray", per_class=12, size=40)


def test_train_members_registers_one_calibrated_ensemble_that_exports(data, tmp_path):
    reg = tmp_path / "reg"
    out = CliRunner().invoke(main, ["train", "--members", "2", "--data", str(data), "--registry", str(reg),
                                    *TINY])
    assert out.exit_code == 0, out.output
    registry = Registry(reg)
    version = registry.get("cnn_optimized")
    assert version.metadata["config"]["members"] == 2
    assert version.metadata["recipe"]["overridden"]["members"] == 2
    history = (version.path / "history.csv").read_text().splitlines()
    assert "member" in history[0] and {line.split(",")[-1] for line in history[1:]} == {"1", "2"}
    model = registry.load_model(version.ref)
    members = [la for la in model.layers if la.name.startswith("member_")]
    assert len(members) == 2
    x = np.random.default_rng(2).random((4, 32, 32, 1), dtype=np.float32)
    assert not np.allclose(*[m(x).numpy() for m in members])  # two seeds, two networks
    exported = CliRunner().invoke(main, ["export", version.ref, "--heatmap", "--registry", str(reg),
                                         "--json"])
    assert exported.exit_code == 0, exported.output
    record = json.loads(exported.output)
    assert record["parity"]["max_abs_diff"] <= record["parity"]["tolerance"] and record["heatmap"]
    shown = CliRunner().invoke(main, ["registry", "show", version.ref, "--registry", str(reg)])
    assert "members=2" in shown.output and "ensemble: mean of 2 networks' logits (seeds 3..4)" in shown.output


def test_cv_ensemble_of_deep_ensembles(data, tmp_path):
    reg = tmp_path / "reg"
    out = CliRunner().invoke(main, ["cv", "--members", "2", "--folds", "2", "--ensemble", "--data", str(data),
                                    "--output", str(tmp_path / "run"), "--registry", str(reg), *TINY])
    assert out.exit_code == 0, out.output
    model = Registry(reg).load_model("cnn_optimized")
    folds = {la.name: la for la in model.layers if la.name.startswith("fold_")}
    assert sorted(folds) == ["fold_1", "fold_2"]
    assert all(sum(s.name.startswith("member_") for s in f.layers) == 2 for f in folds.values())
