"""Reading and checking the ``pneumokit.*`` contract of an ONNX file (docs/onnx.md).

Every key a runtime relies on is checked, type and range, when a file is
opened, and the graph must take one float32 NHWC image batch of a dynamic
batch size and give one float probability per image. A file that does not
fit is refused with ``ModelFileError`` naming the key, never scored.
"""

from __future__ import annotations

import json
import math

from ..core.config import MAX_IMAGE_SIZE, is_int, is_number
from ..errors import ModelFileError
from .preprocessing import Preprocessing

_FIX = "the file is damaged or was edited: export it again with `pneumokit export`"
HEATMAP_OUTPUT = "heatmap"  # an optional output (``pneumokit.outputs``, docs/explain.md)
GATE_OUTPUT = "gate"  # the input gate's score (``pneumokit.gate``, docs/gate.md)
GATE_THRESHOLD = 1.0  # in scope when the score is at most this: each check is in units of its own threshold


def read_contract(session, path) -> dict:
    """The checked contract of an open onnxruntime session: class_names, threshold,
    preprocessing, input_name, model, output_name, heatmap (the heatmap output's
    name, or None when the file has none) and gate (``{"output", "threshold"}`` of the
    input gate, or None for a file exported before pneumokit had one)."""
    props = session.get_modelmeta().custom_metadata_map
    classes = _value(props, "pneumokit.class_names", path)
    if not (isinstance(classes, list) and len(classes) == 2 and all(isinstance(c, str) and c for c in classes)
            and classes[0] != classes[1]):
        raise _bad(path, "pneumokit.class_names", f"= {classes!r} must be two distinct class names")
    threshold = _value(props, "pneumokit.threshold", path, float)
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise _bad(path, "pneumokit.threshold", f"= {threshold!r} must be a finite number in [0, 1]")
    pre = _preprocessing(_value(props, "pneumokit.preprocessing", path), path)
    spec = _value(props, "pneumokit.input", path)
    name = spec.get("name") if isinstance(spec, dict) else None
    stated = {k: spec.get(k) for k in ("height", "width", "channels")} if isinstance(spec, dict) else {}
    if any(v is not None and v != getattr(pre, k) for k, v in stated.items()):
        raise _bad(path, "pneumokit.input", f"says {stated}, but pneumokit.preprocessing says height "
                                            f"{pre.height}, width {pre.width}, channels {pre.channels}")
    _check_graph(session, name, pre, path)
    model = _value(props, "pneumokit.model", path) if "pneumokit.model" in props else {}
    return {"class_names": classes, "threshold": threshold, "preprocessing": pre, "input_name": name,
            "model": model if isinstance(model, dict) else {},
            "output_name": session.get_outputs()[0].name, **_outputs(session, props, path)}


def _declared(props: dict, path) -> list[str]:
    """The output names ``pneumokit.outputs`` lists (none when the key is absent)."""
    if "pneumokit.outputs" not in props:
        return []
    declared = _value(props, "pneumokit.outputs", path)
    names = [o.get("name") for o in declared if isinstance(o, dict)] if isinstance(declared, list) else None
    if not names or not all(isinstance(n, str) for n in names):  # a list of str from here on
        raise _bad(path, "pneumokit.outputs", f"= {props['pneumokit.outputs'][:80]!r} must list the "
                                              "outputs as objects with a name")
    return [str(n) for n in names]


def _graph_output(session, name: str, rank: int, what: str, path):
    out = {o.name: o for o in session.get_outputs()}.get(name)
    if out is None or out.type not in _FLOAT_TYPES or len(out.shape) != rank or isinstance(out.shape[0], int):
        found = f"{out.type} {list(out.shape)}" if out is not None else "missing"
        raise ModelFileError(f"{path}: the graph's {name!r} output is {found}, but the metadata "
                             f"declares {what}; {_FIX}")


def _outputs(session, props: dict, path) -> dict:
    """``heatmap`` and ``gate`` of the contract, from the outputs ``pneumokit.outputs`` declares."""
    declared = _declared(props, path)
    return {"heatmap": _heatmap(session, declared, path), "gate": _gate(session, props, declared, path)}


def _heatmap(session, declared: list[str], path) -> str | None:
    """The heatmap output's name when ``pneumokit.outputs`` declares one: float, [batch, h, w]."""
    if HEATMAP_OUTPUT not in declared:
        return None
    _graph_output(session, HEATMAP_OUTPUT, 3, "a float [batch, h, w] map", path)
    return HEATMAP_OUTPUT


