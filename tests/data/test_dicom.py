"""DICOM input (pneumokit/data/dicom.py): files built with pydicom from the bundled real X-rays must
decode to the very pixels of the JPEG they came from, and so score the same."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import tiny_onnx
from helpers_dicom import write_dicom

from pneumokit.cli import main
from pneumokit.core.config import DEMO_DATA_DIR
from pneumokit.data.preprocessing import decode
from pneumokit.errors import ImageDecodeError
from pneumokit.inference.runtime import Predictor

XRAYS = sorted((DEMO_DATA_DIR / "train" / "PNEUMONIA").glob("*.jpeg"))[:2] + \
    sorted((DEMO_DATA_DIR / "train" / "NORMAL").glob("*.jpeg"))[:2]
VARIANTS = {"16-bit MONOCHROME2": {}, "16-bit MONOCHROME1": {"monochrome1": True}, "8-bit": {"bits": 8},
            "rescale slope/intercept": {"slope": 2.57, "intercept": -100.0}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dicom_decodes_to_the_pixels_of_its_source(tmp_path, variant):
    for jpeg in XRAYS:
        gray = decode(str(jpeg), None)
        dcm = write_dicom(tmp_path / f"{jpeg.stem}.dcm", gray, **VARIANTS[variant])
        assert np.array_equal(decode(str(dcm), None), gray)
        assert np.array_equal(decode(str(dcm), 64), decode(str(jpeg), 64))


@pytest.mark.parametrize("syntax", ["JPEGLSLossless", "RLELossless"])
def test_a_losslessly_compressed_dicom_decodes_to_its_source(tmp_path, syntax):
    """JPEG-LS is decoded by pyjpegls (CharLS), which highdicom installs; RLE by pydicom."""
    import pydicom
    import pydicom.uid

    gray = decode(str(XRAYS[0]), None)
    dcm = write_dicom(tmp_path / "x.dcm", gray)
    ds = pydicom.dcmread(dcm)
    ds.compress(getattr(pydicom.uid, syntax))
    ds.save_as(dcm)
    assert pydicom.dcmread(dcm).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    assert np.array_equal(decode(str(dcm), None), gray)


def test_dicom_scores_as_the_jpeg_it_came_from(tmp_path):
    predictor = Predictor(tiny_onnx(tmp_path / "m.onnx", size=64))
    jpegs, dicoms = [], []
    for i, jpeg in enumerate(XRAYS):
        dicoms.append(write_dicom(tmp_path / f"{i}.dcm", decode(str(jpeg), None),
                                  monochrome1=bool(i % 2)))
        jpegs.append(jpeg)
    a = [r["probability"] for r in predictor.predict_files(jpegs)]
    b = [r["probability"] for r in predictor.predict_files(dicoms)]
    np.testing.assert_allclose(a, b, atol=1e-7)  # identical pixels: identical scores


def test_without_a_window_the_image_range_is_used(tmp_path):
    gray = decode(str(XRAYS[0]), None)
    dcm = write_dicom(tmp_path / "x.dcm", gray, window=False)
    expected = np.rint((gray - gray.min()) / (gray.max() - gray.min()) * 255).astype(np.uint8)
    assert np.abs(decode(str(dcm), None).astype(int) - expected).max() <= 1


def test_compressed_dicom_without_codec_and_misnamed_dicom_are_named(tmp_path):
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    path = write_dicom(tmp_path / "c.dcm", decode(str(XRAYS[0]), 32))
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match="compressed DICOM .*JPEG 2000.*pip install pylibjpeg"):
        decode(str(path), 32)
    misnamed = tmp_path / "x.jpeg"
    shutil.copy(write_dicom(tmp_path / "y.dcm", decode(str(XRAYS[0]), 32)), misnamed)
    with pytest.raises(ImageDecodeError, match="content is DICOM: name the file .dcm"):
        decode(str(misnamed), 32)


def test_data_check_and_predict_read_dicom(tmp_path):
    for split_class, jpeg in (("NORMAL", XRAYS[2]), ("PNEUMONIA", XRAYS[0])):
        folder = tmp_path / "data" / "train" / split_class
        folder.mkdir(parents=True)
        write_dicom(folder / f"{jpeg.stem}.dcm", decode(str(jpeg), None), monochrome1=True)
    check = CliRunner().invoke(main, ["data", "check", str(tmp_path / "data"), "--json"])
    report = json.loads(check.stdout)
    assert check.exit_code == 0 and report["images"] == 2
    assert report["modes"] == {"DICOM MONOCHROME1 16-bit": 2}
    model = tiny_onnx(tmp_path / "m.onnx", size=64)
    result = CliRunner().invoke(main, ["predict", str(model), str(tmp_path / "data"), "--json"])
    rows = json.loads(result.stdout)["predictions"]
    assert result.exit_code == 0 and [Path(r["path"]).suffix for r in rows] == [".dcm", ".dcm"]


def test_train_on_a_dicom_dataset(tmp_path):
    from helpers import make_dataset
    from PIL import Image

    data = make_dataset(tmp_path / "jpeg", per_class=10, size=40)
    for jpeg in list(data.rglob("*.jpeg")):
        write_dicom(jpeg.with_suffix(".dcm"), np.asarray(Image.open(jpeg).convert("L")))
        jpeg.unlink()
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--epochs", "1", "--image-size", "32",
                                       "--batch-size", "8", "--augment", "crop", "--val-fraction", "0.25",
                                       "--registry", str(tmp_path / "reg"), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ref"] == "cnn_optimized:1"


@pytest.mark.parametrize("group_length", [False, True])
def test_a_deflate_bomb_is_refused_whatever_its_file_meta_says(tmp_path, group_length):
    """Issue 24, row 2: a 0.5 MB deflated file that inflates to 512 MB, with and without the
    optional group length, is refused after inflating in 1 MB pieces (peak memory of a normal
    decode), in a fresh process so the peak is this decode's."""
    from helpers_dicom import deflate_bomb

    bomb = deflate_bomb(tmp_path / "bomb.dcm", 512, group_length)
    assert bomb.stat().st_size < 2_000_000
    probe = ("import resource, sys\n"
             "from pneumokit.data.preprocessing import decode\n"
             "from pneumokit.errors import ImageDecodeError\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    decode(sys.argv[1], 224)\n    print('decoded')\n"
             "except ImageDecodeError as exc:\n    print(exc)\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True,
                          timeout=120)
    message, grown_mb = done.stdout.strip().splitlines()
    assert "deflated DICOM that inflates to more than" in message, done.stdout + done.stderr
    assert int(grown_mb) < 100, f"peak memory grew by {grown_mb} MB"


def test_a_file_meta_without_group_length_still_reads(tmp_path):
    """The element walk finds the dataset of an ordinary file without (0002,0000)."""
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    data = write_dicom(tmp_path / "a.dcm", gray).read_bytes()
    stripped = tmp_path / "b.dcm"
    stripped.write_bytes(data[:132] + data[144:])
    np.testing.assert_array_equal(decode(stripped, None), gray)
