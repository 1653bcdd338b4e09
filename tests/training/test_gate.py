"""The input gate (docs/gate.md): DICOM header checks, the colour check, the content gate in the
graph and its ONNX output, and every entry point honouring it."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import xray_like
from helpers_dicom import write_dicom
from PIL import Image

from pneumokit.cli import main
from pneumokit.data.preprocessing import decode, read_image
from pneumokit.errors import OutOfScopeError

ROOT = Path(__file__).resolve().parents[2]


def _gray(size=64, seed=0):
    return xray_like(0, size, np.random.default_rng(seed))


@pytest.mark.parametrize("tags, said", [
    ({"Modality": "CT"}, "DICOM Modality is CT"),
    ({"Modality": "MR"}, "DICOM Modality is MR"),
    ({"ViewPosition": "LL"}, "DICOM ViewPosition is LL"),
    ({"ViewPosition": "LATERAL"}, "DICOM ViewPosition is LATERAL"),
    ({"BodyPartExamined": "HAND"}, "DICOM BodyPartExamined is HAND"),
])
def test_header_gate_refuses_with_the_tag_and_its_value(tmp_path, tags, said):
    path = write_dicom(tmp_path / "x.dcm", _gray(), tags={"ViewPosition": "PA", **tags})
    with pytest.raises(OutOfScopeError, match=said):
        read_image(str(path), 32)
    assert decode(str(path), 32).shape == (32, 32)  # training reads it: the gate is for inference


def test_header_gate_passes_a_frontal_chest_radiograph_and_reports_missing_tags(tmp_path):
    full = write_dicom(tmp_path / "pa.dcm", _gray(),
                       tags={"Modality": "CR", "ViewPosition": "AP", "BodyPartExamined": "CHEST"})
    pixels, notes = read_image(str(full), 32)
    assert pixels.shape == (32, 32) and notes == []
    bare = write_dicom(tmp_path / "bare.dcm", _gray(), tags={"Modality": None})
    _, notes = read_image(bare.read_bytes(), 32)
    assert notes == ["DICOM Modality, ViewPosition, BodyPartExamined missing: not checked"]


def test_header_gate_refuses_colour_dicom(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "DX", 16, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.zeros((16, 16, 3), np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(OutOfScopeError, match=r"DICOM PhotometricInterpretation is RGB, not grayscale"):
        read_image(buf.getvalue(), 16)


def test_pydicoms_own_ct_and_mr_files_are_refused_by_their_header():
    import pydicom  # a core dependency: no skip
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    for name, modality in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        with pytest.raises(OutOfScopeError, match=f"Modality is {modality}"):
            read_image(str(folder / name), 32)


def test_presentation_lut_inverse_is_shown_inverted(tmp_path):
    gray = _gray()
    plain = decode(str(write_dicom(tmp_path / "a.dcm", gray)), None)
    inverse = decode(str(write_dicom(tmp_path / "b.dcm", 255 - gray,
                                     tags={"PresentationLUTShape": "INVERSE"})), None)
    np.testing.assert_array_equal(plain, inverse)
    both = decode(str(write_dicom(tmp_path / "c.dcm", gray, monochrome1=True,
                                  tags={"PresentationLUTShape": "INVERSE"})), None)
    np.testing.assert_array_equal(plain, both)  # MONOCHROME1 stored with INVERSE: inverted once


def test_colour_images_are_refused_and_grey_stored_as_rgb_is_not(tmp_path):
    gray = _gray()
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    assert read_image(str(tmp_path / "grey_rgb.png"), 32)[0].shape == (32, 32)
    colour = np.stack([gray, gray // 2, 255 - gray], axis=-1).astype(np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(OutOfScopeError, match="image is in colour"):
        read_image(str(tmp_path / "colour.png"), 32)
    marked = np.stack([gray] * 3, axis=-1)
    marked[:4, :4] = (255, 0, 0)  # a small red annotation: 0.4% of the pixels
    Image.fromarray(marked).save(tmp_path / "marked.png")
    assert read_image(str(tmp_path / "marked.png"), 32)[0].shape == (32, 32)


@pytest.fixture(scope="module")
def fitted():
    """A small untrained cnn_optimized and a gate fitted on synthetic X-ray-like images."""
    from pneumokit import gate
    from pneumokit.core.plugins import get_catalog
    from pneumokit.data.preprocessing import Preprocessing
    from pneumokit.models.ensemble import calibrated

    arch = get_catalog().architecture("cnn_optimized")
    model = calibrated(arch.build((64, 64, 1)), 1.0)
    pre = Preprocessing.for_architecture(arch, 64)
    rng = np.random.default_rng(0)
    images = np.stack([xray_like(k % 2, 64, rng) for k in range(240)])[..., None]
    data, record = gate.fit(model, pre, images[:180], images[180:], seed=0)
    return {"model": model, "pre": pre, "arrays": gate.load(data), "record": record, "rng": rng}


def test_gate_thresholds_follow_the_stated_rule(fitted):
    from pneumokit import gate

    record = fitted["record"]
    assert set(record["components"]) == {"layout", "orientation", "features"}
    assert record["threshold"] == gate.THRESHOLD and record["held_out"]["images"] == 60
    assert record["held_out"]["flagged"] <= 3  # at most 3 x 0.5% of 60 by the rule, plus ties
    for name, c in record["components"].items():
        assert fitted["arrays"][f"{name}_threshold"] == pytest.approx(c["threshold"], rel=1e-6)


def test_gate_in_the_graph_and_in_onnx_equals_numpy(fitted):
    import onnxruntime as ort

    from pneumokit import gate
    from pneumokit.inference.export import to_onnx

    images = np.stack([xray_like(1, 64, fitted["rng"]) for _ in range(6)] +
                      [np.full((64, 64), 30), fitted["rng"].integers(0, 256, (64, 64))])[..., None]
    x = fitted["pre"].normalize(images.astype(np.float32))
    want = gate.score_vectors(gate.vectors(fitted["model"], images, fitted["pre"]), fitted["arrays"])
    graph = gate.with_gate(fitted["model"], fitted["arrays"])
    got = np.asarray(graph(x, training=False)[-1])
    np.testing.assert_allclose(got, want, rtol=1e-3)
    proto = to_onnx(graph, 64, 64, 1, names=("probability", "gate"))
    onnx_out = ort.InferenceSession(proto.SerializeToString()).run(["gate"], {"image": x})[0]
    near = got < 2  # near the threshold of 1, where decisions are made: tight
    np.testing.assert_allclose(onnx_out[near], got[near], atol=1e-4)
    np.testing.assert_allclose(onnx_out, got, rtol=1e-2)  # far out (blank, noise): float32 rounding


def test_gate_flags_made_images_that_are_not_like_the_training_images(fitted):
    from pneumokit import gate

    rng = fitted["rng"]
    upright = np.stack([xray_like(k % 2, 64, rng) for k in range(40)])[..., None]
    wrong = {kind: gate.transformed(upright, kind, rng) for kind in gate.TRANSFORMS}
    wrong["blank"] = np.full_like(upright, 128)
    wrong["noise"] = rng.integers(0, 256, upright.shape).astype(np.uint8)

    def score(images):
        return gate.score_vectors(gate.vectors(fitted["model"], images, fitted["pre"]), fitted["arrays"])

    assert np.mean(score(upright) > 1) <= 0.05
    for kind, images in wrong.items():
        assert np.mean(score(images) > 1) >= 0.9, kind


# --- every entry point, on the tiny exported models of conftest.py ----------------------------


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def inputs(exported, tmp_path_factory):
    """Made inputs that are not chest X-rays, DICOM with refused headers, and in-scope test images."""
    folder = tmp_path_factory.mktemp("gate_inputs")
    rng = np.random.default_rng(5)
    Image.fromarray(np.zeros((72, 72), np.uint8)).save(folder / "blank.png")
    Image.fromarray(rng.integers(0, 256, (72, 72)).astype(np.uint8)).save(folder / "noise.png")
    Image.fromarray(rng.integers(0, 256, (72, 72, 3)).astype(np.uint8)).save(folder / "colour.png")
    test = np.asarray(Image.open(exported["images"][0]).convert("L"))
    Image.fromarray(np.rot90(test).copy()).save(folder / "rotated.png")
    write_dicom(folder / "ct.dcm", test, tags={"Modality": "CT"})
    write_dicom(folder / "lateral.dcm", test, tags={"ViewPosition": "LL"})
    good = folder / "good"
    good.mkdir()
    for p in exported["images"][:3]:
        shutil.copy(p, good / p.name)
    write_dicom(good / "pa.dcm", test, tags={"ViewPosition": "PA", "BodyPartExamined": "CHEST"})
    return folder


def test_predict_gives_no_label_to_what_is_not_a_chest_xray(exported, inputs):
    out = run("predict", "heat:1", inputs, "--registry", exported["registry"], "--json")
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["gate"] == "on"
    rows = {Path(r["path"]).name: r for r in body["predictions"]}
    for name in ("blank.png", "noise.png", "colour.png", "rotated.png", "ct.dcm", "lateral.dcm"):
        row = rows[name]
        assert row["in_scope"] is False and row["label"] is None and row["probability"] is None, row
        assert row["reason"] and "\n" not in row["reason"]
    assert rows["ct.dcm"]["reason"].startswith("DICOM Modality is CT; pneumokit reads chest radiographs")
    assert rows["colour.png"]["reason"].startswith("image is in colour")
    assert rows["noise.png"]["reason"].startswith("image is not like the chest X-rays this model was")
    assert rows["noise.png"]["gate_score"] > 1.0
    good = [r for n, r in rows.items() if "/good/" in r["path"]]
    assert len(good) == 4 and all(r["in_scope"] is True and r["label"] for r in good), good
    table = run("predict", "heat:1", inputs, "--registry", exported["registry"])
    assert "OUT_OF_SCOPE  DICOM Modality is CT" in table.stdout
    assert "6 of 10 image(s) out of scope" in table.stderr


def test_gate_off_labels_everything_and_says_so(exported, inputs):
    out = run("predict", "heat:1", inputs, "--registry", exported["registry"], "--json", "--gate", "off")
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["gate"] == "off" and "--gate off" in out.stderr
    assert all(r["label"] and r["in_scope"] is None for r in body["predictions"])


def test_the_exported_file_carries_the_gate_and_an_onnx_only_script_reproduces_it(exported, inputs):
    import onnxruntime as ort

    from pneumokit.inference.runtime import Predictor
    from pneumokit.registry.store import Registry

    onnx_path = exported["registry"] / "plain" / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_path))
    gate_meta = json.loads(session.get_modelmeta().custom_metadata_map["pneumokit.gate"])
    assert gate_meta["output"] == "gate" and gate_meta["threshold"] == 1.0
    assert "gate" in [o.name for o in session.get_outputs()]
    images = [str(p) for p in (inputs / "blank.png", inputs / "noise.png", inputs / "rotated.png",
                               *sorted((inputs / "good").glob("*.jpeg")))]
    blocker = ("import sys, runpy; sys.modules['pneumokit'] = None; sys.modules['tensorflow'] = None; "
               "sys.modules['keras'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    example = ROOT / "docs" / "examples" / "onnx_predict.py"
    out = subprocess.run([sys.executable, "-c", blocker, str(example), str(onnx_path), *images],
                         capture_output=True, text=True, check=True)
    theirs = [line.split(",") for line in out.stdout.splitlines()]
    predictor = Predictor("plain:1", providers="cpu", registry=Registry(exported["registry"]))
    ours = predictor.predict_files(images)
    assert [t[2] for t in theirs] == [r["label"] or "OUT_OF_SCOPE" for r in ours]
    assert [t[2] for t in theirs][:3] == ["OUT_OF_SCOPE"] * 3
    for t, r in zip(theirs, ours, strict=True):
        assert float(t[3]) == pytest.approx(r["gate_score"], rel=1e-4)


def test_serve_explain_and_evaluate_honour_the_gate(exported, inputs, tmp_path):
    from starlette.testclient import TestClient

    from pneumokit.inference.runtime import Predictor
    from pneumokit.inference.serve import create_app
    from pneumokit.registry.store import Registry

    predictor = Predictor("heat:1", providers="cpu", registry=Registry(exported["registry"]))
    with TestClient(create_app(predictor)) as client:
        assert client.get("/v1/model").json()["gate"] == {"state": "on", "threshold": 1.0}
        files = [("file", (n, (inputs / n).read_bytes())) for n in ("noise.png", "ct.dcm")]
        files.append(("file", ("good.jpeg", exported["images"][0].read_bytes())))
        r = client.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert [row["in_scope"] for row in rows] == [False, False, True]
    assert rows[0]["label"] is None and rows[1]["reason"].startswith("DICOM Modality is CT")

    out = run("explain", "heat:1", inputs / "noise.png", exported["images"][0], "--registry",
              exported["registry"], "--output", tmp_path / "ex", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["explanations"]
    assert rows[0]["in_scope"] is False and rows[0]["file"] is None and rows[1]["file"]
    keras = run("explain", "plain:1", inputs / "noise.png", "--registry", exported["registry"],
                "--output", tmp_path / "ex2", "--json", "--method", "grad-cam")
    assert keras.exit_code == 0, keras.output
    assert json.loads(keras.stdout)["explanations"][0]["in_scope"] is False

    data = tmp_path / "site"
    shutil.copytree(exported["data"], data)
    Image.fromarray(np.zeros((72, 72), np.uint8)).save(data / "test" / "NORMAL" / "IM-9999-0001.jpeg")
    out = run("evaluate", "heat:1", "--data", data, "--registry", exported["registry"], "--output",
              tmp_path / "ev", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["gate"]["state"] == "on" and report["gate"]["flagged"] >= 1
    assert np.asarray(report["at_threshold"]["confusion_matrix"]).sum() == report["gate"]["scored"]
    assert report["gate"]["scored"] + report["gate"]["flagged"] == report["images"]


@pytest.mark.parametrize("tags", [{"BodyPartExamined": "PORT CHEST"}, {"BodyPartExamined": "TORAX"},
                                  {"ViewPosition": ["PA", "AP"]}, {"ViewPosition": "AP ERECT"}])
def test_header_gate_reads_what_exports_write_for_a_frontal_chest(tmp_path, tags):
    path = write_dicom(tmp_path / "x.dcm", _gray(), tags=tags)
    assert read_image(str(path), 32)[0].shape == (32, 32)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, writing the over-long value on purpose
def test_header_values_in_reasons_are_one_printable_line(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", _gray(), tags={"ViewPosition": "PA LAT", "Modality": "DX"})
    with pytest.raises(OutOfScopeError, match="ViewPosition is PA LAT"):
        read_image(str(path), 32)
    path = write_dicom(tmp_path / "y.dcm", _gray(), tags={"BodyPartExamined": "KNEE\x1b[31m" + "X" * 200})
    with pytest.raises(OutOfScopeError) as caught:
        read_image(str(path), 32)
    assert "\x1b" not in str(caught.value) and len(str(caught.value)) < 200


def test_a_file_whose_gate_contract_was_removed_or_loosened_is_refused(exported, tmp_path):
    import onnx

    from pneumokit.errors import ModelFileError
    from pneumokit.inference.runtime import Predictor

    source = exported["registry"] / "plain" / "1" / "model.onnx"
    for label, change in (("removed", None), ("loosened", 1e30)):
        proto = onnx.load(str(source))
        props = {p.key: p.value for p in proto.metadata_props}
        gate_meta = json.loads(props.pop("pneumokit.gate"))
        if change is not None:
            props["pneumokit.gate"] = json.dumps({**gate_meta, "threshold": change})
        del proto.metadata_props[:]
        for key, value in props.items():
            proto.metadata_props.add(key=key, value=value)
        path = tmp_path / f"{label}.onnx"
        onnx.save(proto, str(path))
        with pytest.raises(ModelFileError, match="pneumokit.gate"):
            Predictor(path, providers="cpu")


def _strip(path, width, height):
    Image.new("L", (width, height), 128).save(path)
    return path


@pytest.mark.parametrize("size, said", [
    ((1, 1), "image is 1x1 pixels; a chest X-ray to score is at least 32 pixels a side"),
    ((31, 200), "image is 31x200 pixels; a chest X-ray to score is at least 32"),
    ((129, 32), "image is 129x32 pixels, a 4.03:1 strip; a chest X-ray is at most 4:1"),
])
def test_images_with_nothing_to_read_are_refused_from_the_header(tmp_path, size, said):
    with pytest.raises(OutOfScopeError, match=said):
        read_image(str(_strip(tmp_path / "s.png", *size)), 32)
    assert decode(str(tmp_path / "s.png"), 32).shape == (32, 32)  # the gate off: decoded as before
    assert read_image(str(_strip(tmp_path / "ok.png", 128, 32)), 32)[0].shape == (32, 32)  # 4:1 exactly


def test_a_long_strip_is_refused_before_its_pixels_are_decoded(tmp_path, monkeypatch):
    """Issue 24, row 6: an 89,000,000x1 PNG (its file is small) is refused by its header."""
    path = _strip(tmp_path / "long.png", 89_000_000, 1)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(OutOfScopeError, match="image is 89000000x1 pixels"):
        read_image(str(path), 32)
    assert decoded == []


def test_a_dicom_strip_is_refused_by_its_header(tmp_path):
    with pytest.raises(OutOfScopeError, match="image is 300x20 pixels"):
        read_image(str(write_dicom(tmp_path / "s.dcm", np.full((20, 300), 90, np.uint8))), 32)


def test_transparent_images_are_refused_and_opaque_alpha_is_not(tmp_path):
    """Issue 24, row 15: what a transparent pixel hides is not read as if it were shown."""
    gray = _gray()
    hidden = np.dstack([gray, gray, gray, np.zeros_like(gray)])
    Image.fromarray(hidden, "RGBA").save(tmp_path / "clear.png")
    with pytest.raises(OutOfScopeError, match=r"transparent pixels \(100% of them, 100% fully\)"):
        read_image(str(tmp_path / "clear.png"), None)
    assert decode(str(tmp_path / "clear.png"), None).max() == 0  # gate off: flattened onto black
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)]), "RGBA").save(tmp_path / "o.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "o.png"), None)[0], gray)
    Image.fromarray(np.dstack([gray, np.full_like(gray, 128)]), "LA").save(tmp_path / "la.png")
    with pytest.raises(OutOfScopeError, match=r"transparent pixels \(100% of them, 0% fully\)"):
        read_image(str(tmp_path / "la.png"), None)


def test_number_of_frames_0_is_a_note_not_a_pydicom_warning(tmp_path):
    """Issue 24, row 11: pydicom would warn and assume one frame; the row says so instead."""
    import warnings

    path = write_dicom(tmp_path / "f.dcm", _gray(), tags={"NumberOfFrames": 0})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pixels, notes = read_image(str(path), None)
    assert [str(w.message) for w in seen] == []
    assert "DICOM NumberOfFrames is 0 (invalid): read as 1 frame" in notes
    np.testing.assert_array_equal(pixels, _gray())


def test_predict_gives_no_label_to_tiny_long_and_transparent_images(exported, tmp_path):
    Image.new("L", (1, 1), 0).save(tmp_path / "one.png")
    _strip(tmp_path / "long.png", 89_000_000, 1)
    test = np.asarray(Image.open(exported["images"][0]).convert("L"))
    Image.fromarray(np.dstack([test] * 3 + [np.zeros_like(test)]), "RGBA").save(tmp_path / "clear.png")
    write_dicom(tmp_path / "frames0.dcm", test, tags={"NumberOfFrames": 0})
    out = subprocess.run([sys.executable, "-m", "pneumokit.cli", "predict", "heat:1", str(tmp_path),
                          "--registry", str(exported["registry"]), "--json"], capture_output=True, text=True,
                         timeout=300)
    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)["predictions"]}
    for name in ("one.png", "long.png", "clear.png"):
        assert rows[name]["label"] is None and rows[name]["in_scope"] is False, rows[name]
    assert "Warning" not in out.stderr and "pydicom" not in out.stderr, out.stderr
    frames0 = rows["frames0.dcm"]
    assert "NumberOfFrames is 0 (invalid): read as 1 frame" in frames0["notes"], frames0
