"""Small synthetic datasets for fast tests (real-data tests are marked slow)."""

import re
import types
from pathlib import Path

import numpy as np
from PIL import Image

from pneumokit import hookimpl

NAMES = {
    "NORMAL": ["IM-{p:04d}-{i:04d}.jpeg", "NORMAL2-IM-{p:04d}-{i:04d}.jpeg"],
    "PNEUMONIA": ["person{p}_bacteria_{i}.jpeg", "person{p}_virus_{i}.jpeg"],
}


def xray_like(label: int, size: int, rng) -> np.ndarray:
    """A grayscale image whose class shows in its brightness pattern (learnable)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 90 + 60 * np.cos(3 * xx) * np.cos(2 * yy)
    if label:
        base = base + 70 * np.exp(-((xx - 0.35) ** 2 + (yy - 0.5) ** 2) / 0.02)
    noise = rng.normal(0, 12, (size, size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 12, size: int = 48, splits=("train",), seed: int = 0,
                 per_patient: int = 1) -> Path:
    """chest_xray-style folder of synthetic images with parseable patient ids."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                patient = 100 + i // per_patient + (1000 if split != "train" else 0)
                template = NAMES[cls][(i // per_patient) % 2]  # a patient keeps one name series
                name = template.format(p=patient, i=i)
                Image.fromarray(xray_like(label, size, rng)).save(folder / name, quality=95)
    return root


class FakeEntryPoint:
    """An entry point of a fake distribution whose module is given (or fails to import)."""

    def __init__(self, dist, name, module=None, error=None, version="1.0"):
        self.dist = types.SimpleNamespace(name=dist, version=version)
        self.name = name
        self.value = f"{dist.replace('-', '_')}.{name}"
        self._module, self._error = module, error

    def load(self):
        if self._error:
            raise self._error
        return self._module


def make_module(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def tiny_onnx(path: Path, size: int = 8, props: dict | None = None, nan: bool = False,
              out_type=None, batch="batch", extra_input: bool = False) -> Path:
    """A hand-built ONNX model with pneumokit's contract: sigmoid(mean of the pixels).

    ``props`` overrides metadata keys (a value of None removes the key); ``nan``
    makes the graph output NaN (0/0), as a damaged weight would; ``out_type``
    casts the output (e.g. to int64); ``batch`` fixes the batch size when an int;
    ``extra_input`` adds a second graph input.
    """
    import json

    import onnx
    from onnx import TensorProto, helper

    from pneumokit.data.preprocessing import Preprocessing
    from pneumokit.inference.export import metadata_props

    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1)]
    if nan:
        nodes += [helper.make_node("Sub", ["mean", "mean"], ["zero"]),
                  helper.make_node("Div", ["zero", "zero"], ["logit"])]
    else:
        nodes.append(helper.make_node("Identity", ["mean"], ["logit"]))
    final = "probability" if out_type is None else "sigmoid"
    nodes.append(helper.make_node("Sigmoid", ["logit"], [final]))
    if out_type is not None:
        nodes.append(helper.make_node("Cast", [final], ["probability"], to=out_type))
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, size, size, 1])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [batch, 1]))
    graph = helper.make_graph(
        nodes, "tiny", inputs,
        [helper.make_tensor_value_info("probability", out_type or TensorProto.FLOAT, [batch, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    pre = Preprocessing.from_preset("unit", size, 1).to_dict()
    meta = {"name": "tiny", "version": 1, "threshold": 0.5, "preprocessing": pre,
            "architecture": {"name": "hand_built"}}
    entries = metadata_props(meta)
    for key, value in (props or {}).items():
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value if isinstance(value, str) else json.dumps(value)
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


# train options for a fit of seconds on ``make_dataset``'s images (the session's exported models)
TINY_TRAIN = ["--epochs", "2", "--image-size", "64", "--batch-size", "8", "--augment", "crop",
              "--val-fraction", "0.25", "--quiet", "--seed", "3"]

# train/cv options for a fit of seconds on ``make_dataset``'s images (tests of recipes and members)
TINY_FIT = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--augment", "crop", "--val-fraction",
            "0.25", "--quiet", "--seed", "3"]


# the sections of a model card (pneumokit/registry/card.py), in order
CARD_SECTIONS = ["Model details", "Intended use", "Out-of-scope use", "Training data", "Evaluation",
                 "Calibration", "Input gate", "Site evaluations", "Adaptation lineage", "Export",
                 "Known limitations"]


def assert_complete(text: str) -> None:
    """Every section of the card, in order, and no field left as a Python repr."""
    positions = [text.index(f"\n## {s}\n") for s in CARD_SECTIONS]
    assert positions == sorted(positions)
    leaks = [line for line in text.splitlines() if "{'" in line or re.search(r"\bNone\b(?! yet)", line)]
    assert not leaks
