"""Cross-validation: leak-free folds, outputs, threshold, resume, CLI and the original API."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import assert_complete, make_dataset

from pneumokit.cli import main
from pneumokit.core.config import CVConfig
from pneumokit.registry.store import Registry
from pneumokit.training.cv import LEAK_WARNING, ResumeError, run_cv

TINY = dict(folds=3, epochs=2, image_size=32, batch_size=8, augment="crop", val_fraction=0.25)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cvdata") / "chest_xray", per_class=12, size=40,
                        per_patient=2)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("cvrun")
    notices = []
    result = run_cv(CVConfig(**TINY), data, output=base / "out", registry=Registry(base / "reg"),
                    echo=notices.append)
    return result, notices


def test_folds_are_patient_grouped_and_stratified(run):
    result, notices = run
    folds = pd.read_csv(result.output / "folds.csv")
    assert list(folds.columns) == ["path", "patient", "label", "fold"]
    assert folds.groupby("patient")["fold"].nunique().max() == 1  # no patient in two folds
    assert sorted(folds["fold"].unique()) == [1, 2, 3]
    assert (folds.groupby("fold")["label"].nunique() == 2).all()
    assert any(n.startswith("device: 0 GPU(s), precision float32, XLA off") for n in notices)
    assert not any(LEAK_WARNING in n for n in notices)


def test_outputs_table_oof_and_plots(run):
    result, _ = run
    table = pd.read_csv(result.output / "cv.csv")
    assert table["fold"].astype(str).tolist() == ["1", "2", "3", "mean", "std"]
    for m in ("accuracy", "loss", "precision", "recall", "specificity", "f1", "auc", "brier", "ece"):
        per_fold = table[m][:3].to_numpy(dtype=float)
        assert table[m][3] == pytest.approx(per_fold.mean())
        assert table[m][4] == pytest.approx(per_fold.std(ddof=1))
    oof = pd.read_csv(result.output / "oof.csv")
    assert len(oof) == 24 and oof["path"].is_unique and oof["probability"].between(0, 1).all()
    assert result.threshold == 0.5 and result.threshold_rule == "0.5 on calibrated probabilities"
    cal = result.calibration  # the temperature is fitted on the out-of-fold predictions
    from pneumokit.training.calibration import apply_temperature
    from pneumokit.training.metrics import brier_score
    assert cal["temperature"] > 0 and cal["brier"] <= cal["brier_uncalibrated"] + 1e-12
    np.testing.assert_allclose(oof["calibrated"], apply_temperature(oof["probability"], cal["temperature"]))
    assert cal["brier"] == pytest.approx(brier_score(oof["label"], oof["calibrated"]))
    for f in result.folds:  # the honest estimate: threshold from the inner split, scored on the fold
        assert f.tuned["confusion_matrix"] and 0.0 <= f.tuned["threshold"] <= 1.0
    assert set(result.tuned_summary) >= {"accuracy", "recall", "specificity", "auc"}
    assert set(result.oof_metrics) == {"at_threshold", "at_0.5"}
    for name in ("training_curves.png", "cv_summary.png", "roc.png", "confusion.png", "reliability.png"):
        assert (result.output / "plots" / name).stat().st_size > 0
    saved = json.loads((result.output / "result.json").read_text())
    assert saved["mean"]["auc"] == pytest.approx(result.summary["auc"]["mean"])
    assert saved["device"]["strategy"] == "default"


def test_final_model_registered_with_cv_metadata(run):
    result, _ = run
    mv = result.version
    assert mv.metadata["kind"] == "cv" and mv.metadata["threshold"] == pytest.approx(result.threshold)
    assert mv.metadata["metrics"]["cv"]["auc"]["mean"] == pytest.approx(result.summary["auc"]["mean"])
    assert mv.metadata["folds"]["k"] == 3 and len(mv.metadata["folds"]["best_epochs"]) == 3
    assert mv.metadata["final_epochs"] >= 1 and mv.metadata["device"]["precision"] == "float32"
    for artifact in ("model.keras", "cv.csv", "oof.csv", "folds.csv", "plots/roc.png"):
        mv.verify(artifact)
    assert result.final_model.output_shape == (None, 1)
    assert mv.metadata["calibration"]["temperature"] == pytest.approx(result.calibration["temperature"])
    head = result.final_model.get_layer("temperature")  # stock Keras: Rescaling(1 / T)
    assert head.scale == pytest.approx(1 / result.calibration["temperature"])
    assert result.final_model.compiled  # the original API's users may call evaluate() on it


def test_registry_show_prints_a_cv_model(run):
    """A cv model's metrics are mean/std summaries: `registry show` prints them, not a traceback."""
    result, _ = run
    out = CliRunner().invoke(main, ["registry", "show", result.version.ref, "--registry",
                                    str(result.version.path.parent.parent)])
    assert out.exit_code == 0, out.output
    assert "threshold: 0.5000 (0.5 on calibrated probabilities)" in out.stdout
    assert f"cv: auc {result.summary['auc']['mean']:.4f} ± {result.summary['auc']['std']:.4f}" in out.stdout
    assert "calibration: temperature" in out.stdout


