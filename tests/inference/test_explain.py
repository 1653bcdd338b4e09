"""Heatmaps: class activation maps that mean something, travel inside the ONNX file, and are drawn."""

import json
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from PIL import Image

from pneumokit.inference.explain import grad_cam_function
from pneumokit.inference.export import to_onnx
from pneumokit.inference.overlay import MIN_WIDTH
from pneumokit.models.architectures.cnn import build_cnn, build_cnn_optimized
from pneumokit.models.ensemble import calibrated, logit_tensor
from pneumokit.models.heatmap import logit_map, with_heatmap

SIZE = 128


def blob_images(n: int, rng):
    """Smooth noisy backgrounds; every other image (label 1) has a bright blob in its top-left
    (corner 0) or bottom-right (corner 1) quadrant, drawn at random."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    x = np.empty((n, SIZE, SIZE, 1), np.float32)
    y, corner = np.zeros(n), np.full(n, -1)
    for i in range(n):
        a, b = rng.uniform(0.5, 1.5, 2)
        img = 0.4 + 0.1 * np.cos(3 * a * xx + b) * np.cos(2 * b * yy) + rng.normal(0, 0.05, (SIZE, SIZE))
        if i % 2:
            corner[i] = rng.integers(2)
            cx, cy = rng.uniform(0.12, 0.38, 2) + 0.5 * corner[i]
            img = img + 0.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.004)
            y[i] = 1
        x[i, ..., 0] = img
    return x, y, corner


@pytest.fixture(scope="module")
def blob_model():
    rng = np.random.default_rng(0)
    x, y, _ = blob_images(256, rng)
    test = blob_images(64, rng)
    keras.utils.set_random_seed(0)
    model = build_cnn_optimized((SIZE, SIZE, 1), width=8)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    assert model.evaluate(test[0], test[1], verbose=0)[1] >= 0.75  # it learned the blob
    return model, test


def quadrant_mass(heat: np.ndarray, corner: int) -> np.ndarray:
    """The share of each map's mass in the top-left (0) or bottom-right (1) quadrant."""
    h, w = heat.shape[1:]
    rows = slice(h // 2, h) if corner else slice(0, h // 2)
    cols = slice(w // 2, w) if corner else slice(0, w // 2)
    return heat[:, rows, cols].sum(axis=(1, 2)) / np.maximum(heat.sum(axis=(1, 2)), 1e-9)


def test_heatmap_mass_falls_on_the_blob_that_makes_the_class(blob_model):
    model, (x, _, corner) = blob_model
    _, heat = (np.asarray(o) for o in with_heatmap(model)(x, training=False))
    assert heat.shape == (len(x), 4, 4) and heat.min() >= 0 and heat.max() <= 1
    for c in (0, 1):  # chance would be 0.25; the map follows the blob from corner to corner
        share = quadrant_mass(heat[corner == c], c)
        assert share.mean() > 0.7 and share.min() > 0.4, (c, share)


def test_the_map_splits_the_logit_exactly(blob_model):
    model, (x, _, _) = blob_model
    m = np.asarray(logit_map(model)(x[:8], training=False))
    z = np.asarray(keras.Model(model.inputs[0], logit_tensor(model))(x[:8], training=False)).ravel()
    bias = model.layers[-1].get_weights()[1][0]
    np.testing.assert_allclose(m.mean(axis=(1, 2)) + bias, z, rtol=1e-4, atol=1e-4)


def test_calibrated_ensemble_map_is_the_mean_of_its_members(blob_model):
    model, (x, _, _) = blob_model
    other = build_cnn_optimized((SIZE, SIZE, 1), width=8)
    ens = calibrated([model, other], temperature=2.0)
    got = np.asarray(logit_map(ens)(x[:4], training=False))
    each = [np.asarray(logit_map(m)(x[:4], training=False)) for m in (model, other)]
    np.testing.assert_allclose(got, (each[0] + each[1]) / 2 / 2.0, rtol=1e-4, atol=1e-4)


def test_grad_cam_equals_cam_on_a_pooled_dense_head(blob_model):
    model, (x, _, _) = blob_model
    prob, heat = grad_cam_function(model)(x[:8])
    cam_prob, cam_heat = (np.asarray(o) for o in with_heatmap(model)(x[:8], training=False))
    np.testing.assert_allclose(prob, cam_prob, atol=1e-6)
    np.testing.assert_allclose(heat, cam_heat, atol=1e-4)


def test_grad_cam_on_a_flatten_head_and_no_cam_for_it():
    model = build_cnn((32, 32, 1), dense_units=8)
    assert logit_map(model) is None and with_heatmap(model) is None
    prob, heat = grad_cam_function(model)(np.random.default_rng(0).random((2, 32, 32, 1), np.float32))
    assert prob.shape == (2, 1) and heat.shape == (2, 4, 4) and 0 <= heat.min() and heat.max() <= 1


def test_heatmap_output_converts_to_onnx_with_parity(blob_model):
    model, (x, _, _) = blob_model
    proto = to_onnx(with_heatmap(model), SIZE, SIZE, 1)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probability", "heatmap"]
    prob, heat = session.run(None, {"image": x[:8]})
    want_prob, want_heat = (np.asarray(o) for o in with_heatmap(model)(x[:8], training=False))
    np.testing.assert_allclose(prob, want_prob, atol=1e-5)
    np.testing.assert_allclose(heat, want_heat, atol=1e-4)


# --- the commands: export --heatmap, predict --heatmap, explain --------------------------------

def run(*args):
    from pneumokit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_export_heatmap_writes_the_contract(exported):
    assert exported["export"]["heatmap"] == {"height": 2, "width": 2}
    assert exported["export"]["parity"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(exported["export"]["path"]), providers=["CPUExecutionProvider"])
    outputs = json.loads(session.get_modelmeta().custom_metadata_map["pneumokit.outputs"])
    assert [o["name"] for o in outputs] == ["probability", "heatmap", "gate"]  # the input gate: gate.md
    assert outputs[1]["shape"] == ["batch", 2, 2] and outputs[1]["range"] == [0, 1]


def test_predict_heatmap_writes_overlays_and_keeps_the_probabilities(exported, tmp_path):
    reg, images = exported["registry"], exported["images"]
    plain = run("predict", "heat:1", *images, "--registry", reg, "--json")
    heat = run("predict", "heat:1", *images, "--registry", reg, "--json", "--heatmap", tmp_path / "h")
    assert plain.exit_code == 0 and heat.exit_code == 0, heat.output
    a, b = json.loads(plain.stdout)["predictions"], json.loads(heat.stdout)["predictions"]
    assert [r["probability"] for r in a] == [r["probability"] for r in b]
    for row, image in zip(b, images, strict=True):
        with Image.open(row["file"]) as png:
            assert png.format == "PNG" and png.width == max(MIN_WIDTH, Image.open(image).width)
    refused = run("predict", "plain:1", *images, "--registry", reg, "--heatmap", tmp_path / "p")
    assert refused.exit_code == 1 and "no heatmap output" in refused.output
    assert "export the model with `pneumokit export REF --heatmap`" in refused.output


def test_explain_uses_the_onnx_heatmap_and_grad_cam_agrees(exported, tmp_path):
    reg, images = exported["registry"], exported["images"]
    auto = run("explain", "heat:1", *images, "--registry", reg, "--output", tmp_path / "a", "--json")
    assert auto.exit_code == 0, auto.output
    report = json.loads(auto.stdout)
    assert (report["engine"], report["method"]) == ("onnxruntime", "cam")
    grad = run("explain", "heat:1", *images, "--registry", reg, "--output", tmp_path / "g", "--json",
               "--method", "grad-cam")
    assert grad.exit_code == 0, grad.output
    g = json.loads(grad.stdout)
    assert (g["engine"], g["method"]) == ("keras", "grad-cam")
    for x, y in zip(report["explanations"], g["explanations"], strict=True):
        assert abs(x["probability"] - y["probability"]) < 1e-4 and x["label"] == y["label"]
        assert (tmp_path / "a" / (x["path"].rsplit("/", 1)[1].rsplit(".", 1)[0] + ".png")).is_file()
    keras_cam = run("explain", "plain:1", *images[:2], "--registry", reg, "--output", tmp_path / "k",
                    "--json")
    assert keras_cam.exit_code == 0 and json.loads(keras_cam.stdout)["engine"] == "keras"


def test_explain_bad_input_is_one_line(exported, tmp_path):
    reg, images = exported["registry"], exported["images"]
    onnx_file = exported["registry"] / "plain" / "1" / "model.onnx"
    out = run("explain", onnx_file, *images[:1], "--registry", reg, "--output", tmp_path / "x")
    assert out.exit_code == 1 and "has no heatmap output" in out.output and "Traceback" not in out.output
    bad = tmp_path / "bad.jpeg"
    bad.write_bytes(b"not an image")
    out = run("explain", "heat:1", bad, images[0], "--registry", reg, "--output", tmp_path / "y")
    assert out.exit_code == 1 and "1 of 2 file(s) could not be read" in out.output
    assert (tmp_path / "y" / (images[0].stem + ".png")).is_file()
    out = run("explain", "heat:1", images[0], "--registry", reg, "--output", reg / "heat")
    assert out.exit_code == 1 and "inside the registry" in out.output


def test_export_heatmap_is_refused_for_a_flatten_head(tmp_path):
    from pneumokit.errors import ExportError
    from pneumokit.inference.export import export
    from pneumokit.registry.store import Registry

    reg = Registry(tmp_path / "reg")
    meta = {"architecture": {"name": "cnn"}, "threshold": 0.5, "class_names": ["NORMAL", "PNEUMONIA"],
            "preprocessing": {"height": 32, "width": 32, "channels": 1, "scale": 1 / 255, "mean": [0.0],
                              "std": [1.0]}}
    reg.save("flat", build_cnn((32, 32, 1), dense_units=4), meta)
    with pytest.raises(ExportError, match="Grad-CAM"):
        export("flat:1", reg, heatmap=True)
    assert "model.onnx" not in reg.get("flat:1").metadata["artifacts"]


def test_onnx_only_example_prints_the_heatmap(exported):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    from pneumokit.inference.runtime import Predictor
    from pneumokit.registry.store import Registry

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "onnx_predict.py"
    onnx_path = exported["registry"] / "heat" / "1" / "model.onnx"
    images = [str(p) for p in exported["images"][:3]]
    blocker = ("import sys, runpy; sys.modules['pneumokit'] = None; sys.modules['tensorflow'] = None; "
               "sys.modules['keras'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", blocker, str(example), str(onnx_path), *images],
                         capture_output=True, text=True, check=True)
    rows = list(csv.reader(out.stdout.splitlines()))
    want = Predictor("heat:1", providers="cpu", registry=Registry(exported["registry"])).predict_files(
        images, heatmap=True)
    for row, w in zip(rows, want, strict=True):
        assert abs(float(row[1]) - w["probability"]) < 1e-3 and row[2] == w["label"]
        assert float(row[3]) == pytest.approx(w["gate_score"], rel=1e-4)
        np.testing.assert_allclose(np.asarray(json.loads(row[4])), w["heatmap"], atol=2e-3)


def test_overlays_never_replace_the_input_images(exported, tmp_path):
    import shutil

    folder = tmp_path / "ow"
    folder.mkdir()
    shutil.copy(exported["images"][0], folder / "scan.jpeg")
    Image.open(exported["images"][1]).save(folder / "scan.png")
    before = (folder / "scan.png").read_bytes()
    out = run("predict", "heat:1", folder, "--registry", exported["registry"], "--heatmap", folder, "--json")
    assert out.exit_code == 0, out.output
    assert (folder / "scan.png").read_bytes() == before  # the input is untouched
    files = sorted(Path(r["file"]).name for r in json.loads(out.stdout)["predictions"])
    assert files == ["scan-2.png", "scan-3.png"]


def test_small_images_get_a_readable_caption(exported, tmp_path):
    from pneumokit.inference.overlay import MIN_WIDTH, caption, overlay

    row = {"label": "PNEUMONIA", "probability": 0.8718}
    img = overlay(np.zeros((64, 64), np.uint8), np.ones((2, 2)), caption(row, 0.5, "cam"))
    assert img.width == MIN_WIDTH and img.height > MIN_WIDTH


def test_grad_cam_on_an_onnx_file_asks_for_the_ref(exported, tmp_path):
    onnx_file = exported["registry"] / "heat" / "1" / "model.onnx"
    out = run("explain", onnx_file, exported["images"][0], "--method", "grad-cam", "--output", tmp_path / "g",
              "--registry", exported["registry"])
    assert out.exit_code == 1
    assert "--method grad-cam needs the Keras model: give the registry ref" in out.output
