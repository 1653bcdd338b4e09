"""Golden self-test vectors: stored at export, re-scored by `registry verify --run`, and by another
runtime with docs/examples/golden_check.py."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import numpy_helper

from pneumokit.cli import main
from pneumokit.data.preprocessing import Preprocessing
from pneumokit.registry.golden import VECTORS
from pneumokit.registry.store import METADATA_FILE, Registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "golden_check.py"
BLOCKER = ("import sys, runpy; sys.modules['pneumokit'] = None; sys.modules['tensorflow'] = None; "
           "sys.modules['keras'] = None; sys.argv = sys.argv[1:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")


def copied(exported, tmp_path) -> Path:
    shutil.copytree(exported["registry"], tmp_path / "registry")
    return tmp_path / "registry"


def rerecord(mv, rel: str) -> None:
    """Update the sha256 of ``rel`` in metadata.json, as someone covering their tracks would."""
    meta = json.loads((mv.path / METADATA_FILE).read_text())
    meta["artifacts"][rel] = hashlib.sha256((mv.path / rel).read_bytes()).hexdigest()
    (mv.path / METADATA_FILE).write_text(json.dumps(meta))


def test_export_stores_golden_vectors_that_replay(exported):
    mv = Registry(exported["registry"]).get("heat:1")
    record = mv.metadata["golden"]
    assert len(record["vectors"]) == 5 and record["tolerance"] == mv.metadata["onnx"]["parity"]["tolerance"]
    expected = json.loads(mv.verify("golden/expected.json").read_text())
    with np.load(mv.verify(VECTORS)) as npz:
        assert set(npz.files) == {"input", "probability", "gate", "heatmap"}
        x = npz["input"]
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    for v in expected["vectors"]:
        source = mv.verify(f"golden/{v['file']}")  # recorded with a sha256 like every artifact
        assert np.array_equal(pre.prepare([source])[0], x[v["index"]])
        assert {"probability", "gate", "in_scope", "heatmap_checksum"} <= set(v)
    assert expected["vectors"][-1]["file"].startswith("05-inverted-")
    out = CliRunner().invoke(main, ["registry", "verify", "heat:1", "--run", "--registry",
                                    str(exported["registry"])])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "heat:1: ok (5 golden vectors re-scored)"


def test_verify_run_names_the_vector_when_the_weights_change(exported, tmp_path):
    registry = copied(exported, tmp_path)
    mv = Registry(registry).get("plain:1")
    model = onnx.load(mv.path / "model.onnx")
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    changed = numpy_helper.to_array(weights) * np.float32(1.05)
    weights.CopyFrom(numpy_helper.from_array(changed, weights.name))
    onnx.save(model, mv.path / "model.onnx")
    rerecord(mv, "model.onnx")
    plain = CliRunner().invoke(main, ["registry", "verify", "plain:1", "--registry", str(registry)])
    assert plain.exit_code == 0, plain.output  # the sha256 record matches: only running it tells
    out = CliRunner().invoke(main, ["registry", "verify", "plain:1", "--run", "--registry", str(registry)])
    assert out.exit_code == 1
    problems = out.stdout.splitlines()[1:]
    assert problems and all(re.search(r"golden vector \d \((0\d-[\w.-]+\.png)\)", p) for p in problems)
    assert "the file no longer scores as it did at export" in out.stdout
    report = json.loads(CliRunner().invoke(main, ["registry", "verify", "plain:1", "--run", "--json",
                                                  "--registry", str(registry)]).stdout)
    assert report[0]["problems"] and all("golden vector" in p for p in report[0]["problems"])


def test_verify_run_catches_preprocessing_drift(exported, tmp_path):
    from PIL import Image

    registry = copied(exported, tmp_path)
    mv = Registry(registry).get("plain:1")
    name = mv.metadata["golden"]["vectors"][1]
    with Image.open(mv.path / "golden" / name) as img:
        pixels = np.asarray(img).copy()
    pixels[:20] = 255 - pixels[:20]
    Image.fromarray(pixels).save(mv.path / "golden" / name)
    rerecord(mv, f"golden/{name}")
    out = CliRunner().invoke(main, ["registry", "verify", "plain:1", "--run", "--registry", str(registry)])
    assert out.exit_code == 1 and "golden vector 2 preprocesses to a tensor" in out.stdout
    assert name in out.stdout


def test_a_version_without_golden_vectors_gets_a_note(exported, tmp_path):
    registry = copied(exported, tmp_path)
    mv = Registry(registry).get("plain:1")
    meta = json.loads((mv.path / METADATA_FILE).read_text())
    del meta["golden"]
    (mv.path / METADATA_FILE).write_text(json.dumps(meta))
    out = CliRunner().invoke(main, ["registry", "verify", "plain:1", "--run", "--registry", str(registry)])
    assert out.exit_code == 0 and "note: exported before pneumokit stored golden vectors" in out.stdout


def test_another_runtime_replays_the_vectors_without_pneumokit(exported, tmp_path):
    assert EXAMPLE.read_text() in (ROOT / "docs" / "onnx.md").read_text(), \
        "docs/onnx.md must show docs/examples/golden_check.py verbatim"
    folder = Registry(exported["registry"]).get("heat:1").path
    for runtime in ("reference", "onnxruntime"):
        out = subprocess.run([sys.executable, "-c", BLOCKER, str(EXAMPLE), str(folder), runtime],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"5 of 5 vectors within 0.0001 ({runtime})" in out.stdout
    registry = copied(exported, tmp_path)
    mv = Registry(registry).get("heat:1")
    model = onnx.load(mv.path / "model.onnx")
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * np.float32(1.1), weights.name))
    onnx.save(model, mv.path / "model.onnx")
    out = subprocess.run([sys.executable, "-c", BLOCKER, str(EXAMPLE), str(mv.path), "reference"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "FAIL vector" in out.stdout
