"""Keras -> ONNX with tf2onnx, a parity check on real images, and self-describing metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import CLASS_NAMES, DEFAULT_OPSET, DEMO_DATA_DIR, __version__
from ..core.layout import ONNX_FILE
from ..data.contract import GATE_OUTPUT, HEATMAP_OUTPUT
from ..data.preprocessing import Preprocessing
from ..errors import ExportError
from ..registry import golden
from ..registry.store import Registry
from ..training.gate import MEANING, version_arrays, with_gate

PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 32
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
HEATMAP_MEANING = ("class activation map of PNEUMONIA: the dense weights applied to the last feature "
                   "maps, max(., 0) scaled to a maximum of 1 per image (all 0: no region speaks for "
                   "PNEUMONIA); at the feature maps' resolution, stretch it over the image")


@dataclass
class ExportResult:
    ref: str
    path: Path
    opset: int
    max_abs_diff: float
    parity_images: int
    tolerance: float
    heatmap: list[int] | None = None
    gate: bool = False

    def to_dict(self) -> dict:
        return {"ref": self.ref, "path": str(self.path), "opset": self.opset,
                "parity": {"max_abs_diff": self.max_abs_diff, "images": self.parity_images,
                           "tolerance": self.tolerance},
                "heatmap": {"height": self.heatmap[0], "width": self.heatmap[1]} if self.heatmap else None,
                "gate": self.gate}


def metadata_props(meta: dict, heatmap: list[int] | None = None, gate: bool = False) -> dict[str, str]:
    """The ``pneumokit.*`` keys another runtime needs to use the file on its own; ``heatmap``
    is the (h, w) of the ``heatmap`` output when the file has one; ``gate``, whether it has the
    input gate's ``gate`` output (its record is ``meta["gate"]``)."""
    pre = meta["preprocessing"]
    calibration = meta.get("calibration")
    extra = {}
    if calibration:
        extra["pneumokit.calibration"] = json.dumps({
            "method": calibration.get("method", "temperature"), "temperature": calibration["temperature"],
            "applied": "inside the graph: the output is already calibrated"})
    if meta.get("ensemble"):
        extra["pneumokit.ensemble"] = json.dumps(meta["ensemble"])
    probability = {"name": OUTPUT_NAME, "meaning": f"probability of {CLASS_NAMES[1]}", "shape": ["batch", 1]}
    outputs = [probability]
    if heatmap:
        outputs.append({"name": HEATMAP_OUTPUT, "meaning": HEATMAP_MEANING, "shape": ["batch", *heatmap],
                        "range": [0, 1], "method": "cam"})
    if gate:
        record = meta["gate"]
        outputs.append({"name": GATE_OUTPUT, "meaning": MEANING, "shape": ["batch"]})
        extra["pneumokit.gate"] = json.dumps({
            "output": GATE_OUTPUT, "threshold": record["threshold"],
            "in_scope": f"{GATE_OUTPUT} <= threshold", "method": record["method"], "rule": record["rule"],
            "components": {k: {"threshold": v["threshold"]} for k, v in record["components"].items()}})
    if len(outputs) > 1:
        extra["pneumokit.outputs"] = json.dumps(outputs)
    return {
        "pneumokit.class_names": json.dumps(meta.get("class_names", list(CLASS_NAMES))),
        "pneumokit.threshold": str(float(meta["threshold"])),
        "pneumokit.input": json.dumps({"name": INPUT_NAME, "layout": "NHWC", "height": pre["height"],
                                       "width": pre["width"], "channels": pre["channels"],
                                       "dtype": "float32"}),
        "pneumokit.output": json.dumps(probability),
        "pneumokit.preprocessing": json.dumps(pre),
        "pneumokit.model": json.dumps({"name": meta["name"], "version": meta["version"],
                                       "architecture": meta["architecture"]["name"]}),
        "pneumokit.version": __version__,
        **extra,
    }


def _is_mixed(model) -> bool:
    return any(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float16"
               for layer in model._flatten_layers())


