"""Failure paths of inference (issue 10): bad ONNX files, bad images, odd files. Each test
reproduces one defect found by a hostile pass; none needs TensorFlow or a trained model."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import tiny_onnx
from PIL import Image

from pneumokit.cli import main
from pneumokit.data.preprocessing import decode
from pneumokit.errors import DeviceError, ImageDecodeError, IntegrityError, ModelFileError
from pneumokit.inference.runtime import Predictor
from pneumokit.registry.store import Registry


def one_line_error(result, *needles):
    """The CLI failed with exit 1 and one 'Error:' line holding every needle, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(path)
    return path


# 1. A NaN probability is never a label -------------------------------------------------

@pytest.mark.parametrize("key, value, needle", [
    ("pneumokit.preprocessing", {**json.loads(json.dumps({"x": 0})), "bad": 1}, "pneumokit.preprocessing"),
    ("pneumokit.threshold", "nan", "pneumokit.threshold"),
    ("pneumokit.threshold", "1.5", "pneumokit.threshold"),
    ("pneumokit.class_names", ["NORMAL"], "pneumokit.class_names"),
    ("pneumokit.input", {"name": "pixels"}, "pneumokit.input"),
    ("pneumokit.class_names", None, "missing"),
])
def test_invalid_contract_is_refused_on_open_naming_the_key(tmp_path, key, value, needle):
    path = tiny_onnx(tmp_path / "m.onnx", props={key: value})
    with pytest.raises(ModelFileError, match=needle):
        Predictor(path)


@pytest.mark.parametrize("change, needle", [
    ({"mean": "5"}, "mean '5'"), ({"scale": True}, "scale True"), ({"jpeg_draft": "false"}, "jpeg_draft"),
    ({"height": 8.5}, "height 8.5"), ({"height": 60000, "width": 60000}, "1..4096"),
    ({"width": 10}, "square input"),
])
def test_preprocessing_fields_are_type_checked_not_cast(tmp_path, change, needle):
    from pneumokit.data.preprocessing import Preprocessing

    pre = {**Preprocessing.from_preset("unit", 8, 1).to_dict(), **change}
    with pytest.raises(ModelFileError, match=needle):
        Predictor(tiny_onnx(tmp_path / "m.onnx", props={"pneumokit.preprocessing": pre}))


def test_input_metadata_must_agree_with_the_preprocessing(tmp_path):
    spec = {"name": "image", "layout": "NHWC", "height": 64, "width": 8, "channels": 1, "dtype": "float32"}
    with pytest.raises(ModelFileError, match="pneumokit.input says"):
        Predictor(tiny_onnx(tmp_path / "m.onnx", props={"pneumokit.input": spec}))


@pytest.mark.parametrize("graph, needle", [
    ({"out_type": 7}, "tensor\\(int64\\)"), ({"out_type": 9}, "tensor\\(bool\\)"),
    ({"batch": 1}, "dynamic batch"), ({"extra_input": True}, "2 inputs"),
])
def test_graphs_that_break_the_contract_are_refused_on_open(tmp_path, graph, needle):
    with pytest.raises(ModelFileError, match=needle):
        Predictor(tiny_onnx(tmp_path / "m.onnx", **graph))


def test_folders_are_expanded_through_links_once(tmp_path, image):
    from pneumokit.inference.runtime import expand_inputs

    for folder, name in (("in/real", "a.png"), ("outside", "b.png")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / name).write_bytes(image.read_bytes())
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "outside")  # was silently skipped
    (tmp_path / "in" / "real" / "loop").symlink_to(tmp_path / "in")  # must not loop
    assert sorted(p.name for p in expand_inputs([tmp_path / "in"])) == ["a.png", "b.png"]


