"""pneumokit serve: the JSON API (in process, Starlette's TestClient) and the real server process."""

import io
import os
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_dicom import write_dicom
from helpers_serve import get_json, served
from PIL import Image
from starlette.testclient import TestClient

from pneumokit.inference.runtime import Predictor
from pneumokit.inference.serve import create_app
from pneumokit.registry.store import Registry, sha256_file


@pytest.fixture(scope="module")
def predictor(exported):
    return Predictor("heat:1", providers="cpu", registry=Registry(exported["registry"]))


@pytest.fixture(scope="module")
def client(predictor):
    return TestClient(create_app(predictor, max_upload_mb=0.5, max_files=4))


def files_of(paths):
    return [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_health_and_model(client, predictor):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["ref"] == "heat:1" and info["threshold"] == predictor.threshold and info["heatmap"] is True
    assert info["sha256"] == sha256_file(predictor.path)
    assert info["input"]["height"] == 64 and info["class_names"] == ["NORMAL", "PNEUMONIA"]


def test_predict_multipart_equals_the_predictor(client, predictor, exported):
    images = exported["images"][:3]
    r = client.post("/v1/predict", files=files_of(images))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "heat:1" and body["threshold"] == predictor.threshold
    want = predictor.predict_files(images)
    assert [x["file"] for x in body["results"]] == [p.name for p in images]
    assert [x["probability"] for x in body["results"]] == [w["probability"] for w in want]
    assert [x["label"] for x in body["results"]] == [w["label"] for w in want]
    assert all(x["error"] is None and "heatmap" not in x for x in body["results"])


def test_heatmap_query_adds_the_maps(client, predictor, exported):
    images = exported["images"][:2]
    body = client.post("/v1/predict?heatmap=1", files=files_of(images)).json()
    want = predictor.predict_files(images, heatmap=True)
    for got, w in zip(body["results"], want, strict=True):
        heat = np.asarray(got["heatmap"])
        assert heat.shape == (2, 2) and heat.min() >= 0 and heat.max() <= 1
        np.testing.assert_allclose(heat, w["heatmap"], atol=1e-4)


def test_raw_body_jpeg_and_dicom(client, predictor, exported, tmp_path):
    image = exported["images"][0]
    r = client.post("/v1/predict", content=image.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["results"][0]["file"] == "body"
    want = predictor.predict_files([image])[0]["probability"]
    assert r.json()["results"][0]["probability"] == want
    gray = np.asarray(Image.open(image).convert("L"))
    dcm = write_dicom(tmp_path / "x.dcm", gray, bits=16, monochrome1=True)
    r = client.post("/v1/predict", content=dcm.read_bytes(), headers={"Content-Type": "application/dicom"})
    assert r.status_code == 200, r.text
    # the JPEG's own decoded pixels, stored losslessly as DICOM: the same input, up to the
    # JPEG decode (Pillow, same libjpeg): equal within float rounding
    assert abs(r.json()["results"][0]["probability"] - want) < 1e-5


@pytest.mark.parametrize("body,headers,status,words", [
    (b"", {"Content-Type": "image/jpeg"}, 400, "empty request body"),
    (b"hello", {"Content-Type": "text/plain"}, 415, "content type 'text/plain' is not accepted"),
    (b"hello", {"Content-Type": "image/jpeg"}, 422, "content is not a recognised image format"),
    (b"x" * 600_000, {"Content-Type": "image/jpeg"}, 413, "over the upload limit of 0.5 MB"),
    (b"--b\r\nbroken", {"Content-Type": "multipart/form-data; boundary=b"}, 400,
     "the form has no file parts"),
])
def test_bad_uploads_get_a_4xx_naming_the_problem(client, body, headers, status, words):
    r = client.post("/v1/predict", content=body, headers=headers)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert client.get("/health").status_code == 200  # and it keeps serving


def test_bad_files_in_a_form(client, exported):
    good = exported["images"][0]
    truncated = good.read_bytes()[:300]
    r = client.post("/v1/predict", files=[("file", ("cut.jpeg", truncated, "image/jpeg")),
                                          ("file", ("empty.png", b"", "image/png")),
                                          *files_of([good])])
    assert r.status_code == 200
    cut, empty, ok = r.json()["results"]
    assert cut["label"] is None and "cut.jpeg" == cut["file"] and cut["error"]
    assert empty["error"] == "empty file (0 bytes)" and ok["label"] in ("NORMAL", "PNEUMONIA")
    r = client.post("/v1/predict", files=[("file", ("cut.jpeg", truncated, "image/jpeg"))])
    assert r.status_code == 422 and r.json()["error"].startswith("no file could be scored: cut.jpeg: ")
    r = client.post("/v1/predict", files=files_of([good] * 5))
    assert r.status_code == 400 and "at most 4 files" in r.json()["error"]
    r = client.post("/v1/predict", data={"file": "not a file"}, files=[])
    assert r.status_code in (400, 415)


def test_streamed_body_over_the_limit_is_413_without_a_length(client):
    def chunks():
        for _ in range(10):
            yield b"y" * 100_000

    r = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413


def test_heatmap_query_on_a_model_without_one(exported):
    plain = Predictor("plain:1", providers="cpu", registry=Registry(exported["registry"]))
    r = TestClient(create_app(plain)).post("/v1/predict?heatmap=1", files=files_of(exported["images"][:1]))
    assert r.status_code == 400 and "--heatmap" in r.json()["error"]


def test_page_is_served_and_needs_nothing_from_elsewhere(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/v1/predict" in r.text and "http://" not in r.text and "https://" not in r.text


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the server's /proc/PID/maps (Linux)")
def test_the_server_process_has_no_tensorflow_and_answers(exported):
    with served("heat:1", "--registry", exported["registry"]) as (url, proc):
        with open(f"/proc/{proc.pid}/maps") as f:
            maps = f.read()
        assert "onnxruntime" in maps and "tensorflow" not in maps
        assert get_json(url + "/v1/model")["ref"] == "heat:1"
        image = exported["images"][0]
        req = urllib.request.Request(url + "/v1/predict", data=image.read_bytes(),
                                     headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200


def test_several_workers_serve(exported):
    with served("heat:1", "--registry", exported["registry"], "--workers", "2") as (url, _):
        for _ in range(4):
            assert get_json(url + "/v1/model")["heatmap"] is True


def test_serve_bad_model_or_busy_port_is_one_line(exported):
    from pneumokit.cli import main

    out = CliRunner().invoke(main, ["serve", "nosuch:1", "--registry", str(exported["registry"])])
    assert out.exit_code == 1 and out.output.startswith("Error: ") and "Traceback" not in out.output
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = CliRunner().invoke(main, ["serve", "heat:1", "--registry", str(exported["registry"]),
                                        "--port", str(port)])
    assert out.exit_code == 1 and "cannot listen there" in out.output and "--port" in out.output


def test_jpeg_bytes_and_files_decode_alike(exported):
    from pneumokit.data.preprocessing import decode

    image = exported["images"][0]
    assert np.array_equal(decode(image, 64), decode(io.BytesIO(image.read_bytes()).getvalue(), 64))


# --- found by a hostile pass -------------------------------------------------------------------

def _broken_dicom(tmp_path, image, **values):
    import pydicom
    from pydicom.datadict import dictionary_VR

    gray = np.asarray(Image.open(image).convert("L"))
    path = write_dicom(tmp_path / "x.dcm", gray)
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        if key not in ds:
            ds.add_new(key, dictionary_VR(key), None)
        ds[key]._value = value
    ds.save_as(tmp_path / "broken.dcm")
    return tmp_path / "broken.dcm"


@pytest.mark.parametrize("values", [{"WindowCenter": "abc"}, {"NumberOfFrames": "x"},
                                    {"RescaleSlope": "zz", "RescaleIntercept": "0"}])
def test_a_damaged_dicom_header_is_a_per_file_error(client, exported, tmp_path, values):
    from pneumokit.cli import main

    bad = _broken_dicom(tmp_path, exported["images"][0], **values)
    good = exported["images"][0]
    r = client.post("/v1/predict", files=[("file", ("broken.dcm", bad.read_bytes(), "application/dicom")),
                                          *files_of([good])])
    assert r.status_code == 200, r.text
    broken, ok = r.json()["results"]
    assert "DICOM" in broken["error"] and ok["label"] is not None
    out = CliRunner().invoke(main, ["predict", "heat:1", str(bad), "--registry", str(exported["registry"])])
    assert out.exit_code == 1 and "Traceback" not in out.output and "bug" not in out.output


def test_dicom_pixel_limit_is_read_from_the_header(exported, tmp_path, monkeypatch):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from pneumokit.data.preprocessing import decode
    from pneumokit.errors import ImageDecodeError

    gray = np.asarray(Image.open(exported["images"][0]).convert("L"))
    plain = write_dicom(tmp_path / "p.dcm", gray)
    deflated = write_dicom(tmp_path / "d.dcm", gray, syntax=DeflatedExplicitVRLittleEndian)
    assert decode(deflated, 16).shape == (16, 16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a few pixels: both are now "bombs"
    with pytest.raises(ImageDecodeError, match="megapixels, over the limit"):
        decode(plain, 16)
    import pneumokit.data.dicom as dicom

    monkeypatch.setattr(dicom, "HEADER_ALLOWANCE", 0)  # 100 pixels: 200 bytes may inflate
    with pytest.raises(ImageDecodeError, match="deflated DICOM that inflates to more than"):
        decode(deflated, 16)


@pytest.mark.parametrize("query", ["heatmap=2", "heatmap=", "heatmap=on"])
def test_bad_heatmap_values_are_400(client, exported, query):
    r = client.post(f"/v1/predict?{query}", files=files_of(exported["images"][:1]))
    assert r.status_code == 400 and "use heatmap=1 or heatmap=0" in r.json()["error"]


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/predict", 405), ("POST", "/", 405),
                                                  ("GET", "/nowhere", 404)])
def test_unknown_paths_and_methods_answer_in_json(client, method, path, status):
    r = client.request(method, path)
    assert r.status_code == status and "the API is GET /health" in r.json()["error"]


def test_an_unregistered_copy_reports_no_ref(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy.onnx"
    shutil.copy(exported["registry"] / "heat" / "1" / "model.onnx", copy)
    info = TestClient(create_app(Predictor(copy, providers="cpu"))).get("/v1/model").json()
    assert info["ref"] is None and info["exported_as"] == "heat:1"


def test_at_most_max_concurrent_requests_are_scored_at_once(predictor, exported):
    import threading
    import time

    import anyio
    import httpx2

    active, peak, lock = [0], [0], threading.Lock()
    real = predictor.predict_sources

    def slow(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        return real(*args, **kwargs)

    body = exported["images"][0].read_bytes()
    for limit in (1, 3):
        predictor.predict_sources, peak[0] = slow, 0
        app = create_app(predictor, max_concurrent=limit)

        async def main(app=app):
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as c:
                async def post():
                    r = await c.post("/v1/predict", content=body, headers={"Content-Type": "image/jpeg"})
                    assert r.status_code == 200

                async with anyio.create_task_group() as tg:
                    for _ in range(6):
                        tg.start_soon(post)
        try:
            anyio.run(main)
        finally:
            del predictor.predict_sources
        assert peak[0] == limit


def test_serve_option_errors_are_usage_errors(exported):
    from pneumokit.cli import main

    reg = ["--registry", str(exported["registry"])]
    out = CliRunner().invoke(main, ["serve", "heat:1", *reg, "--max-upload-mb", "nan"])
    assert out.exit_code == 2 and "'nan' is not a number" in out.output.replace("nan is", "'nan' is")
    out = CliRunner().invoke(main, ["serve", "heat:1", *reg, "--host", ""])
    assert out.exit_code == 1 and "--host '': give an address" in out.output


def test_model_info_shows_no_server_path_and_a_repeated_query_is_400(client, exported):
    info = client.get("/v1/model").json()
    assert info["file"] == "model.onnx" and os.sep not in info["file"]
    r = client.post("/v1/predict?heatmap=1&heatmap=0", files=files_of(exported["images"][:1]))
    assert r.status_code == 400 and "heatmap given 2 times" in r.json()["error"]


def test_a_port_just_left_in_time_wait_can_be_served_again():
    """A stopped server's port is in TIME_WAIT after it closed a connection first: the address
    check binds with SO_REUSEADDR, as uvicorn does, so a restart works at once (issue 24, row 7)."""
    import socket

    from pneumokit.inference.serve import _check_address

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    listener.close()
    client.close()
    plain = socket.socket()
    with pytest.raises(OSError):  # the check can fail: without SO_REUSEADDR the port is busy
        plain.bind(("127.0.0.1", port))
    plain.close()
    _check_address("127.0.0.1", port)
