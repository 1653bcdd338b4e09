"""`pneumokit export REF --int8`: the statically quantised copy, its contract, its checks."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_dataset

from pneumokit.cli import main
from pneumokit.registry.store import Registry

# The INT8 file's probabilities stay within this of the float model's on the tiny test models
# (a trained 128 px cnn_optimized: 0.118 on 500 held-out X-rays, docs/onnx.md#int8).
MAX_PROBABILITY_CHANGE = 0.15
WIDE = ["--int8-max-auc-change", "1", "--int8-max-accuracy-change", "1"]


@pytest.fixture
def registry(exported, tmp_path):
    """A private copy of the exported tiny models' registry (the session's stays untouched)."""
    root = tmp_path / "registry"
    shutil.copytree(exported["registry"], root)
    return root


def _export(registry, *args):
    return CliRunner().invoke(main, ["export", "plain:1", "--int8", "--registry", str(registry), *args])


def _onnx_io(path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    io = [(v.name, v.type, list(v.shape)) for v in (*session.get_inputs(), *session.get_outputs())]
    return io, session.get_modelmeta().custom_metadata_map


def test_int8_file_has_the_contract_and_scores_close(exported, registry):
    from pneumokit.inference.runtime import Predictor

    out = _export(registry, *WIDE, "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)["int8"]
    mv = Registry(registry).get("plain:1")
    float_io, float_props = _onnx_io(mv.path / "model.onnx")
    int8_io, int8_props = _onnx_io(mv.path / "model.int8.onnx")
    assert int8_io == float_io and [n for n, _, _ in int8_io] == ["image", "probability", "gate"]
    quantization = json.loads(int8_props.pop("pneumokit.quantization"))
    assert int8_props == float_props
    assert quantization["format"] == "QDQ" and quantization["weights"]["per_channel"] is True
    record = mv.metadata["onnx_int8"]
    assert record["parity"] == report["parity"] and record["held_out"]["images"] == 24
    assert record["held_out"]["left_out_as_training_images"] == 0
    assert record["calibration"]["which"] == "the version's training data"
    assert record["float_sha256"] == mv.metadata["artifacts"]["model.onnx"]
    assert record["parity"]["max_abs_probability_change"] <= MAX_PROBABILITY_CHANGE
    int8, plain = Predictor(mv.path / "model.int8.onnx", providers="cpu"), Predictor(mv.path / "model.onnx")
    assert int8.ref == "plain:1" and int8.gate == plain.gate  # registered: its sha256 was checked
    x = plain.preprocessing.prepare(exported["images"])
    got, want = int8.score_batch(x), plain.score_batch(x)
    assert np.max(np.abs(got["probability"] - want["probability"])) <= MAX_PROBABILITY_CHANGE
    assert np.all(np.isfinite(got["gate"]))
    verified = CliRunner().invoke(main, ["registry", "verify", "plain:1", "--registry", str(registry)])
    assert verified.exit_code == 0 and "plain:1: ok" in verified.output
    card = (mv.path / "model_card.md").read_text()
    assert f"- INT8: `model.int8.onnx` (QDQ, {'/'.join(record['operators'])}); on 24 held-out images" in card


def test_verify_checks_the_int8_files_contract(exported, registry):
    """An INT8 file whose threshold was edited (and its sha256 record with it) is named."""
    import hashlib

    import onnx

    assert _export(registry, *WIDE).exit_code == 0
    mv = Registry(registry).get("plain:1")
    model = onnx.load(mv.path / "model.int8.onnx")
    next(p for p in model.metadata_props if p.key == "pneumokit.threshold").value = "0.2"
    onnx.save(model, mv.path / "model.int8.onnx")
    meta = json.loads((mv.path / "metadata.json").read_text())
    data = (mv.path / "model.int8.onnx").read_bytes()
    meta["artifacts"]["model.int8.onnx"] = hashlib.sha256(data).hexdigest()
    (mv.path / "metadata.json").write_text(json.dumps(meta))
    out = CliRunner().invoke(main, ["registry", "verify", "plain:1", "--registry", str(registry)])
    assert out.exit_code == 1 and "model.int8.onnx: pneumokit.threshold is 0.2 but" in out.output


def test_stem_head_and_gate_stay_float(registry):
    import onnx

    from pneumokit.inference.quantize import QUANTIZED_OPS, quantized_nodes

    graph = onnx.load(str(Registry(registry).get("plain:1").path / "model.onnx")).graph
    chosen = set(quantized_nodes(graph))
    kinds = {n.name: n.op_type for n in graph.node}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert {kinds[n] for n in chosen} <= set(QUANTIZED_OPS)
    assert convs[0].name not in chosen and {c.name for c in convs[1:]} <= chosen
    producer = {o: n.name for n in graph.node for o in n.output}
    followers = [n for n in graph.node if n.name in chosen and n.op_type != "Conv"]
    assert followers and all(producer[n.input[0]] in chosen for n in followers)  # not the gate's ReLU
    assert "Relu" in {n.op_type for n in graph.node if n.name not in chosen}  # the stem's and the gate's
    assert "Sigmoid" not in {kinds[n] for n in chosen} and "MatMul" not in {kinds[n] for n in chosen}


def test_second_int8_is_refused(registry):
    assert _export(registry, *WIDE).exit_code == 0
    mv = Registry(registry).get("plain:1")
    out = _export(registry, *WIDE)
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert "model.int8.onnx already exists: versions are immutable" in out.output
    assert Registry(registry).get("plain:1").metadata == mv.metadata


def _worse(monkeypatch):
    """The INT8 model's held-out AUC made 0.01 lower than measured: over the default bound."""
    from pneumokit import quantize

    real = quantize.compare

    def compare(*args):
        out = real(*args)
        out["auc"] = {**out["auc"], "int8": out["auc"]["float32"] - 0.01, "change": -0.01}
        return out

    monkeypatch.setattr(quantize, "compare", compare)