def test_predict_output_never_overwrites_an_input_or_a_version(tmp_path, image):
    model = tiny_onnx(tmp_path / "m.onnx")
    for target in (image, model, tmp_path / "x.jpeg"):
        one_line_error(CliRunner().invoke(main, ["predict", str(model), str(image), "--output", str(target)]),
                       "would overwrite an image or model")
    version = tmp_path / "reg" / "m" / "1"
    version.mkdir(parents=True)
    (version / "metadata.json").write_text("{}")
    (version / "model.keras").write_bytes(b"k")
    one_line_error(CliRunner().invoke(main, ["predict", str(model), str(image), "--output",
                                             str(version / "p.csv")]), "immutable")
    assert image.read_bytes()[:4] == b"\x89PNG"


def test_zero_std_in_metadata_is_refused(tmp_path, image):
    from pneumokit.data.preprocessing import Preprocessing

    pre = {**Preprocessing.from_preset("unit", 8, 1).to_dict(), "std": [0.0]}
    path = tiny_onnx(tmp_path / "m.onnx", props={"pneumokit.preprocessing": pre})
    result = CliRunner().invoke(main, ["predict", str(path), str(image)])
    one_line_error(result, "pneumokit.preprocessing", "std [0.0]")


def test_metadata_sizes_must_match_the_graph(tmp_path):
    from pneumokit.data.preprocessing import Preprocessing

    pre = Preprocessing.from_preset("unit", 16, 1).to_dict()  # the graph takes 8x8
    spec = {"name": "image", "height": 16, "width": 16, "channels": 1}
    path = tiny_onnx(tmp_path / "m.onnx", props={"pneumokit.preprocessing": pre, "pneumokit.input": spec})
    with pytest.raises(ModelFileError, match="graph's input"):
        Predictor(path)


