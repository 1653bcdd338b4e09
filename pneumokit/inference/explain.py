"""Where the model looked: a heatmap over each X-ray, written as PNG overlays.

Three ways to the same kind of map, chosen in this order (``method="auto"``):

1. the ``heatmap`` output of an ONNX file exported with ``--heatmap``
   (onnxruntime; the numbers ``serve`` and ``predict --heatmap`` give);
2. the class activation map computed from the Keras model (``pneumokit.heatmap``),
   for models whose head is global average pooling and one dense unit;
3. Grad-CAM (Selvaraju et al. 2017) for any other model with convolutional feature
   maps: the gradient of the logit, averaged per channel, weights the last feature
   maps. For a CAM-shaped head, Grad-CAM and CAM give the same map.

Every map is ``max(., 0)`` scaled to a maximum of 1 per image (docs/explain.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.config import EXPLAIN_METHODS
from ..core.files import atomic_write, check_output_folder, printable
from ..data.preprocessing import decode
from ..errors import ConfigError
from ..training.gate import THRESHOLD, keras_scorer
from .overlay import caption, overlay, png_bytes
from .runtime import gate_state


def explain(model: str, paths, *, output: str | os.PathLike | None = None, registry=None,
            method: str = "auto", gate: bool = True) -> dict:
    """Heatmap overlays of ``paths`` under ``output`` (default ``runs/explain/NAME-vVERSION``);
    returns the model, method, engine, threshold, folder and one row per image (the row's
    ``file`` is its overlay; unreadable images get ``error``). The input gate applies as in
    ``predict`` (docs/gate.md): an image out of scope gets its reason and no overlay."""
    from ..registry.store import Registry

    if method not in EXPLAIN_METHODS:
        raise ConfigError(f"--method {method!r}: choose one of {', '.join(EXPLAIN_METHODS)}")
    registry = registry or Registry()
    scorer = _scorer(model, registry, method, gate)
    out = Path(output) if output else Path("runs") / "explain" / scorer["label"]
    check_output_folder(out, "--output", create=True, registry_root=registry.root)
    rows = scorer["score"](paths)
    write_overlays(out, paths, rows, scorer["threshold"], scorer["method"])
    return {"model": scorer["ref"], "method": scorer["method"], "engine": scorer["engine"],
            "threshold": scorer["threshold"], "gate": scorer["gate"], "output": str(out),
            "explanations": rows}


def write_overlays(out: str | os.PathLike, paths, rows: list[dict], threshold: float, method: str) -> None:
    """One ``STEM.png`` overlay in ``out`` per scored row (``-2``, ``-3`` ... where stems repeat);
    each row's ``heatmap`` array is replaced by ``file``, the overlay's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = {os.path.realpath(p) for p in paths}  # never written over, even if in ``out``
    names: set[str] = set()
    for row, path in zip(rows, paths, strict=True):
        heat = row.pop("heatmap", None)
        row["file"] = None
        if heat is None:  # unreadable, or out of scope: no map is drawn for it
            continue
        stem, k = Path(path).stem, 2
        name = stem + ".png"
        while name in names or os.path.realpath(out / name) in inputs:
            name, k = f"{stem}-{k}.png", k + 1
        names.add(name)
        img = overlay(decode(path, None), heat, caption(row, threshold, method))
        with atomic_write(out / name, "wb") as f:
            f.write(png_bytes(img))
        row["file"] = str(out / name)


def _scorer(model: str, registry, method: str, gate: bool) -> dict:
    """How to score: the ONNX heatmap output when there is one (and ``method`` allows), else Keras."""
    from .export import ONNX_FILE
    from .runtime import Predictor

    is_file = Path(model).suffix.lower() == ".onnx" or os.sep in model
    mv = None if is_file else registry.get(model)
    has_onnx = mv is None or ONNX_FILE in mv.metadata.get("artifacts", {})
    if method != "grad-cam" and has_onnx:
        predictor = Predictor(model, providers="cpu", registry=registry)
        if predictor.heatmap_output is not None:
            return _onnx_scorer(predictor, mv, gate)
    if is_file and method == "grad-cam":
        raise ConfigError(f"--method grad-cam needs the Keras model: give the registry ref (name:N), not "
                          f"the ONNX file {model}")
    if is_file:
        raise ConfigError(f"{model} has no heatmap output: export the model with `pneumokit export REF "
                          "--heatmap`, or give the registry ref to explain it with the Keras model")
    return _keras_scorer(mv, registry, method, gate)


