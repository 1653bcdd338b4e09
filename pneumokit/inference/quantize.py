"""Static INT8 quantisation of an exported model with onnxruntime, checked on held-out images.

``model.int8.onnx`` is written beside ``model.onnx`` with the same contract (input, outputs
and ``pneumokit.*`` metadata, plus ``pneumokit.quantization``). What is quantised, and why:

- QDQ format (QuantizeLinear/DequantizeLinear around float operators: onnxruntime fuses them
  into integer kernels, and any ONNX runtime can still read the file);
- the network's convolutions with the ReLU and max-pooling that follow them, weights int8
  per output channel in 7 bits (``reduce_range``: x86 CPUs without VNNI saturate in 8-bit
  u8 x s8 products), activations uint8 per tensor, MinMax ranges from training images;
- kept in float32: the stem convolution that reads the image (quantised, it alone moved a
  trained cnn_optimized's probabilities by up to 0.59: docs/onnx.md#int8), the classifier head
  (dense layer, temperature, sigmoid), the input gate's arithmetic (layout, Mahalanobis
  distances, orientation network) and a heatmap's arithmetic.

The INT8 file is refused (nothing written) when, on held-out labelled images the model was not
trained on, its AUC or its accuracy at the stored threshold differs from the float model's by
more than the bounds (``MAX_AUC_CHANGE``, ``MAX_ACCURACY_CHANGE``), unless ``warn``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import CLASS_NAMES, __version__
from ..core.layout import INT8_FILE
from ..data.contract import GATE_OUTPUT
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError, DatasetError, ExportError
from ..registry.store import ModelVersion, Registry, sha256_file
from ..training.metrics import binary_metrics
from .export import INPUT_NAME, ONNX_FILE, OUTPUT_NAME

MAX_AUC_CHANGE = 0.003  # |AUC(int8) - AUC(float32)| on the held-out images
MAX_ACCURACY_CHANGE = 0.01  # |accuracy(int8) - accuracy(float32)| at the stored threshold
CALIBRATION_IMAGES = 200  # at most, half of each class
MIN_HELD_OUT = 20
QUANTIZED_OPS = ("Conv", "Relu", "MaxPool")
_FOLLOWERS = ("Relu", "MaxPool")  # quantised only right after a quantised node
_BATCH = 32


@dataclass
class Int8Result:
    ref: str
    path: Path
    record: dict
    written: bool = True
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ref": self.ref, "path": str(self.path), "written": self.written,
                "warnings": self.warnings, **self.record}


def check_bounds(max_auc_change: float, max_accuracy_change: float) -> None:
    for name, value in (("--int8-max-auc-change", max_auc_change),
                        ("--int8-max-accuracy-change", max_accuracy_change)):
        if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"{name} {value!r}: give a number in [0, 1] (an absolute change)")


def quantize(ref: str, registry: Registry | None = None, *, calibration=None, held_out=None,
             max_auc_change: float = MAX_AUC_CHANGE, max_accuracy_change: float = MAX_ACCURACY_CHANGE,
             warn: bool = False) -> Int8Result:
    """Write ``model.int8.onnx`` for an exported version (it must have ``model.onnx``).

    ``calibration``: a dataset folder or manifest whose ``train`` images calibrate the ranges
    (default: the version's recorded data root, else the bundled demo set). ``held_out``: a
    dataset folder or manifest whose ``test`` images (a manifest without splits: all its rows)
    check the result (default: the ``test/`` split of the recorded data root); images this
    version was trained on (``training_images.txt``) are left out. Above a bound the export is
    refused with ``ExportError`` and nothing is written; with ``warn`` it is written, and the
    result's ``warnings`` say why it would have been refused. Recorded under ``onnx_int8``.
    """
    check_bounds(max_auc_change, max_accuracy_change)
    registry = registry or Registry()
    mv = registry.get(ref)
    registry.check_new_artifacts(mv, [INT8_FILE])
    if ONNX_FILE not in mv.metadata.get("artifacts", {}):
        raise ExportError(f"{mv.ref} has no {ONNX_FILE} to quantise: run `pneumokit export {mv.ref}` "
                          "(with --int8 it exports first)")
    float_path = mv.verify(ONNX_FILE)
    held_paths, labels, held_info = held_out_images(mv, held_out)
    cal_paths, cal_info = calibration_images(mv, calibration, exclude=held_info.pop("sha256"))
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    with registry.staging(mv.name) as scratch:
        data, nodes = _quantized(float_path, _images(cal_paths, pre), scratch, cal_info)
    parity = compare(float_path.read_bytes(), data, _images(held_paths, pre), labels,
                     float(mv.metadata["threshold"]))
    bounds = {"auc_change": max_auc_change, "accuracy_change": max_accuracy_change}
    problems = _beyond(parity, bounds)
    record = {"file": INT8_FILE, **_settings(), "quantized_nodes": nodes,
              "calibration": cal_info, "held_out": held_info, "parity": parity, "bounds": bounds,
              "within_bounds": not problems, "float_sha256": sha256_file(float_path),
              "runtime": _runtime()}
    if problems and not warn:
        raise ExportError(f"{mv.ref}: INT8 refused, on {held_info['images']} held-out images "
                          f"{'; '.join(problems)}; nothing was written (the float32 {ONNX_FILE} stands). "
                          "Pass --int8-warn to write it anyway, or widen the bound")
    mv = registry.add_artifacts(mv.ref, {INT8_FILE: data}, metadata_update={"onnx_int8": record})
    warnings = [f"{mv.ref}: INT8 written although {'; '.join(problems)} (--int8-warn)"] if problems else []
    return Int8Result(mv.ref, mv.path / INT8_FILE, record, True, warnings)


def _settings() -> dict:
    return {"format": "QDQ", "operators": list(QUANTIZED_OPS),
            "weights": {"type": "int8", "per_channel": True, "reduce_range": True, "bits": 7},
            "activations": {"type": "uint8", "per_channel": False},
            "kept_float": "the stem convolution on the input image, the classifier head (dense, "
                          "temperature, sigmoid), the input gate's arithmetic and a heatmap's"}


def _runtime() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} CPUExecutionProvider"


def _beyond(parity: dict, bounds: dict) -> list[str]:
    """A phrase for each figure whose change exceeds its bound."""
    out = []
    for key, name in (("auc", "AUC"), ("accuracy", "accuracy")):
        change, bound = parity[key]["change"], bounds[f"{key}_change"]
        if not abs(change) <= bound:  # NaN (one class) never passes
            out.append(f"{name} changed by {change:+.4f} ({parity[key]['float32']:.4f} -> "
                       f"{parity[key]['int8']:.4f}), more than the bound {bound:g}")
    return out


# -- images -------------------------------------------------------------------------------

def _training_hashes(mv: ModelVersion) -> set[str] | None:
    from ..registry.provenance import TRAINING_IMAGES

    if TRAINING_IMAGES not in mv.metadata.get("artifacts", {}):
        return None
    return set(mv.verify(TRAINING_IMAGES).read_text().split())


def _recorded_root(mv: ModelVersion) -> Path | None:
    root = (mv.metadata.get("dataset") or {}).get("root")
    return Path(root) if root and Path(root).is_dir() else None


def _index(data, split: str):
    """The images of ``split`` of a dataset folder or manifest (a manifest without a split
    column: all its rows), as the data index ``scan`` gives them."""
    from ..data.dataset import scan

    result = scan(data, splits=[split])
    result.require_usable()
    return result.split(split), result.root


def held_out_images(mv: ModelVersion, data=None) -> tuple[list[str], np.ndarray, dict]:
    """Paths, labels and a record of the held-out images: the ``test`` images of ``data`` (default:
    of the version's recorded data root), less any this version was trained on (by content)."""
    if data is None:
        root = _recorded_root(mv)
        if root is None or not any(p.is_dir() and p.name.lower() == "test" for p in root.iterdir()):
            recorded = (mv.metadata.get("dataset") or {}).get("root")
            where = (f"{root} has no test/ split" if root else f"it was trained on a manifest, {recorded}"
                     if recorded and Path(recorded).is_file() else "its training data folder is gone")
            raise ConfigError(f"{mv.ref}: no held-out images for the INT8 check ({where}); give "
                              "--int8-data DIR (its test/ split) or a CSV manifest of labelled images "
                              "of patients the model was not trained on")
        data = root
    index, root = _index(data, "test")
    trained = _training_hashes(mv)
    seen = index["sha256"].isin(trained or set())
    kept = index[~seen]
    counts = np.bincount(kept["label"].to_numpy(dtype=int), minlength=2)
    if len(kept) < MIN_HELD_OUT or counts.min() == 0:
        raise DatasetError(f"{root}: {len(kept)} held-out test images ({counts[0]} {CLASS_NAMES[0]}, "
                           f"{counts[1]} {CLASS_NAMES[1]}, {int(seen.sum())} left out as training images); "
                           f"the INT8 check needs at least {MIN_HELD_OUT} with both classes: give "
                           "--int8-data with more")
    info = {"source": str(root), "split": "test", "images": int(len(kept)),
            "per_class": {c: int(n) for c, n in zip(CLASS_NAMES, counts, strict=True)},
            "left_out_as_training_images": int(seen.sum()),
            "overlap_check": ("sha256 against training_images.txt" if trained is not None
                              else "not possible: this version records no training_images.txt"),
            "sha256": set(kept["sha256"])}
    return kept["path"].tolist(), kept["label"].to_numpy(dtype=int), info


def calibration_images(mv: ModelVersion, data=None, exclude=frozenset(),
                       limit: int = CALIBRATION_IMAGES, seed: int = 0) -> tuple[list[str], dict]:
    """Up to ``limit`` training images (half of each class, a seeded draw): of ``data`` if given,
    else of the version's recorded data root, else of the bundled demo set; none of ``exclude``
    (the held-out images' sha256), and only images it was trained on where that is recorded."""
    which = "given" if data is not None else "recorded" if _recorded_root(mv) else "demo"
    index, root = _index(data if data is not None else _recorded_root(mv), "train")
    index = index[~index["sha256"].isin(exclude)]
    trained = _training_hashes(mv)
    if which != "given" and trained is not None and index["sha256"].isin(trained).any():
        index = index[index["sha256"].isin(trained)]
    if index.empty:
        raise DatasetError(f"{root}: no train/ images left to calibrate the INT8 ranges with; give "
                           "--calibration-data DIR (a dataset folder or manifest of training images)")
    rng = np.random.default_rng(seed)
    picked = []
    for label in (0, 1):
        rows = index[index["label"] == label]["path"].tolist()
        take = min(len(rows), limit // 2)
        picked += [rows[i] for i in sorted(rng.choice(len(rows), take, replace=False))]
    return picked, {"source": str(root), "which": {"given": "--calibration-data", "recorded":
                    "the version's training data", "demo": "the bundled demo set"}[which],
                    "images": len(picked), "method": "MinMax"}


def _images(paths: list[str], pre: Preprocessing) -> np.ndarray:
    from ..data.decoding import decode_all

    return pre.normalize(decode_all(paths, pre).astype(np.float32))


# -- quantisation ----------------------------------------------------------------------------

def quantized_nodes(graph) -> list[str]:
    """The nodes to quantise: every Conv except those reading the input image through no other
    Conv (the stem), and each ReLU or max-pooling right after a quantised node."""
    raw, chosen, producer = {INPUT_NAME}, [], {}
    for node in graph.node:
        for out in node.output:
            producer[out] = node
        from_image = any(i in raw for i in node.input)
        if node.op_type == "Conv":
            if not from_image:
                chosen.append(node.name)
        elif node.op_type in _FOLLOWERS and node.input and node.input[0] in producer \
                and producer[node.input[0]].name in chosen:
            chosen.append(node.name)
        if from_image and node.op_type != "Conv":
            raw.update(node.output)
    return chosen


def _quantized(float_path: Path, x: np.ndarray, scratch: Path, cal_info: dict) -> tuple[bytes, int]:
    """The bytes of the INT8 model (the float model's metadata copied, ``pneumokit.quantization``
    added) and how many nodes were quantised."""
    import onnx
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, out = scratch / "prepared.onnx", scratch / INT8_FILE
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)  # no sympy needed
    nodes = quantized_nodes(onnx.load(str(prepared)).graph)
    if not nodes:
        raise ExportError(f"{float_path}: no convolution to quantise besides the stem; INT8 is for "
                          "convolutional networks")
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs advice at WARNING on the root
    try:
        q.quantize_static(str(prepared), str(out), _reader(x), quant_format=q.QuantFormat.QDQ,
                          op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes,
                          per_channel=True, reduce_range=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax)
    except Exception as exc:  # onnxruntime raises its own types
        raise ExportError(f"{float_path}: onnxruntime could not quantise it ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:200]}); nothing was written") from None
    finally:
        logging.getLogger().setLevel(level)
    model = onnx.load(str(out))
    props = {p.key: p.value for p in onnx.load(str(float_path), load_external_data=False).metadata_props}
    props["pneumokit.quantization"] = json.dumps({
        **{k: v for k, v in _settings().items() if k != "kept_float"}, "quantized_nodes": len(nodes),
        "calibration": {k: cal_info[k] for k in ("images", "method")},
        "float_model_sha256": sha256_file(float_path), "pneumokit": __version__})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString(), len(nodes)


def _reader(x: np.ndarray):
    """onnxruntime's calibration data reader over preprocessed images, in batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{INPUT_NAME: x[i:i + _BATCH]} for i in range(0, len(x), _BATCH)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


# -- parity ----------------------------------------------------------------------------------

def _scores(data: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (N,) and gate scores (N,) or None, from an ONNX model's bytes."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.name in (OUTPUT_NAME, GATE_OUTPUT)]
    parts = [session.run(names, {INPUT_NAME: x[i:i + _BATCH]}) for i in range(0, len(x), _BATCH)]
    out = {n: np.concatenate([np.asarray(p[k], np.float64).ravel() for p in parts])
           for k, n in enumerate(names)}
    return out[OUTPUT_NAME], out.get(GATE_OUTPUT)


def compare(float_data: bytes, int8_data: bytes, x: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """The float32 and INT8 models on the same images: largest and mean |Δprobability|, AUC and
    accuracy at ``threshold`` of each and their change, labels changed, and for the gate its
    largest change relative to max(1, |score|) and the in-scope decisions changed."""
    pf, gf = _scores(float_data, x)
    pq, gq = _scores(int8_data, x)
    mf, mq = binary_metrics(y, pf, threshold), binary_metrics(y, pq, threshold)
    out: dict = {"images": int(len(y)), "threshold": threshold,
           "max_abs_probability_change": float(np.max(np.abs(pq - pf))),
           "mean_abs_probability_change": float(np.mean(np.abs(pq - pf))),
           "labels_changed": int(np.sum((pq >= threshold) != (pf >= threshold)))}
    for key in ("auc", "accuracy"):
        out[key] = {"float32": mf[key], "int8": mq[key], "change": mq[key] - mf[key]}
    if gf is not None and gq is not None:
        from ..data.contract import GATE_THRESHOLD

        out["gate"] = {"max_relative_change": float(np.max(np.abs(gq - gf) / np.maximum(1.0, np.abs(gf)))),
                       "decisions_changed": int(np.sum((gq <= GATE_THRESHOLD) != (gf <= GATE_THRESHOLD)))}
    return out
