"""Inference with onnxruntime: CUDA when present, CPU otherwise; preprocessing from the file.

No TensorFlow is imported here: a served model needs onnxruntime, NumPy and Pillow only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .config import IMAGE_EXTENSIONS
from .preprocessing import ImageDecodeError, Preprocessing

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(providers: str | Sequence[str], available: Sequence[str]) -> list[str]:
    """``"auto"``: CUDA then CPU, as available; ``"cpu"``/``"cuda"``; or an explicit list."""
    if providers == "auto":
        return [p for p in PREFERRED_PROVIDERS if p in available]
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError("CUDAExecutionProvider is not available: install onnxruntime-gpu "
                               "(pip install 'pneumokit[gpu]') on a machine with an NVIDIA GPU")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return list(providers)


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded recursively to their images (sorted)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(path)
    return out


class Predictor:
    """An ONNX model ready to score X-ray files.

    Parameters
    ----------
    source : a ``.onnx`` file, or a registry ref (``name``, ``name:3``, ``name@production``)
        of an exported model.
    providers : ``"auto"`` (CUDA, then CPU), ``"cpu"``, ``"cuda"`` or a list.
    registry : the registry for refs (default ``Registry()``).

    ``providers_in_use`` is what the session actually runs on (``session.get_providers()``).
    """

    def __init__(self, source: str | os.PathLike, providers="auto", registry=None):
        import onnxruntime as ort

        path = Path(source)
        if not (path.suffix == ".onnx" and path.is_file()):
            from .export import ONNX_FILE
            from .registry import Registry, RegistryError

            mv = (registry or Registry()).get(str(source))
            if ONNX_FILE not in mv.metadata.get("artifacts", {}):
                raise RegistryError(f"{mv.ref} has no ONNX file yet: run `pneumokit export {mv.ref}`")
            path = mv.verify(ONNX_FILE)
        self.path = path
        self.session = ort.InferenceSession(
            str(path), providers=choose_providers(providers, ort.get_available_providers()))
        self.providers_in_use = self.session.get_providers()
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.preprocessing = Preprocessing.from_dict(json.loads(props["pneumokit.preprocessing"]))
            self.threshold = float(props["pneumokit.threshold"])
            self.class_names = json.loads(props["pneumokit.class_names"])
            self.input_name = json.loads(props["pneumokit.input"])["name"]
            self.model_info = json.loads(props.get("pneumokit.model", "{}"))
        except KeyError as exc:
            raise ValueError(f"{path}: not a pneumokit ONNX file (metadata key {exc} missing)") from None

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N,) for a preprocessed float32 (N, H, W, C) batch."""
        return self.session.run(None, {self.input_name: x})[0].ravel()

    def predict_files(self, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                      threshold: float | None = None) -> list[dict]:
        """One row per file: path, probability, label; unreadable files get ``error`` instead."""
        threshold = self.threshold if threshold is None else threshold
        rows: list[dict] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images, ok = [], []
            for p in chunk:
                try:
                    images.append(self.preprocessing.load(p))
                    ok.append(p)
                except (ImageDecodeError, OSError) as exc:
                    rows.append({"path": str(p), "probability": None, "label": None,
                                 "error": str(exc)})
            if images:
                x = self.preprocessing.normalize(np.stack(images).astype(np.float32))
                for p, prob in zip(ok, self.predict_batch(x), strict=True):
                    rows.append({"path": str(p), "probability": float(prob),
                                 "label": self.class_names[int(prob >= threshold)], "error": None})
        order = {str(p): i for i, p in enumerate(paths)}
        return sorted(rows, key=lambda r: order[r["path"]])
