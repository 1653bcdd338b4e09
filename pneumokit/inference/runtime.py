"""Inference with onnxruntime: CUDA when present, CPU otherwise; preprocessing from the file.

No TensorFlow is imported here: a served model needs onnxruntime, NumPy and Pillow only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import IMAGE_EXTENSIONS, INFERENCE_BATCH_SIZE
from ..core.files import printable, unreadable
from ..core.layout import METADATA_FILE
from ..data.contract import read_contract
from ..errors import (
    ConfigError,
    DeviceError,
    ImageDecodeError,
    ModelFileError,
    OutOfScopeError,
    RegistryError,
    one_line,
)

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(providers: str | Sequence[str], available: Sequence[str]) -> list[str]:
    """``"auto"``: CUDA then CPU, as available; ``"cpu"``/``"cuda"``; or an explicit list."""
    if providers == "auto":
        return [p for p in PREFERRED_PROVIDERS if p in available]
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise DeviceError("--providers cuda: CUDAExecutionProvider is not available here (this "
                              f"onnxruntime has {', '.join(available)}); install onnxruntime-gpu "
                              "(pip install 'pneumokit[gpu]') on a machine with an NVIDIA GPU, or use "
                              "--providers auto")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if isinstance(providers, str):
        raise ConfigError(f"providers {providers!r}: choose auto, cpu or cuda")
    missing = [p for p in providers if p not in available]
    if missing:
        raise DeviceError(f"providers {', '.join(missing)} not available; this onnxruntime has "
                          f"{', '.join(available)}")
    return list(providers)


def provider_options(providers: Sequence[str], tf32: bool = False) -> list[dict]:
    """onnxruntime provider options, one dict per provider: CUDA computes in full float32
    (``use_tf32=0``) unless ``tf32`` is asked for. Its default, TF32 matrix math, moved a
    cnn_optimized model's probabilities by up to 1.9e-3 on an H100 (issue 13), twenty times
    the export's 1e-4 parity promise; with ``use_tf32=0`` the difference was 4.2e-7."""
    return [{"use_tf32": "1" if tf32 else "0"} if p == "CUDAExecutionProvider" else {} for p in providers]


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded recursively to their images (sorted). Linked
    sub-folders are followed, each real folder once (a link loop ends there)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.is_dir():
            out.append(path)
            continue
        seen: set[str] = set()
        found = []
        for folder, dirs, files in os.walk(path, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:
                dirs.clear()
                continue
            seen.add(real)
            found += [Path(folder) / f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        out += sorted(found)
    return out


def check_threshold(threshold: float, where: str) -> float:
    """A decision threshold as a float in [0, 1]; ``ConfigError`` naming ``where`` otherwise."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{where}: threshold {threshold!r} must be a finite number in [0, 1]")
    return value


class Predictor:
    """An ONNX model ready to score X-ray files.

    Parameters
    ----------
    source : a ``.onnx`` file, or a registry ref (``name``, ``name:3``, ``name@production``)
        of an exported model. A file inside a registry version folder is checked
        against that version's recorded sha256, as a ref is.
    providers : ``"auto"`` (CUDA, then CPU), ``"cpu"``, ``"cuda"`` or a list.
    tf32 : let the CUDA provider use TF32 matrix math (faster on some models, but
        probabilities move by up to ~2e-3); off by default: full float32. ``tf32``
        says whether it is in use.
    registry : the registry for refs (default ``Registry()``).

    The file's ``pneumokit.*`` metadata (the contract, docs/onnx.md) is checked
    when it is opened; ``ModelFileError`` names the first key that is wrong.
    ``providers_in_use`` is what the session actually runs on (``session.get_providers()``).
    ``ref`` is the registry version the file was checked against (``name:N``), or None for a
    file outside any registry version: its ``model_info`` is then the file's own claim.
    """

    def __init__(self, source: str | os.PathLike, providers="auto", registry=None, *, tf32: bool = False):
        import onnxruntime as ort

        path, self.ref = self._locate(source, registry)
        chosen = choose_providers(providers, ort.get_available_providers())
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: a refused file is reported once, by us
            self.session = ort.InferenceSession(str(path), options, providers=chosen,
                                                provider_options=provider_options(chosen, tf32))
        except Exception as exc:  # onnxruntime raises its own types for unreadable models
            raise ModelFileError(f"{path}: onnxruntime cannot load it ({one_line(exc)[:300]}); "
                                 "export it again with `pneumokit export`") from None
        self.path = path
        self.providers_in_use = self.session.get_providers()
        self.tf32 = tf32 and "CUDAExecutionProvider" in self.providers_in_use
        contract = read_contract(self.session, path)
        self.preprocessing = contract["preprocessing"]
        self.threshold = contract["threshold"]
        self.class_names = contract["class_names"]
        self.input_name = contract["input_name"]
        self.output_name = contract["output_name"]
        self.heatmap_output = contract["heatmap"]  # None unless exported with --heatmap
        self.gate = contract["gate"]  # {"output", "threshold"}; None for a file exported without one
        self.model_info = contract["model"]

    @staticmethod
    def _locate(source, registry) -> tuple[Path, str | None]:
        path = Path(source)
        if path.suffix.lower() == ".onnx" or os.sep in str(source):
            why = unreadable(path)
            if why is not None:
                raise ModelFileError(f"{path}: {why}")
            return path, registered_ref(path)
        from ..registry.store import Registry
        from .export import ONNX_FILE

        mv = (registry or Registry()).get(str(source))
        if ONNX_FILE not in mv.metadata.get("artifacts", {}):
            raise RegistryError(f"{mv.ref} has no ONNX file yet: run `pneumokit export {mv.ref}`")
        return mv.verify(ONNX_FILE), mv.ref

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N,) for a preprocessed float32 (N, H, W, C) batch (NaN where the
        model's output is not a probability; ``predict_files`` reports those as errors).
        No gate: ``score_batch`` gives its scores too."""
        return self.score_batch(x)["probability"]

    def heatmap_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N,) and heatmaps (N, h, w) in [0, 1] (docs/explain.md); the file must
        have been exported with ``--heatmap``."""
        out = self.score_batch(x, heatmap=True)
        return out["probability"], out["heatmap"]

    def score_batch(self, x: np.ndarray, heatmap: bool = False) -> dict[str, Any]:
        """``probability`` (N,), ``gate`` (N,) scores when the file has the input gate (else
        None; in scope where <= ``gate_threshold``) and ``heatmap`` (N, h, w) when asked. NaN
        marks an output that is not what the contract says (a damaged file)."""
        if heatmap and self.heatmap_output is None:
            raise ModelFileError(f"{self.path} has no heatmap output: export the model with "
                                 "`pneumokit export REF --heatmap`")
        names = [self.output_name] + ([self.heatmap_output] if heatmap else []) + \
            ([self.gate["output"]] if self.gate else [])
        outs = dict(zip(names, self.session.run(names, {self.input_name: x}), strict=True))
        prob = np.asarray(outs[self.output_name], dtype=np.float64).ravel()
        if prob.size != len(x):
            raise ModelFileError(f"{self.path}: gave {prob.size} outputs for {len(x)} images, not one "
                                 "probability per image; export it again with `pneumokit export`")
        prob = np.where(np.isfinite(prob) & (prob >= 0) & (prob <= 1), prob, np.nan)
        result: dict[str, Any] = {"probability": prob, "heatmap": None, "gate": None}
        if self.gate:  # +inf is far out, not damage; NaN or a negative score is damage
            score = np.asarray(outs[self.gate["output"]], dtype=np.float64).ravel()
            result["gate"] = np.where(score >= 0, np.minimum(score, np.finfo(np.float32).max), np.nan)
        if heatmap:
            heat = np.asarray(outs[self.heatmap_output], dtype=np.float32)
            bad = ~np.all(np.isfinite(heat) & (heat >= 0) & (heat <= 1), axis=(1, 2))
            result |= {"probability": np.where(bad, np.nan, prob), "heatmap": heat}
        return result

    def predict_files(self, paths: Sequence[str | os.PathLike], batch_size: int = INFERENCE_BATCH_SIZE,
                      threshold: float | None = None, heatmap: bool = False, gate: bool = True) -> list[dict]:
        """One row per file: path, probability, label, in_scope, gate_score, reason, notes, error
        (and ``heatmap``, an (h, w) array, when asked). With ``gate`` (the default), a file the
        input gate refuses (docs/gate.md) gets ``in_scope: False``, a ``reason`` and no probability
        or label; ``gate=False`` labels everything (``in_scope: None``), for research use.
        Unreadable files, and files whose output is not a finite probability, get ``error``
        instead (never a label)."""
        rows = self.predict_sources([(printable(p), p) for p in paths], batch_size, threshold, heatmap, gate)
        return [{"path": row.pop("name"), **row} for row in rows]

    def predict_sources(self, sources: Sequence[tuple[str, object]], batch_size: int = INFERENCE_BATCH_SIZE,
                        threshold: float | None = None, heatmap: bool = False,
                        gate: bool = True) -> list[dict]:
        """``predict_files`` for ``(name, source)`` pairs, a source being a path or the bytes of
        an image file (JPEG, PNG or DICOM); rows carry ``name`` and keep the given order."""
        threshold = self.threshold if threshold is None else check_threshold(threshold, "predict")
        rows: list[dict] = []
        for start in range(0, len(sources), batch_size):
            rows += self._score_chunk(sources[start:start + batch_size], threshold, heatmap, gate)
        return rows

    def _score_chunk(self, chunk, threshold: float, heatmap: bool, gate: bool) -> list[dict]:
        rows: list = [None] * len(chunk)  # every one is set below
        images, ok, notes = [], [], []
        for i, (name, source) in enumerate(chunk):
            pixels, found, rows[i] = read_source(self.preprocessing, name, source, gate)
            if pixels is not None:
                images.append(pixels)
                ok.append(i)
                notes.append(found)
        if images:
            out = self.score_batch(self.preprocessing.normalize(np.stack(images).astype(np.float32)), heatmap)
            for j, i in enumerate(ok):
                rows[i] = self._scored_row(chunk[i][0], out, j, threshold, gate, notes[j])
        return rows

    def _scored_row(self, name: str, out: dict, j: int, threshold: float, gate: bool, notes) -> dict:
        score = None if out["gate"] is None else out["gate"][j]
        if not gate and score is not None and math.isnan(score):
            score = None  # the gate is off: a damaged score is not acted on
        gate_threshold = self.gate["threshold"] if self.gate else None
        row = scored_row(name, out["probability"][j], score, threshold, self.class_names,
                         gate_threshold if gate else None, notes)
        if out["heatmap"] is not None and row["label"] is not None:
            row["heatmap"] = out["heatmap"][j]
        return row


def scored_row(name: str, prob: float, score: float | None, threshold: float, class_names,
               gate_threshold: float | None, notes: str | None = None) -> dict:
    """The row of a scored image: an error if an output is not finite; out of scope, with the
    reason and no probability or label, if ``score`` is over ``gate_threshold``; else labelled.
    ``gate_threshold`` None: the gate is off (or the file has none) and ``in_scope`` is None."""
    if math.isnan(prob) or (score is not None and math.isnan(score)):
        return _row(name, error=NOT_FINITE)
    score = None if score is None else float(score)
    if gate_threshold is not None and score is not None and score > gate_threshold:
        return _row(name, in_scope=False, gate_score=score, notes=notes,
                    reason=f"{NOT_LIKE} (score {score:.3g} > {gate_threshold:g})")
    in_scope = True if gate_threshold is not None and score is not None else None
    return _row(name, probability=float(prob), label=class_names[int(prob >= threshold)], in_scope=in_scope,
                gate_score=score, notes=notes)


NOT_LIKE = "image is not like the chest X-rays this model was trained on"
NOT_FINITE = ("the model's output is not a probability in [0, 1] (NaN or out of range): the ONNX "
              "file or its metadata is damaged; check it with `pneumokit registry verify`")


def gate_state(gate: bool, has_gate: bool) -> str:
    """``on``, ``off`` (asked for) or ``absent`` (a model registered or exported without one)."""
    return "off" if not gate else ("on" if has_gate else "absent")


def read_source(preprocessing, name: str, source, scope: bool):
    """``(pixels, notes, None)`` for a file the preprocessing rule reads (after the file checks of
    the input gate when ``scope``), or ``(None, None, row)``: its out-of-scope or error row."""
    try:
        pixels, notes = preprocessing.load_checked(source, scope=scope)
    except OutOfScopeError as exc:
        return None, None, _row(name, in_scope=False, reason=str(exc))
    except (ImageDecodeError, OSError) as exc:
        return None, None, _row(name, error=str(exc))
    return pixels, "; ".join(notes) or None, None


def _row(name: str, *, probability=None, label=None, in_scope=None, gate_score=None, reason=None,
         notes=None, error=None) -> dict:
    """One result row; every key always present (docs/gate.md lists them)."""
    return {"name": name, "probability": probability, "label": label, "in_scope": in_scope,
            "gate_score": gate_score, "reason": reason, "notes": notes, "error": error}


def registered_ref(path: Path) -> str | None:
    """The ref (``name:N``) of the registry version folder that records ``path`` (or the file a
    link points to), after its sha256 check; None when no version records it."""
    real = path.resolve()
    meta_path = real.parent / METADATA_FILE
    if not meta_path.is_file():
        return None
    from ..registry.store import ModelVersion, read_metadata

    meta = read_metadata(real.parent, str(real.parent))
    if real.name not in meta.get("artifacts", {}):
        return None
    name = meta.get("name", real.parent.parent.name)
    mv = ModelVersion(name, meta.get("version", 0), real.parent, meta)
    mv.verify(real.name)
    return mv.ref