def _onnx_scorer(predictor, mv, gate: bool) -> dict:
    ref = mv.ref if mv else str(predictor.path)
    label = mv.ref.replace(":", "-v") if mv else Path(predictor.path).stem
    return {"ref": ref, "label": label, "method": "cam", "engine": "onnxruntime",
            "threshold": predictor.threshold, "gate": gate_state(gate, predictor.gate is not None),
            "score": lambda paths: predictor.predict_files(paths, heatmap=True, gate=gate)}


def _keras_scorer(mv, registry, method: str, gate: bool) -> dict:
    from ..data.preprocessing import Preprocessing
    from ..models.heatmap import with_heatmap

    model = registry.load_model(mv.ref)
    cam = with_heatmap(model) if method != "grad-cam" else None
    if cam is None and method == "cam":
        raise ConfigError(f"{mv.ref}: --method cam needs a head of global average pooling and one dense "
                          "unit; use --method grad-cam (or auto)")
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    run = (lambda x: [np.asarray(o) for o in cam(x, training=False)]) if cam is not None \
        else grad_cam_function(model)
    gate_score = keras_scorer(model, mv)
    return {"ref": mv.ref, "label": mv.ref.replace(":", "-v"), "engine": "keras",
            "threshold": float(mv.metadata["threshold"]), "gate": gate_state(gate, gate_score is not None),
            "method": "cam" if cam is not None else "grad-cam",
            "score": lambda paths: [_keras_row(p, pre, run, gate_score, mv, gate) for p in paths]}


def _keras_row(path, pre, run, gate_score, mv, gate: bool) -> dict:
    from .runtime import read_source, scored_row

    name = printable(path)
    pixels, notes, row = read_source(pre, name, path, gate)
    if row is None:
        x = pre.normalize(pixels[None].astype(np.float32))
        prob, heat = run(x)
        score = None if gate_score is None else float(gate_score(x)[0])
        row = scored_row(name, float(np.ravel(prob)[0]), score, float(mv.metadata["threshold"]),
                         mv.metadata.get("class_names", ["NORMAL", "PNEUMONIA"]),
                         THRESHOLD if gate and score is not None else None, notes)
        if row["label"] is not None:
            row["heatmap"] = np.asarray(heat)[0]
    row["path"] = row.pop("name")
    return row


def grad_cam_function(model):
    """``x -> (probabilities (N, 1), heatmaps (N, h, w))`` by Grad-CAM on the last layer of
    ``model`` with a 4-D output; ``ConfigError`` if it has none at its top level."""
    import keras
    import tensorflow as tf

    from ..models.ensemble import logit_tensor
    from ..models.heatmap import scaled

    maps = [layer for layer in model.layers if _rank(layer) == 4]
    if not maps:
        raise ConfigError(f"{model.name}: Grad-CAM needs convolutional feature maps at the model's top "
                          "level; this model has none")
    z = logit_tensor(model)
    grad_model = keras.Model(model.inputs[0], [maps[-1].output, model.outputs[0], z if z is not None
                                            else model.outputs[0]])

    def run(x):
        with tf.GradientTape() as tape:
            features, prob, logit = grad_model(x, training=False)
            if z is None:  # the logit of the probability, as exact as float32 allows
                p = tf.clip_by_value(tf.cast(logit, tf.float32), 1e-7, 1 - 1e-7)
                logit = tf.math.log(p) - tf.math.log1p(-p)
        grads = tape.gradient(logit, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        m = tf.reduce_sum(tf.cast(features, tf.float32) * weights, axis=-1)
        return prob.numpy(), np.asarray(scaled(m))

    return run


def _rank(layer) -> int:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer called more than once, or not at all
        return 0