def _float32_config(obj):
    """A model config with every dtype policy replaced by float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy":
            return {**obj, "config": {**obj.get("config", {}), "name": "float32"}}
        return {k: ("float32" if k == "dtype" and isinstance(v, str) and "mixed" in v
                    else _float32_config(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def float32_copy(model):
    """Rebuild a mixed-precision model from its own config under float32 and copy its weights.

    The model's saved config is used (not the architecture's builder), so any
    model — a plugin's, a ``model_func``'s — is rebuilt exactly, with no weights
    downloaded.
    """
    config = _float32_config(model.get_config())
    try:
        clone = model.__class__.from_config(config)
        clone.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    except Exception as exc:
        raise ExportError(f"could not rebuild the mixed-precision model in float32: {exc}") from exc
    if _is_mixed(clone):
        raise ExportError("the float32 rebuild still has float16 layers; export is not possible")
    return clone


def to_onnx(model, height: int, width: int, channels: int, opset: int = DEFAULT_OPSET,
            names: tuple[str, ...] = (OUTPUT_NAME, HEATMAP_OUTPUT)):
    """An ONNX ModelProto: input ``image`` (N, H, W, C) float32, dynamic batch; the Keras
    model's outputs, in order, named ``names`` (``probability``, then e.g. ``heatmap``)."""
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, height, width, channels), tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    for value, new in zip(proto.graph.output, names, strict=False):
        old = value.name
        if old != new:
            for node in proto.graph.node:
                node.output[:] = [new if o == old else o for o in node.output]
            value.name = new
    for value in (proto.graph.input[0], *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto


def parity_images(n: int = PARITY_IMAGES) -> list[str]:
    """Real X-rays from the bundled demo set, half of each class."""
    files = []
    for cls in CLASS_NAMES:
        files += sorted(str(p) for p in (DEMO_DATA_DIR / "train" / cls).glob("*.jpeg"))[: n // 2]
    return files


def export(ref: str, registry: Registry | None = None, *, opset: int = DEFAULT_OPSET,
           tolerance: float = PARITY_TOLERANCE, heatmap: bool = False) -> ExportResult:
    """Export a registered model to ``model.onnx`` in its version folder.

    The Keras and onnxruntime probabilities of real demo images must agree
    within ``tolerance`` (max absolute difference), or nothing is written.
    ``heatmap`` adds the ``heatmap`` output (``pneumokit.heatmap``; its parity
    is checked too). A version with an input gate (``gate.npz``, every version
    registered by train or cv) gets its ``gate`` output, declared in
    ``pneumokit.gate``. The result is recorded in the version's metadata under ``onnx``; the
    golden self-test vectors (``pneumokit.registry.golden``) go beside the file, under ``golden``.
    """
    import onnx
    import onnxruntime as ort

    registry = registry or Registry()
    mv = registry.get(ref)
    registry.check_new_artifacts(mv, [ONNX_FILE, golden.VECTORS])  # before minutes of conversion
    model = registry.load_model(mv.ref)
    if _is_mixed(model):
        model = float32_copy(model)
    names = [OUTPUT_NAME]
    if heatmap:
        model, names = _with_heatmap(model, mv), names + [HEATMAP_OUTPUT]
    arrays = version_arrays(mv)
    has_gate = arrays is not None
    if arrays is not None:
        model, names = with_gate(model, arrays), names + [GATE_OUTPUT]
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    proto = to_onnx(model, pre.height, pre.width, pre.channels, opset, tuple(names))
    heat_shape = list(model.outputs[1].shape[1:]) if heatmap else None
    for key, value in metadata_props(mv.metadata, heat_shape, has_gate).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    images = parity_images()
    diff = _parity(model, data, pre.prepare(images), names)
    if not diff <= tolerance:
        raise ExportError(f"ONNX parity check failed for {mv.ref}: max |keras - onnx| = {diff:.3g} "
                          f"on {len(images)} demo images exceeds {tolerance:g}; nothing was written")
    parity = {"max_abs_diff": diff, "images": len(images), "tolerance": tolerance,
              "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
              "gate": "relative to max(1, |score|)" if has_gate else None}
    vectors, golden_record = golden.build(data, pre, names, tolerance)
    mv = registry.add_artifacts(mv.ref, {ONNX_FILE: data, **vectors}, metadata_update={
        "onnx": {"opset": opset, "parity": parity, "outputs": names}, "golden": golden_record})
    return ExportResult(mv.ref, mv.path / ONNX_FILE, opset, diff, len(images), tolerance, heat_shape,
                        has_gate)


def _parity(model, data: bytes, x: np.ndarray, names: list[str]) -> float:
    """The largest difference between Keras and onnxruntime over every output: absolute for the
    probability and the heatmap, relative to max(1, |score|) for the gate score."""
    import onnxruntime as ort

    expected = model.predict(x, verbose=0)
    expected = expected if isinstance(expected, list | tuple) else [expected]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(names, {INPUT_NAME: x})
    diffs = []
    for name, e, g in zip(names, expected, got, strict=True):
        e, g = np.asarray(e, np.float64).ravel(), np.asarray(g, np.float64).ravel()
        scale = np.maximum(1.0, np.abs(e)) if name == GATE_OUTPUT else 1.0
        diffs.append(float(np.max(np.abs(e - g) / scale)))
    return max(diffs)


def _with_heatmap(model, mv):
    from ..models.heatmap import with_heatmap

    extended = with_heatmap(model)
    if extended is None:
        arch = mv.metadata.get("architecture", {}).get("name", "this model")
        raise ExportError(f"{mv.ref}: --heatmap needs a head of global average pooling, then one dense "
                          f"unit (as cnn_optimized and the transfer models have); {arch} has another "
                          f"head. Export without --heatmap; `pneumokit explain {mv.ref}` draws "
                          "Grad-CAM heatmaps for it")
    return extended
