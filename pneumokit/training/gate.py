"""The content gate: is an image like the chest X-rays a model was trained on? (docs/gate.md)

Three checks, each fitted on the model's own training images and scored
inside the Keras graph, so the score exports to ONNX as the ``gate`` output and
every runtime gets the gate with nothing but the file:

- ``layout``: the input image averaged down to a ``GRID`` x ``GRID`` grid and
  standardised per image (its mean and spread removed, so exposure and
  contrast do not count). Frontal chest X-rays share one layout: dark lungs
  either side of a bright spine and heart, shoulders above, abdomen below. Its
  squared Mahalanobis distance (Lee et al., NeurIPS 2018) to the training
  images' layouts, with Ledoit-Wolf shrinkage of the covariance (scikit-learn).
- ``orientation``: a small network (scikit-learn's ``MLPClassifier``, one hidden
  layer) on the same layout, trained to tell the training images from
  themselves rotated by 90, 180 or 270 degrees, flipped upside down, inverted
  (a MONOCHROME1 mix-up) or cropped to a small patch: the known ways a real
  X-ray arrives wrong, made from the training images themselves (self-supervised
  outlier detection, as in Hendrycks et al., NeurIPS 2019). Its value is the
  odds it gives for "transformed".
- ``features``: the squared Mahalanobis distance of the network's own pooled
  features (the input of its last one-unit dense layer; a fold ensemble's
  members' features side by side) to those of the training images.

Each value is divided by its threshold, fitted on held-out real X-rays
(patients the network never trained on): ``MARGIN`` times the ``QUANTILE`` of
their values (for ``orientation``, also at least even odds). The gate score is
the largest of the three ratios; an image is in scope when its score is at most
``THRESHOLD`` (1). By construction at most ``3 * (1 - QUANTILE)`` of those
held-out X-rays are flagged.
"""

from __future__ import annotations

import io

import numpy as np

from ..core.layout import GATE_FILE  # noqa: F401  (re-exported)
from ..data.contract import GATE_OUTPUT, GATE_THRESHOLD

GRID = 16  # the layout's grid: GRID x GRID cells
QUANTILE = 0.995  # of held-out real X-rays' values, per component
MARGIN = 1.5  # times that quantile: room for a new site's acquisition (bench/gate.py)
THRESHOLD = GATE_THRESHOLD  # on the score: each component in units of its own threshold
HIDDEN = 64  # the orientation network's hidden units
ALPHA = 0.01  # its L2 penalty (docs/gate.md: a first trial against 0.001 and a linear model)
TRANSFORMS = ("rot90", "rot180", "rot270", "upside_down", "inverted", "patch")
_EPS = 1e-6
_MAX_LOG_ODDS = 60.0  # exp() stays finite in float32
MEANING = ("input gate score: the largest of three checks against the training X-rays (the image's "
           "layout on a 16x16 grid, its orientation, the network's pooled features), each divided "
           "by its threshold; in scope when <= threshold (docs/gate.md)")


