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

from pneumokit.registry import Registry, sha256_file
from pneumokit.runtime import Predictor
from pneumokit.serve import create_app


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


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
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
    from pneumokit.preprocessing import decode

    image = exported["images"][0]
    assert np.array_equal(decode(image, 64), decode(io.BytesIO(image.read_bytes()).getvalue(), 64))