def test_a_cv_model_has_a_complete_card(run):
    result, _ = run
    card = CliRunner().invoke(main, ["registry", "card", result.version.ref, "--registry",
                                     str(result.version.path.parent.parent)])
    assert card.exit_code == 0, card.output
    assert_complete(card.stdout)
    auc = result.summary["auc"]
    assert "3-fold cross-validation, grouped by patient" in card.stdout and "- made by: `cv`" in card.stdout
    assert f"| auc | {auc['mean']:.4f} ± {auc['std']:.4f} |" in card.stdout


def test_youden_rule_on_calibrated_oof(data, tmp_path):
    from pneumokit.training.metrics import youden_threshold

    result = run_cv(CVConfig(**{**TINY, "folds": 2, "threshold_rule": "youden"}), data,
                    output=tmp_path / "out", final=False, echo=lambda line: None)
    assert result.threshold_rule == "Youden's J"
    assert result.threshold == pytest.approx(youden_threshold(result.oof["label"], result.oof["calibrated"]))


def test_ensemble_is_the_calibrated_mean_of_the_fold_models(data, tmp_path):
    """--ensemble registers one model: sigmoid(mean of the fold models' logits / T), no final fit."""
    import keras

    from pneumokit.data.preprocessing import Preprocessing
    from pneumokit.training.calibration import apply_temperature, logit

    reg = Registry(tmp_path / "reg")
    result = run_cv(CVConfig(**{**TINY, "folds": 2, "ensemble": True}), data, output=tmp_path / "out",
                    registry=reg, echo=lambda line: None)
    mv = result.version
    assert mv.metadata["ensemble"]["folds"] == 2 and "final_epochs" not in mv.metadata
    assert not (result.output / "final_history.csv").exists()
    model = reg.load_model(mv.ref)  # reloads through the registry (custom layer registered)
    x = Preprocessing.from_dict(mv.metadata["preprocessing"]).prepare(result.oof["path"][:6])
    folds = [keras.saving.load_model(result.output / "folds" / f"fold_{k}.keras") for k in (1, 2)]
    mean_logit = np.mean([logit(m.predict(x, verbose=0).ravel()) for m in folds], axis=0)
    expected = apply_temperature(1 / (1 + np.exp(-mean_logit)), result.calibration["temperature"])
    np.testing.assert_allclose(model.predict(x, verbose=0).ravel(), expected, atol=1e-5)
    from pneumokit.inference.export import export
    from pneumokit.inference.runtime import Predictor

    exported = export(mv.ref, reg)  # one ONNX graph, parity-checked against Keras
    assert exported.max_abs_diff <= 1e-4
    rows = Predictor(mv.ref, registry=reg).predict_files(list(result.oof["path"][:6]))
    np.testing.assert_allclose([r["probability"] for r in rows], expected, atol=1e-4)


def test_target_sensitivity_threshold(data, tmp_path):
    result = run_cv(CVConfig(**{**TINY, "folds": 2, "target_sensitivity": 0.9}), data,
                    output=tmp_path / "o", final=False, echo=lambda s: None)
    assert result.oof_metrics["at_threshold"]["recall"] >= 0.9
    assert "sensitivity >= 0.9" in result.threshold_rule


def test_image_grouping_warns(data, tmp_path):
    notices = []
    run_cv(CVConfig(**{**TINY, "folds": 2, "grouping": "image"}), data, output=tmp_path / "o",
           final=False, echo=notices.append)
    assert any(LEAK_WARNING in n for n in notices)


