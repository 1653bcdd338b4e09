"""Golden self-test vectors: a few reference inputs stored with an exported version, with the
outputs its ONNX file gave them at export, so any runtime can prove it scores the file as
pneumokit does before the first patient.

``golden/`` in the version folder holds the source images (lossless PNG, so decoding is the same
everywhere), ``vectors.npz`` (``input``: the preprocessed float32 NHWC tensors; ``probability``,
``gate``, ``heatmap``: the expected outputs, where the file has them) and ``expected.json`` (the
same figures for a reader, with a heatmap checksum). All are registry artifacts with a sha256.
``check`` replays both halves: the preprocessing of the sources, and the ONNX file on the tensors.
"""

from __future__ import annotations

import io
import json

import numpy as np

from ..core.config import CLASS_NAMES, DEMO_DATA_DIR
from ..core.layout import GOLDEN_FOLDER, ONNX_FILE
from ..data.contract import GATE_OUTPUT, HEATMAP_OUTPUT
from .store import sha256_bytes

FOLDER = GOLDEN_FOLDER
VECTORS = f"{FOLDER}/vectors.npz"
EXPECTED = f"{FOLDER}/expected.json"
PER_CLASS = 2
PREPROCESSING_TOLERANCE = 1e-6  # the tensors are decoded from lossless PNGs: any drift is the rule's


def sources() -> list[tuple[str, bytes]]:
    """The reference inputs as ``(file name, PNG bytes)``: real X-rays of each class from the bundled
    demo set, and one of them inverted (a negative: what the input gate exists to flag)."""
    from PIL import Image

    out: list[tuple[str, np.ndarray]] = []
    for cls in CLASS_NAMES:
        for path in sorted((DEMO_DATA_DIR / "train" / cls).glob("*.jpeg"))[:PER_CLASS]:
            with Image.open(path) as img:
                gray = np.asarray(img.convert("L"))
            out.append((f"{len(out) + 1:02d}-{cls}-{path.stem}.png", gray))
    out.append((f"{len(out) + 1:02d}-inverted-{out[0][0][3:]}", 255 - out[0][1]))
    return [(name, _png(pixels)) for name, pixels in out]


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def build(onnx_bytes: bytes, pre, names: list[str], tolerance: float) -> tuple[dict[str, bytes], dict]:
    """The ``golden/`` artifacts of an ONNX file with outputs ``names``, and their metadata record."""
    import onnxruntime as ort

    files = sources()
    x = pre.prepare([data for _, data in files])
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
    arrays = {"input": x, "probability": np.asarray(outputs[names[0]], np.float32).reshape(-1)}
    if GATE_OUTPUT in outputs:
        arrays["gate"] = np.asarray(outputs[GATE_OUTPUT], np.float32).reshape(-1)
    if HEATMAP_OUTPUT in outputs:
        arrays["heatmap"] = np.asarray(outputs[HEATMAP_OUTPUT], np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    vectors = [_expected(i, name, data, arrays) for i, (name, data) in enumerate(files)]
    expected = {"tolerance": tolerance, "gate_tolerance": "relative to max(1, |expected|)",
                "input": {"name": session.get_inputs()[0].name, "layout": "NHWC", "dtype": "float32",
                          "shape": list(x.shape)},
                "vectors": vectors}
    artifacts = {f"{FOLDER}/{v['file']}": data for v, (_, data) in zip(vectors, files, strict=True)}
    artifacts |= {VECTORS: buf.getvalue(), EXPECTED: json.dumps(expected, indent=2).encode()}
    record = {"folder": FOLDER, "vectors": [v["file"] for v in vectors], "tolerance": tolerance,
              "sha256": sha256_bytes(artifacts[VECTORS])}
    return artifacts, record


def _expected(i: int, name: str, data: bytes, arrays: dict) -> dict:
    entry = {"index": i, "file": name, "sha256": sha256_bytes(data),
             "probability": float(arrays["probability"][i])}
    if "gate" in arrays:
        entry["gate"] = float(arrays["gate"][i])
        entry["in_scope"] = bool(arrays["gate"][i] <= 1.0)
    if "heatmap" in arrays:
        heat = arrays["heatmap"][i]
        entry["heatmap_checksum"] = {"sum": float(heat.sum()), "max": float(heat.max()),
                                     "argmax": [int(v) for v in np.unravel_index(heat.argmax(), heat.shape)]}
    return entry


def check(mv) -> list[str]:
    """Replay a version's golden vectors: each source through the recorded preprocessing must give
    its stored tensor, and the ONNX file must give the stored outputs within the export's tolerance.
    One sentence per drifting vector, naming it."""
    import onnxruntime as ort

    from ..data.preprocessing import Preprocessing

    record = mv.metadata.get("golden")
    if not record:
        return []
    expected = json.loads(mv.verify(EXPECTED).read_text())
    with np.load(mv.verify(VECTORS)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    problems = []
    for v in expected["vectors"]:
        again = pre.prepare([mv.verify(f"{FOLDER}/{v['file']}")])[0]
        diff = float(np.max(np.abs(again - arrays["input"][v["index"]])))
        if not diff <= PREPROCESSING_TOLERANCE:
            problems.append(f"{mv.path / FOLDER / v['file']}: golden vector {v['index'] + 1} preprocesses to "
                            f"a tensor {diff:.2e} away from the stored one (tolerance "
                            f"{PREPROCESSING_TOLERANCE:g}): the decoding or resizing here differs from "
                            "the export's (Pillow version?)")
    onnx_path = mv.verify(ONNX_FILE)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {expected["input"]["name"]: arrays["input"]}), strict=True))
    return problems + _drift(mv, expected, arrays, got)


def _drift(mv, expected: dict, arrays: dict, got: dict) -> list[str]:
    tol = float(expected["tolerance"])
    problems = []
    first = next(iter(got))  # the probability output comes first (pneumokit.output)
    for v in expected["vectors"]:
        i, out = v["index"], []
        for key, name in (("probability", first), ("gate", GATE_OUTPUT), ("heatmap", HEATMAP_OUTPUT)):
            if key not in arrays:
                continue
            want = np.asarray(arrays[key][i], np.float64)
            have = np.asarray(got[name], np.float64)[i].reshape(want.shape) if name in got else None
            if have is None:
                out.append(f"the {name} output is gone")
                continue
            scale = np.maximum(1.0, np.abs(want)) if key == "gate" else 1.0
            diff = float(np.max(np.abs(have - want) / scale))
            if not diff <= tol:
                out.append(f"{key} {float(np.ravel(have)[0]):.6g} where {float(np.ravel(want)[0]):.6g} was "
                           f"stored (|diff| {diff:.2e} > {tol:g})" if key != "heatmap" else
                           f"heatmap |diff| {diff:.2e} > {tol:g}")
        if out:
            problems.append(f"{mv.path / ONNX_FILE}: golden vector {i + 1} ({v['file']}): "
                            + "; ".join(out) + ": the file no longer scores as it did at export")
    return problems