def layout(x):
    """(N, GRID*GRID): the image's grey levels averaged over GRID x GRID cells, standardised."""
    import keras
    from keras import ops

    size = int(x.shape[1])
    cell = max(1, size // GRID)
    cells = min(GRID, size // cell)
    gray = ops.mean(ops.cast(x, "float32"), axis=-1, keepdims=True)
    pooled = keras.layers.AveragePooling2D(pool_size=cell, strides=cell, dtype="float32")(gray)
    v = ops.reshape(pooled[:, :cells, :cells, :], (-1, cells * cells))
    centred = v - ops.mean(v, axis=1, keepdims=True)
    spread = ops.sqrt(ops.mean(ops.square(centred), axis=1, keepdims=True))
    return centred / (spread + _EPS)


def features(model):
    """The input(s) of the model's last one-unit dense layer(s), side by side, or None."""
    from keras import ops

    try:
        found = _dense_inputs(model.outputs[0])
    except _NoHead:
        return None
    flat = [ops.reshape(ops.cast(t, "float32"), (-1, int(np.prod(t.shape[1:])))) for t in found]
    return flat[0] if len(flat) == 1 else ops.concatenate(flat, axis=1)


class _NoHead(Exception):
    pass


def _dense_inputs(tensor) -> list:
    import keras

    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise _NoHead()
    layer, node_index, _ = history
    inputs = layer._inbound_nodes[node_index].input_tensors
    if isinstance(layer, keras.layers.Dense) and layer.units == 1:
        return [inputs[0]]
    if isinstance(layer, keras.Model) and len(inputs) == 1:
        inner = keras.Model(layer.inputs, _dense_inputs(layer.outputs[0]), name=f"{layer.name}_features")
        out = inner(inputs[0])
        return list(out) if isinstance(out, list | tuple) else [out]
    if not inputs or isinstance(layer, keras.layers.InputLayer):
        raise _NoHead()
    return [t for i in inputs for t in _dense_inputs(i)]


def extractor(model, with_features: bool = True):
    """A Keras model from ``model``'s input to ``{"layout": ..., "features": ...}`` (features only
    when asked and the model has a one-unit dense head)."""
    import keras

    x = model.inputs[0]
    outs = {"layout": layout(x)}
    f = features(model) if with_features else None
    if f is not None:
        outs["features"] = f
    return keras.Model(x, outs, name="gate_vectors")


def vectors(model, images: np.ndarray, pre, batch_size: int = 64,
            with_features: bool = True) -> dict[str, np.ndarray]:
    """The gate's vectors of uint8 (N, H, W, 1) images: ``layout`` and ``features``."""
    net = extractor(model, with_features)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        x = pre.normalize(images[start:start + batch_size].astype(np.float32))
        for name, value in net(x, training=False).items():
            parts.setdefault(name, []).append(np.asarray(value, dtype=np.float64))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def transformed(images: np.ndarray, kind: str, rng) -> np.ndarray:
    """uint8 (N, H, W, 1) images rotated, flipped upside down, inverted or cut to a patch."""
    from PIL import Image

    if kind.startswith("rot"):
        return np.rot90(images, int(kind[3:]) // 90, axes=(1, 2))
    if kind == "upside_down":
        return images[:, ::-1]
    if kind == "inverted":
        return 255 - images
    size = images.shape[1]
    side = max(1, size // 4)  # a patch of a quarter of each side, stretched back to the full size
    out = np.empty_like(images)
    for i, img in enumerate(images):
        y, x = rng.integers(0, size - side + 1, 2)
        patch = Image.fromarray(img[y:y + side, x:x + side, 0])
        out[i, ..., 0] = np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR))
    return out


def _whitener(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a matrix W with ||(x - mean) W||^2 = the squared Mahalanobis distance under the
    Ledoit-Wolf covariance of ``v``."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(v)
    precision = np.linalg.inv(lw.covariance_)
    return lw.location_, np.linalg.cholesky((precision + precision.T) / 2)


def squared_distances(v: np.ndarray, mean: np.ndarray, whitener: np.ndarray) -> np.ndarray:
    return np.sum(np.square((v - mean) @ whitener), axis=1)


def _orientation_net(model, pre, images: np.ndarray, upright: np.ndarray, seed: int, batch_size: int):
    """The orientation network: the training images' layouts (0) against their transforms (1)."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(seed)
    wrong = [vectors(model, transformed(images, kind, rng), pre, batch_size, with_features=False)["layout"]
             for kind in TRANSFORMS]
    x = np.concatenate([upright, *wrong])
    y = np.r_[np.zeros(len(upright)), np.ones(len(x) - len(upright))]
    net = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=ALPHA, max_iter=200, early_stopping=True,
                        random_state=seed).fit(x, y)
    return {"orientation_w1": net.coefs_[0], "orientation_b1": net.intercepts_[0],
            "orientation_w2": net.coefs_[1][:, 0], "orientation_b2": net.intercepts_[1]}


def log_odds(v: np.ndarray, arrays) -> np.ndarray:
    """The orientation network's log-odds of "transformed" for layout vectors ``v``."""
    hidden = np.maximum(v @ arrays["orientation_w1"] + arrays["orientation_b1"], 0.0)
    return hidden @ arrays["orientation_w2"] + arrays["orientation_b2"]


def values(v: dict[str, np.ndarray], arrays) -> dict[str, np.ndarray]:
    """Each component's value (before its threshold) for the given vectors, in NumPy."""
    out = {"layout": squared_distances(v["layout"], arrays["layout_mean"], arrays["layout_whitener"])}
    if "orientation_w1" in arrays:
        out["orientation"] = np.exp(np.minimum(log_odds(v["layout"], arrays), _MAX_LOG_ODDS))
    if "features_mean" in arrays and "features" in v:
        out["features"] = squared_distances(v["features"], arrays["features_mean"],
                                            arrays["features_whitener"])
    return out


def score_vectors(v: dict[str, np.ndarray], arrays) -> np.ndarray:
    """The gate score (N,) of the given vectors, in NumPy (the graph computes the same)."""
    vals = values(v, arrays)
    return np.max(np.stack([vals[k] / float(arrays[f"{k}_threshold"]) for k in vals]), axis=0)


def fit_checks(model, pre, images: np.ndarray, seed: int = 0, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The three checks fitted on uint8 (N, H, W, 1) images, without their thresholds: the
    Gaussians of the layout and the features, and the orientation network."""
    fit_v = vectors(model, images, pre, batch_size)
    arrays: dict[str, np.ndarray] = {}
    for name in fit_v:
        mean, whitener = _whitener(fit_v[name])
        arrays |= {f"{name}_mean": mean, f"{name}_whitener": whitener}
    return arrays | _orientation_net(model, pre, images, fit_v["layout"], seed, batch_size)


def thresholds(held: dict[str, np.ndarray], floor: float = 1.0) -> dict[str, float]:
    """Each check's threshold from its values on held-out real X-rays: ``MARGIN`` times their
    ``QUANTILE``; the orientation check's never below the odds ``floor``."""
    limits = {name: float(np.quantile(vals, QUANTILE) * MARGIN) for name, vals in held.items()}
    if "orientation" in limits:
        limits["orientation"] = max(limits["orientation"], floor)
    return limits


def fit(model, pre, fit_images: np.ndarray, held_images: np.ndarray, *, seed: int = 0,
        batch_size: int = 64, held_out: str = "") -> tuple[bytes, dict]:
    """The gate of ``model``: its parameters (the bytes of ``gate.npz``) and its record for the
    metadata, from uint8 (N, H, W, 1) training images and held-out ones (``held_out`` says which)."""
    arrays = fit_checks(model, pre, fit_images, seed, batch_size)
    held = values(vectors(model, held_images, pre, batch_size), arrays)
    components = {}
    for name, limit in thresholds(held).items():
        arrays[f"{name}_threshold"] = np.asarray(limit, dtype=np.float64)
        components[name] = {"threshold": limit, "held_out_median": float(np.median(held[name])),
                            "held_out_flagged": int(np.sum(held[name] > limit))}
    scores = np.max(np.stack([held[k] / arrays[f"{k}_threshold"] for k in held]), axis=0)
    record = {"method": "layout (Mahalanobis), orientation (a network on the layout), pooled features "
                        "(Mahalanobis); the score is the largest, each over its threshold",
              "threshold": THRESHOLD, "output": GATE_OUTPUT, "grid": GRID, "components": components,
              "rule": f"each component's threshold is {MARGIN} x the {QUANTILE:.1%} quantile of its "
                      "values on held-out real X-rays (orientation: at least even odds)",
              "fit_images": int(len(fit_images)),
              "held_out": {"images": int(len(held_images)), "flagged": int(np.sum(scores > THRESHOLD)),
                           "which": held_out}}
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buf.getvalue(), record


def augmented(images: np.ndarray, pre, augment: str, seed: int) -> np.ndarray:
    """One copy of uint8 (N, H, W, 1) images through the training augmentation ``augment`` (the
    same pipeline as training, seeded), back as uint8: what the model was trained to see."""
    from ..core.plugins import get_catalog
    from .pipeline import build_augmentations, make_dataset

    layers = build_augmentations(augment, get_catalog(), seed)
    ds = make_dataset([f"image {i}" for i in range(len(images))], None, pre, batch_size=256, training=True,
                      augmentations=layers, seed=seed, images=images)
    x = np.concatenate([np.asarray(batch)[..., :1] for batch in ds])
    pixels = (x * np.float32(pre.std[0]) + np.float32(pre.mean[0])) / np.float32(pre.scale)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def fit_on_files(model, pre, fit_paths, held_paths, *, augment: str = "", seed: int = 0,
                 batch_size: int = 64, held_out: str = "") -> tuple[bytes, dict]:
    """``fit`` from image files (decoded by ``pre``'s rule): the training images and, with an
    ``augment`` spec, one augmented copy of each, so the gate accepts what the model was trained
    to see (a narrower field of view: 17.3% flagged without it, 2.7% with, bench/gate_variants.py)."""
    from ..data.decoding import decode_all

    images = decode_all(list(fit_paths), pre)
    if augment:
        images = np.concatenate([images, augmented(images, pre, augment, seed)])
    data, record = fit(model, pre, images, decode_all(list(held_paths), pre), seed=seed,
                       batch_size=batch_size, held_out=held_out)
    return data, record | {"augmented_copy": augment or None}


def load(data: bytes | str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data) as f:
        return {k: f[k] for k in f.files}


def _dense(x, kernel: np.ndarray, bias: np.ndarray, name: str, activation=None):
    import keras

    layer = keras.layers.Dense(kernel.shape[1], activation=activation, dtype="float32", name=name)
    out = layer(x)
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return out


def score_tensor(model, arrays: dict[str, np.ndarray]):
    """The ``gate`` output of ``model``'s graph, (N,), from its input and features."""
    import keras
    from keras import ops

    v = extractor(model, "features_mean" in arrays)(model.inputs[0])
    ratios = []
    for name in ("layout", "features"):
        if f"{name}_mean" in arrays:
            w = arrays[f"{name}_whitener"]
            z = _dense(v[name], w, -arrays[f"{name}_mean"] @ w, f"gate_{name}_whiten")
            ratios.append(ops.sum(ops.square(z), axis=1, keepdims=True) / float(arrays[f"{name}_threshold"]))
    if "orientation_w1" in arrays:
        h = _dense(v["layout"], arrays["orientation_w1"], arrays["orientation_b1"], "gate_orientation_1",
                   "relu")
        z = _dense(h, arrays["orientation_w2"][:, None], arrays["orientation_b2"], "gate_orientation_2")
        ratios.append(ops.exp(ops.minimum(z, _MAX_LOG_ODDS)) / float(arrays["orientation_threshold"]))
    score = ops.max(ops.concatenate(ratios, axis=1), axis=1)
    return keras.layers.Activation("linear", dtype="float32", name=GATE_OUTPUT)(score)


def with_gate(model, arrays: dict[str, np.ndarray]):
    """``model`` with one more output, ``gate`` (N,)."""
    import keras

    return keras.Model(model.inputs[0], list(model.outputs) + [score_tensor(model, arrays)], name=model.name)


def version_arrays(mv) -> dict[str, np.ndarray] | None:
    """A registry version's gate (its ``gate.npz``, sha256-checked); None for a version registered
    without one."""
    return load(str(mv.verify(GATE_FILE))) if GATE_FILE in mv.metadata.get("artifacts", {}) else None


def keras_scorer(model, mv):
    """``x -> gate scores (N,)`` for a registry version's Keras ``model``; None without a gate."""
    arrays = version_arrays(mv)
    if arrays is None:
        return None
    gated = with_gate(model, arrays)
    return lambda x: np.asarray(gated(x, training=False)[-1], dtype=np.float64)
