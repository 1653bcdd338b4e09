"""Prove a runtime scores a pneumokit ONNX file as pneumokit did: re-score its golden vectors.

    python golden_check.py VERSION_FOLDER [onnxruntime|reference]

VERSION_FOLDER is an exported version (registry/NAME/N) or a copy of its model.onnx and golden/.
Uses only NumPy and the chosen runtime: onnxruntime, or the ONNX reference evaluator
(onnx.reference, a second implementation written from the ONNX specification).
Exit status 1, naming the vector, when an output is off by more than the stored tolerance.
"""

import json
import sys
from pathlib import Path

import numpy as np


def session(model: Path, runtime: str):
    """A function from an input batch to {output name: array}."""
    if runtime == "reference":
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(str(model))
        return lambda name, x: dict(zip(ref.output_names, ref.run(None, {name: x}), strict=True))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda name, x: dict(zip(names, sess.run(names, {name: x}), strict=True))


def main(folder: str, runtime: str = "onnxruntime") -> int:
    folder = Path(folder)
    expected = json.loads((folder / "golden" / "expected.json").read_text())
    stored = np.load(folder / "golden" / "vectors.npz")
    outputs = session(folder / "model.onnx", runtime)(expected["input"]["name"], stored["input"])
    probability = next(iter(outputs))  # the first output is the probability
    tol, failed = expected["tolerance"], 0
    for v in expected["vectors"]:
        i, diffs = v["index"], {}
        for key, name in (("probability", probability), ("gate", "gate"), ("heatmap", "heatmap")):
            if key in stored.files:
                want = stored[key][i].astype(np.float64)
                got = np.asarray(outputs[name], np.float64)[i].reshape(want.shape)
                scale = np.maximum(1.0, np.abs(want)) if key == "gate" else 1.0  # gate: relative
                diffs[key] = float(np.max(np.abs(got - want) / scale))
        worst = max(diffs.values())
        failed += worst > tol
        print(f"{'ok  ' if worst <= tol else 'FAIL'} vector {i + 1} {v['file']}: "
              + ", ".join(f"{k} |diff| {d:.1e}" for k, d in diffs.items()))
    n = len(expected["vectors"])
    print(f"{n - failed} of {n} vectors within {tol:g} ({runtime})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