def _gate(session, props: dict, declared: list[str], path) -> dict | None:
    """The input gate (``pneumokit.gate``): its output, a float [batch] score, and its threshold."""
    if "pneumokit.gate" not in props:
        if GATE_OUTPUT in declared or GATE_OUTPUT in [o.name for o in session.get_outputs()]:
            raise _bad(path, "pneumokit.gate", f"is missing, but the file has a {GATE_OUTPUT!r} output: "
                                               "the input gate's contract was removed")
        return None
    gate = _value(props, "pneumokit.gate", path)
    threshold = gate.get("threshold") if isinstance(gate, dict) else None
    if not (is_number(threshold) and threshold == GATE_THRESHOLD) or gate.get("output") != GATE_OUTPUT:
        raise _bad(path, "pneumokit.gate", f"= {props['pneumokit.gate'][:80]!r} must give output "
                                           f"{GATE_OUTPUT!r} and threshold {GATE_THRESHOLD}")
    if GATE_OUTPUT not in declared:
        raise _bad(path, "pneumokit.outputs", f"does not list the {GATE_OUTPUT!r} output that "
                                              "pneumokit.gate names")
    _graph_output(session, GATE_OUTPUT, 1, "a float [batch] score", path)
    return {"output": GATE_OUTPUT, "threshold": float(threshold)}


def _value(props: dict, key: str, path, parse=json.loads):
    if key not in props:
        raise ModelFileError(f"{path}: not a pneumokit ONNX file (metadata key {key!r} missing); "
                             "export it with `pneumokit export`")
    try:
        return parse(props[key])
    except (TypeError, ValueError):
        raise _bad(path, key, f"= {props[key][:80]!r} is not valid") from None


def _bad(path, key: str, what: str) -> ModelFileError:
    return ModelFileError(f"{path}: metadata {key} {what}; {_FIX}")


def _preprocessing(d, path) -> Preprocessing:
    """The preprocessing rule, each field checked for type and range (no silent casts)."""
    key = "pneumokit.preprocessing"
    if not isinstance(d, dict):
        raise _bad(path, key, f"= {d!r} must be a JSON object")
    missing = [k for k in ("height", "width", "channels", "scale", "mean", "std") if k not in d]
    if missing:
        raise _bad(path, key, f"lacks {', '.join(missing)}")
    sizes = {k: d[k] for k in ("height", "width")}
    if not all(is_int(v, 1, MAX_IMAGE_SIZE) for v in sizes.values()) or d["height"] != d["width"]:
        raise _bad(path, key, f"has height {d['height']!r}, width {d['width']!r} (one integer size, "
                              f"1..{MAX_IMAGE_SIZE}, for a square input)")
    if not (is_int(d["channels"], 1, 3) and d["channels"] != 2):
        raise _bad(path, key, f"has channels {d['channels']!r} (1 or 3)")
    lists = (d["mean"], d["std"])
    if not (is_number(d["scale"]) and d["scale"] > 0 and all(isinstance(v, list) for v in lists)
            and all(is_number(x) for v in lists for x in v)):
        raise _bad(path, key, f"has scale {d['scale']!r}, mean {d['mean']!r}, std {d['std']!r} (a positive "
                              "number and lists of finite numbers)")
    if any(x == 0 for x in d["std"]) or not len(d["mean"]) == len(d["std"]) == d["channels"]:
        raise _bad(path, key, f"has std {d['std']} and mean {d['mean']} for {d['channels']} channel(s) "
                              "(one non-zero std and one mean per channel)")
    if not isinstance(d.get("jpeg_draft", False), bool):
        raise _bad(path, key, f"has jpeg_draft {d['jpeg_draft']!r} (true or false)")
    return Preprocessing.from_dict(d)


def _check_graph(session, name, pre: Preprocessing, path) -> None:
    """One float32 input (batch, H, W, C) with a dynamic batch; one float output per image."""
    inputs = session.get_inputs()
    if name not in [i.name for i in inputs]:
        raise _bad(path, "pneumokit.input", f"names input {name!r}, but the graph's inputs are "
                                            f"{[i.name for i in inputs]}")
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelFileError(f"{path}: the graph has {len(inputs)} inputs ({names}); a pneumokit model "
                             f"takes one image batch; {_FIX}")
    graph_in = inputs[0]
    expected = [pre.height, pre.width, pre.channels]
    shape = list(graph_in.shape)
    if (graph_in.type != "tensor(float)" or len(shape) != 4 or isinstance(shape[0], int)
            or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=True))):
        raise ModelFileError(f"{path}: the graph's input {name!r} is {graph_in.type} {shape}, but the "
                             f"contract needs float32 [batch, {', '.join(map(str, expected))}] with a "
                             f"dynamic batch; {_FIX}")
    out = session.get_outputs()[0]
    if out.type not in _FLOAT_TYPES or not _one_per_image(list(out.shape)):
        raise ModelFileError(f"{path}: the graph's output {out.name!r} is {out.type} {list(out.shape)}, "
                             "but the contract needs one floating-point probability per image, "
                             f"[batch, 1]; {_FIX}")


_FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")


def _one_per_image(dims: list) -> bool:
    """[batch] or [batch, 1], the batch dynamic (a fixed int would not follow the input's)."""
    if not dims or len(dims) > 2 or isinstance(dims[0], int):
        return False
    return len(dims) == 1 or not isinstance(dims[1], int) or dims[1] == 1