def test_refused_above_the_bound_writes_nothing(registry, monkeypatch):
    _worse(monkeypatch)
    before = Registry(registry).get("plain:1")
    files = sorted(p.name for p in before.path.iterdir())
    out = _export(registry, "--int8-max-accuracy-change", "1")
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert "INT8 refused, on 24 held-out images AUC changed by -0.0100" in out.output
    assert "more than the bound 0.003; nothing was written" in out.output
    after = Registry(registry).get("plain:1")
    assert sorted(p.name for p in after.path.iterdir()) == files and after.metadata == before.metadata


def test_warn_writes_and_says_why(registry, monkeypatch):
    _worse(monkeypatch)
    out = _export(registry, "--int8-max-accuracy-change", "1", "--int8-warn")
    assert out.exit_code == 0, out.output
    assert "warning: plain:1: INT8 written although AUC changed by -0.0100" in out.stderr
    record = Registry(registry).get("plain:1").metadata["onnx_int8"]
    assert record["within_bounds"] is False and record["bounds"]["auc_change"] == 0.003


def test_training_images_are_never_held_out(exported, registry, tmp_path):
    train = sorted((exported["data"] / "train").rglob("*.jpeg"))
    manifest = tmp_path / "seen.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in train))
    out = _export(registry, *WIDE, "--int8-data", str(manifest))
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert f"0 held-out test images (0 NORMAL, 0 PNEUMONIA, {len(train)} left out as training images)" \
        in out.output
    assert "model.int8.onnx" not in Registry(registry).get("plain:1").metadata["artifacts"]


@pytest.mark.parametrize("args, code, message", [
    (["--int8-data", "."], 2, "--int8-data is for --int8: add --int8"),
    (["--int8-warn"], 2, "--int8-warn is for --int8"),
    (["--int8-max-auc-change", "0.01"], 2, "--int8-max-auc-change is for --int8"),
    (["--int8", "--int8-max-auc-change", "2"], 2, "2.0 is not in the range 0<=x<=1"),
    (["--int8", "--int8-data", "TRAIN_ONLY"], 1, "the INT8 check needs at least 20 with both classes"),
])
def test_bad_options_get_one_line(registry, tmp_path, args, code, message):
    data = make_dataset(tmp_path / "train_only", per_class=3, size=32)
    args = [str(data) if a == "TRAIN_ONLY" else a for a in args]
    out = CliRunner().invoke(main, ["export", "plain:1", "--registry", str(registry), *args])
    assert out.exit_code == code and message in out.output
    assert [line for line in out.output.splitlines() if line.startswith("Error:")] == \
        [out.output.strip().splitlines()[-1]]
    assert "model.int8.onnx" not in Registry(registry).get("plain:1").metadata["artifacts"]


def test_a_version_not_yet_exported_is_exported_first(exported, tmp_path):
    from helpers import TINY_TRAIN

    root, runner = tmp_path / "registry", CliRunner()
    out = runner.invoke(main, ["train", "--data", str(exported["data"]), "--registry", str(root),
                               "--name", "fresh", *TINY_TRAIN])
    assert out.exit_code == 0, out.output
    bad = runner.invoke(main, ["export", "fresh:1", "--int8", "--int8-data", str(tmp_path / "missing.csv"),
                               "--registry", str(root)])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    empty = make_dataset(tmp_path / "train_only", per_class=3, size=32)
    bad = runner.invoke(main, ["export", "fresh:1", "--int8", "--int8-data", str(empty),
                               "--registry", str(root)])
    assert bad.exit_code == 1 and "needs at least 20" in bad.output
    assert not {"model.onnx", "model.int8.onnx"} & set(Registry(root).get("fresh:1").metadata["artifacts"])
    out = runner.invoke(main, ["export", "fresh:1", "--int8", *WIDE, "--registry", str(root)])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("exported fresh:1 to ") and "int8: wrote " in out.output
    assert {"model.onnx", "model.int8.onnx"} <= set(Registry(root).get("fresh:1").metadata["artifacts"])