def test_resume_after_interrupt_gives_same_results(data, tmp_path, monkeypatch):
    from pneumokit import fitting

    config = CVConfig(**TINY)
    whole = run_cv(config, data, output=tmp_path / "whole", final=False, echo=lambda s: None)

    real_fit, calls = fitting.fit, []

    def crashing_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during fold 2
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fitting, "fit", crashing_fit)
    with pytest.raises(KeyboardInterrupt):
        run_cv(config, data, output=tmp_path / "broken", final=False, echo=lambda s: None)
    monkeypatch.setattr(fitting, "fit", real_fit)
    kept = sorted(p.name for p in (tmp_path / "broken" / "folds").iterdir() if not p.name.startswith("."))
    assert kept == ["fold_1.json"]  # fold models are kept only for --ensemble

    resumed = run_cv(None, None, resume=tmp_path / "broken", final=False, echo=lambda s: None)
    assert resumed.resumed_folds == [1]
    for a, b in zip(whole.folds, resumed.folds, strict=True):
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-6)
        assert a.best_epoch == b.best_epoch
    assert resumed.threshold == pytest.approx(whole.threshold)

    with pytest.raises(ResumeError, match="other settings"):
        run_cv(CVConfig(**{**TINY, "epochs": 3}), None, resume=tmp_path / "broken", final=False)
    with pytest.raises(ResumeError, match="--resume"):
        run_cv(config, data, output=tmp_path / "broken", final=False)


def test_cv_cli_json(data, tmp_path):
    args = ["cv", "--data", str(data), "--folds", "2", "--epochs", "1", "--image-size", "32",
            "--batch-size", "8", "--augment", "", "--output", str(tmp_path / "o"), "--no-final",
            "--json"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert len(report["folds"]) == 2 and set(report["mean"]) >= {"auc", "accuracy", "specificity"}
    assert report["model"] is None and report["device"]["xla"] is False and report["wall_s"] > 0


def test_cv_cli_table(data, tmp_path):
    args = ["cv", "--data", str(data), "--folds", "2", "--epochs", "1", "--image-size", "32",
            "--batch-size", "8", "--output", str(tmp_path / "o"), "--registry", str(tmp_path / "r"),
            "--quiet"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "| Metric | Value | Standard Deviation |" in out.stdout
    assert "| AUC |" in out.stdout and "registered cnn_optimized:1" in out.stdout


def test_original_api(data, tmp_path):
    from pneumokit import (
        create_gpu_optimized_model,
        create_model,
        create_optimized_transfer_learning_model,
        perform_optimized_cross_validation,
        prepare_cv_data,
    )

    files, labels = prepare_cv_data(data_dir=data)
    assert len(files) == 24 and labels.sum() == 12
    assert create_model().optimizer is not None
    tl = create_optimized_transfer_learning_model("MobileNetV2", input_shape=(32, 32, 3), weights="none")
    assert tl.name == "mobilenet_v2" and tl.output_shape == (None, 1)
    cv_results, cv_df, final_model = perform_optimized_cross_validation(
        n_splits=2, epochs=1, batch_size=8,
        model_func=lambda: create_gpu_optimized_model((32, 32, 1)),
        data_dir=data, output=tmp_path / "o", registry=Registry(tmp_path / "r"), augment="",
        echo=lambda s: None)
    assert list(cv_df["fold"]) == ["1", "2", "mean", "std"]
    assert len(cv_results["folds"]) == 2 and "history" in cv_results["folds"][0]
    assert 0 <= cv_results["mean"]["auc"] <= 1
    final_model.save(tmp_path / "pneumonia_model.keras")
    assert (tmp_path / "pneumonia_model.keras").stat().st_size > 0
    meta = Registry(tmp_path / "r").get("cnn_optimized").metadata
    assert meta["model_func"] == "<lambda>"
    assert meta["architecture"]["name"] == "cnn_optimized" and meta["architecture"]["plugin"] == "pneumokit"


def test_model_func_must_build_a_new_model_each_time(data, tmp_path):
    from pneumokit import create_gpu_optimized_model
    from pneumokit.training.compat import model_func_architecture

    shared = create_gpu_optimized_model((32, 32, 1))
    with pytest.raises(ValueError, match="new model on every call"):
        run_cv(CVConfig(**{**TINY, "folds": 2}), data, output=tmp_path / "o", final=False,
               architecture=model_func_architecture(lambda: shared), echo=lambda s: None)


def test_invalid_name_is_refused_before_training(data, tmp_path):
    from pneumokit.registry.store import RegistryError

    with pytest.raises(RegistryError, match="invalid model name"):
        run_cv(CVConfig(**TINY), data, output=tmp_path / "o", name="My Model", echo=lambda s: None)
    assert not (tmp_path / "o").exists()