def test_non_finite_output_is_an_error_row_and_exit_1(tmp_path, image):
    path = tiny_onnx(tmp_path / "nan.onnx", nan=True)
    rows = Predictor(path).predict_files([image])
    assert rows[0]["label"] is None and rows[0]["probability"] is None
    assert "not a probability" in rows[0]["error"]
    result = CliRunner().invoke(main, ["predict", str(path), str(image), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["predictions"][0]["label"] is None


def test_onnx_in_a_version_folder_is_checked_by_path_too(tmp_path, image):
    reg = Registry(tmp_path / "reg")
    mv = reg.save("m", _FakeModel(), {"threshold": 0.5})
    good = tiny_onnx(tmp_path / "good.onnx").read_bytes()
    mv = reg.add_artifacts(mv.ref, {"model.onnx": good})
    assert Predictor(mv.path / "model.onnx").threshold == 0.5  # intact: accepted by path
    data = bytearray(good)
    data[-40] ^= 0xFF  # one flipped byte
    (mv.path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        Predictor(mv.path / "model.onnx")


def test_python_api_threshold_must_be_a_probability(tmp_path, image):
    predictor = Predictor(tiny_onnx(tmp_path / "m.onnx"))
    for bad in (float("nan"), -0.1, 2):
        with pytest.raises(ValueError, match="threshold"):
            predictor.predict_files([image], threshold=bad)


# 10. Only JPEG and PNG are decoded; a refused file's real format is named ---------------

def test_other_formats_are_refused_by_name(tmp_path):
    eps = tmp_path / "scan.jpeg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageDecodeError, match="content is EPS"):
        decode(str(eps), 8)
    bmp = tmp_path / "scan.png"
    Image.new("L", (10, 10)).save(bmp, format="BMP")
    with pytest.raises(ImageDecodeError, match="content is BMP.*convert it to JPEG or PNG"):
        decode(str(bmp), 8)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty file \(0 bytes\)"):
        decode(str(empty), 8)
    junk = tmp_path / "junk.jpeg"
    junk.write_bytes(b"hello")
    with pytest.raises(ImageDecodeError, match="not a recognised image format"):
        decode(str(junk), 8)


# 11. Only regular files are read: a FIFO never blocks, links are reported as such -------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_link_loop_are_reported_without_hanging(tmp_path, image):
    model = tiny_onnx(tmp_path / "m.onnx")
    fifo = tmp_path / "pipe.jpeg"
    os.mkfifo(fifo)
    loop_a, loop_b = tmp_path / "a.jpeg", tmp_path / "b.jpeg"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    dangling = tmp_path / "gone.jpeg"
    dangling.symlink_to(tmp_path / "nowhere.jpeg")
    # A subprocess with a timeout: if reading the FIFO blocked, the test fails instead of hanging.
    code = ("import sys, json; from click.testing import CliRunner; from pneumokit.cli import main; "
            "r = CliRunner().invoke(main, sys.argv[1:]); print(r.exit_code); print(r.stdout)")
    done = subprocess.run([sys.executable, "-c", code, "predict", str(model), str(fifo), str(loop_a),
                           str(dangling), str(image), "--json"],
                          capture_output=True, text=True, timeout=120)
    exit_code, _, out = done.stdout.partition("\n")
    rows = {Path(r["path"]).name: r for r in json.loads(out)["predictions"]}
    assert exit_code == "1"
    assert "FIFO" in rows["pipe.jpeg"]["error"]
    assert "symbolic link loop" in rows["a.jpeg"]["error"]
    assert "dangling symbolic link" in rows["gone.jpeg"]["error"]
    assert rows["x.png"]["label"] in ("NORMAL", "PNEUMONIA")


# 12. One line instead of a traceback ---------------------------------------------------

def test_malformed_or_missing_onnx_files_are_one_line(tmp_path, image):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    one_line_error(CliRunner().invoke(main, ["predict", str(junk), str(image)]),
                   str(junk), "onnxruntime cannot load it")
    missing = tmp_path / "absent.onnx"
    one_line_error(CliRunner().invoke(main, ["predict", str(missing), str(image)]),
                   str(missing), "no such file")  # not "invalid model name"


def test_cuda_provider_without_cuda_is_one_line(tmp_path, image):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeviceError):
        Predictor(tiny_onnx(tmp_path / "m.onnx"), providers="cuda")
    one_line_error(CliRunner().invoke(main, ["predict", str(tmp_path / "m.onnx"), str(image),
                                             "--providers", "cuda"]), "CUDAExecutionProvider")


def test_predict_output_into_a_missing_folder_fails_before_scoring(tmp_path, image, monkeypatch):
    import pneumokit.inference.runtime as runtime

    model = tiny_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr(runtime.Predictor, "predict_files", _never)
    target = tmp_path / "no" / "such" / "folder" / "p.csv"
    one_line_error(CliRunner().invoke(main, ["predict", str(model), str(image), "--output", str(target)]),
                   "does not exist")


def test_a_bug_keeps_its_traceback_and_says_so(tmp_path, image, monkeypatch):
    import pneumokit.inference.runtime as runtime

    monkeypatch.setattr(runtime.Predictor, "predict_files", lambda *a, **k: 1 / 0)
    result = CliRunner().invoke(main, ["predict", str(tiny_onnx(tmp_path / "m.onnx")), str(image)])
    assert result.exit_code == 1
    assert "ZeroDivisionError" in result.output and "this is a bug in pneumokit" in result.output


# 15. Too many pixels: a clear per-file message, not Pillow's warning ------------------

@pytest.mark.parametrize("side", [120, 200])  # between the limit and twice it; over twice it
def test_decompression_bomb_is_a_clear_per_file_error(tmp_path, monkeypatch, side):
    from PIL import Image as PILImage

    path = tmp_path / "huge.png"
    PILImage.new("L", (side, side)).save(path)
    # A fresh interpreter, with a program's default warning filters (pytest changes them here).
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 10_000; "
            "from pneumokit.data.preprocessing import decode\n"
            "try: decode(sys.argv[1], 8)\nexcept ValueError as e: print(e)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert "megapixels" in done.stdout and "MAX_IMAGE_PIXELS" in done.stdout and "downscale" in done.stdout
    assert "DecompressionBombWarning" not in done.stderr  # no raw Pillow warning
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10_000)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")  # refused even where a program shows every warning
        with pytest.raises(ImageDecodeError, match="0.0144 megapixels|0.04 megapixels"):
            decode(str(path), 8)


class _FakeModel:
    def save(self, path):
        Path(path).write_bytes(b"weights")


def _never(*args, **kwargs):
    raise AssertionError("scored before checking --output")
