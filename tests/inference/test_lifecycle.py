"""train -> registry -> export (ONNX, parity) -> predict -> evaluate, on a tiny synthetic set."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import make_dataset

from pneumokit.cli import main
from pneumokit.inference.export import ExportError, export
from pneumokit.inference.runtime import Predictor, choose_providers
from pneumokit.registry.store import Registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "onnx_predict.py"
TINY = ["--epochs", "2", "--image-size", "32", "--batch-size", "8", "--augment", "crop",
        "--val-fraction", "0.25", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("life")
    data = make_dataset(base / "chest_xray", per_class=12, size=48, splits=("train", "test"))
    registry = base / "registry"
    runner = CliRunner()
    out = runner.invoke(main, ["train", "--data", str(data), "--registry", str(registry),
                               "--name", "tiny", "--json", *TINY])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    out = runner.invoke(main, ["export", "tiny:1", "--registry", str(registry), "--json"])
    assert out.exit_code == 0, out.output
    return {"data": data, "registry": registry, "train": result, "export": json.loads(out.stdout)}


def test_train_registers_a_complete_version(trained):
    result = trained["train"]
    assert (result["name"], result["version"]) == ("tiny", 1)
    assert {"auc", "accuracy", "precision", "recall", "specificity", "f1", "loss"} <= set(
        result["metrics"]["validation"])
    mv = Registry(trained["registry"]).get("tiny")
    meta = mv.metadata
    assert meta["architecture"]["name"] == "cnn_optimized" and meta["architecture"]["plugin"] == "pneumokit"
    assert meta["config"]["epochs"] == 2 and meta["image_size"] == 32 and meta["channels"] == 1
    assert meta["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert meta["class_names"] == ["NORMAL", "PNEUMONIA"] and 0 <= meta["threshold"] <= 1
    assert meta["dataset"]["files"] == 24 and len(meta["dataset"]["sha256"]) == 64
    assert meta["split"]["validation_images"] > 0 and meta["packages"]["keras"].startswith("3.")
    for artifact in ("model.keras", "history.csv", "plots/training_curves.png", "plots/confusion.png"):
        mv.verify(artifact)
    model = Registry(trained["registry"]).load_model("tiny")
    assert model.output_shape == (None, 1)


def test_export_contract(trained):
    assert trained["export"]["parity"]["max_abs_diff"] <= 1e-4
    mv = Registry(trained["registry"]).get("tiny")
    path = mv.verify("model.onnx")
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["probability", "gate"]  # the input gate (docs/gate.md)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [32, 32, 1]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["pneumokit.class_names"]) == ["NORMAL", "PNEUMONIA"]
    assert float(props["pneumokit.threshold"]) == pytest.approx(mv.metadata["threshold"])
    assert json.loads(props["pneumokit.input"]) == {"name": "image", "layout": "NHWC", "height": 32,
                                                    "width": 32, "channels": 1, "dtype": "float32"}
    pre = json.loads(props["pneumokit.preprocessing"])
    assert {"color", "resize", "antialias", "keep_aspect", "scale", "mean", "std"} <= set(pre)
    assert json.loads(props["pneumokit.model"]) == {"name": "tiny", "version": 1,
                                                    "architecture": "cnn_optimized"}
    assert mv.metadata["onnx"]["opset"] == 17
    calibration = json.loads(props["pneumokit.calibration"])
    assert calibration["method"] == "temperature"
    assert calibration["temperature"] == pytest.approx(mv.metadata["calibration"]["temperature"])


def test_export_fails_above_tolerance_and_writes_nothing(trained, tmp_path):
    import keras

    from pneumokit import get_catalog

    reg = Registry(tmp_path)
    model = get_catalog().architecture("cnn").build((32, 32, 1))
    meta = dict(Registry(trained["registry"]).get("tiny").metadata)
    mv = reg.save("strict", model, {k: meta[k] for k in ("architecture", "config", "class_names",
                                                          "threshold", "preprocessing")})
    before = (mv.path / "metadata.json").read_text()
    with pytest.raises(ExportError, match="parity check failed.*nothing was written"):
        export("strict", reg, tolerance=-1.0)
    assert not (mv.path / "model.onnx").exists()
    assert (mv.path / "metadata.json").read_text() == before
    del keras


def test_mixed_precision_model_exports_as_float32(trained, tmp_path):
    import keras

    from pneumokit import get_catalog

    meta = dict(Registry(trained["registry"]).get("tiny").metadata)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = get_catalog().architecture("cnn_optimized").build((32, 32, 1))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reg = Registry(tmp_path)
    reg.save("mixed", model, {k: meta[k] for k in ("architecture", "config", "class_names",
                                                    "threshold", "preprocessing")})
    result = export("mixed", reg)
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 1)).astype("float32")
    onnx_p = Predictor(result.path).predict_batch(x)
    # float16 rounding through a dozen layers of random weights: up to a few 1e-3
    np.testing.assert_allclose(onnx_p, model.predict(x, verbose=0).ravel(), atol=5e-3)
    proto = onnx.load(result.path)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert result.max_abs_diff <= 1e-4


def test_predictor_and_provider_choice(trained):
    p = Predictor("tiny", registry=Registry(trained["registry"]))
    assert p.providers_in_use == ["CPUExecutionProvider"]
    rows = p.predict_files(sorted((trained["data"] / "test").rglob("*.jpeg")))
    assert len(rows) == 24 and all(0 <= r["probability"] <= 1 for r in rows)
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", ["AzureExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_predict_cli_formats_and_bad_files(trained, tmp_path):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(b"\xff\xd8 not really")
    test_dir = trained["data"] / "test"
    out_csv = tmp_path / "pred.csv"
    runner = CliRunner()
    result = runner.invoke(main, ["predict", "tiny", str(test_dir), str(bad), "--registry",
                                  str(trained["registry"]), "--json", "--output", str(out_csv)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    rows = report["predictions"]
    assert len(rows) == 25 and report["providers"] == ["CPUExecutionProvider"]
    broken = [r for r in rows if r["error"]]
    assert [r["path"] for r in broken] == [str(bad)]
    assert sum(1 for _ in out_csv.open()) == 26
    for threshold, label in (("0", "PNEUMONIA"), ("1", "NORMAL")):
        forced = runner.invoke(main, ["predict", "tiny", str(test_dir), "--registry",
                                      str(trained["registry"]), "--threshold", threshold, "--json"])
        assert forced.exit_code == 0
        report = json.loads(forced.stdout)
        assert report["threshold"] == float(threshold)
        assert {r["label"] for r in report["predictions"]} == {label}
    table = runner.invoke(main, ["predict", "tiny", str(test_dir), "--registry", str(trained["registry"])])
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split() == ["PATH", "PROBABILITY", "LABEL"]


def test_docs_example_matches_pneumokit_predict_without_pneumokit(trained):
    assert EXAMPLE.read_text() in (ROOT / "docs" / "onnx.md").read_text(), \
        "docs/onnx.md must show docs/examples/onnx_predict.py verbatim"
    onnx_path = Registry(trained["registry"]).get("tiny").path / "model.onnx"
    demo = sorted(str(p) for p in (ROOT / "pneumokit/data/demo/chest_xray/train").rglob("*.jpeg"))[::10]
    blocker = ("import sys, runpy; sys.modules['pneumokit'] = None; sys.modules['tensorflow'] = None; "
               "sys.modules['keras'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", blocker, str(EXAMPLE), str(onnx_path), *demo],
                         capture_output=True, text=True, check=True)
    theirs = {line.split(",")[0]: line.split(",")[1:] for line in out.stdout.splitlines()}
    ours = {r["path"]: r for r in Predictor(onnx_path).predict_files(demo)}
    assert set(theirs) == set(ours) and len(ours) == 20
    _agree(theirs, ours, 1e-3)


def _agree(theirs: dict, ours: dict, tolerance: float) -> None:
    """The example's rows (probability, label, gate score) against Predictor's: the same labels
    (OUT_OF_SCOPE where the gate refused), probabilities within ``tolerance`` where given, and
    gate scores within it relatively (a synthetic-trained model refuses real X-rays: docs/gate.md)."""
    for k, r in ours.items():
        prob, label, score = theirs[k][:3]
        assert label == (r["label"] or "OUT_OF_SCOPE")
        assert (prob == "") == (r["probability"] is None)
        if prob:
            assert abs(float(prob) - r["probability"]) <= tolerance
        assert abs(float(score) - r["gate_score"]) <= tolerance * max(1.0, r["gate_score"])


def test_evaluate_writes_report_and_plots(trained, tmp_path):
    out = CliRunner().invoke(main, ["evaluate", "tiny", "--data", str(trained["data"]), "--registry",
                                    str(trained["registry"]), "--output", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["split"] == "test" and report["images"] == 24
    assert report["engine"].startswith("onnxruntime")
    for key in ("at_threshold", "at_0.5"):
        m = report[key]
        assert {"accuracy", "precision", "recall", "specificity", "f1", "auc"} <= set(m)
        assert np.asarray(m["confusion_matrix"]).sum() == 24
    for name in ("metrics.json", "predictions.csv", "roc.png", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0
    missing = CliRunner().invoke(main, ["evaluate", "tiny", "--split", "val", "--registry",
                                        str(trained["registry"])])
    assert missing.exit_code == 1 and "no val/ images" in missing.output
    assert report["images_seen_in_training"] == 0  # test/ was never trained on
    seen = CliRunner().invoke(main, ["evaluate", "tiny", "--data", str(trained["data"]), "--split", "train",
                                     "--registry", str(trained["registry"]), "--output", str(tmp_path / "t")])
    assert seen.exit_code == 0 and "24 of these 24 images were in this model's training data" in seen.output


@pytest.mark.slow
def test_plain_pillow_runtime_agrees_on_full_size_originals(trained, tmp_path):
    """Issue 14: a runtime that decodes the whole JPEG and then resizes (the onnxruntime-only
    example, run with pneumokit, TensorFlow and Keras blocked) agrees with `pneumokit predict`
    on the 60 full-resolution originals: max |Δp| <= 0.005 and identical labels."""
    from pneumokit.data.preprocessing import decode

    originals = sorted(str(p) for p in (ROOT.parent / "shared/data/originals").rglob("*.jpeg"))
    assert len(originals) == 60
    mv = Registry(trained["registry"]).get("tiny")
    assert mv.metadata["preprocessing"]["jpeg_draft"] is False  # the default rule is portable
    onnx_path = mv.path / "model.onnx"
    blocker = ("import sys, runpy; sys.modules['pneumokit'] = None; sys.modules['tensorflow'] = None; "
               "sys.modules['keras'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", blocker, str(EXAMPLE), str(onnx_path), *originals],
                         capture_output=True, text=True, check=True)
    theirs = {line.split(",")[0]: line.split(",")[1:] for line in out.stdout.splitlines()}
    ours = {r["path"]: r for r in Predictor(onnx_path).predict_files(originals)}
    assert set(theirs) == set(ours)
    _agree(theirs, ours, 0.005)
    # the check can fail: libjpeg's reduced-scale decode gives other pixels on these files
    size = mv.metadata["preprocessing"]["height"]
    assert any(not np.array_equal(decode(p, size, draft=True), decode(p, size, draft=False))
               for p in originals[:10])
