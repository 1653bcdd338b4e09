"""``pneumokit evaluate``: metrics of a registered model on a split, with ROC and confusion plots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .config import CLASS_NAMES, INFERENCE_BATCH_SIZE, SPLITS
from .data import DatasetError, scan
from .errors import ConfigError, IntegrityError, ModelFileError
from .files import check_output_folder, write_csv_atomic, write_json_atomic
from .metrics import binary_metrics
from .preprocessing import Preprocessing
from .registry import Registry
from .runtime import NOT_FINITE, check_threshold


def _keras_probabilities(registry: Registry, ref: str, paths, pre: Preprocessing) -> np.ndarray:
    from .pipeline import make_dataset

    model = registry.load_model(ref)
    return model.predict(make_dataset(paths, None, pre, batch_size=INFERENCE_BATCH_SIZE), verbose=0).ravel()


def _training_overlap(mv, index: pd.DataFrame) -> int | None:
    """How many of these images (by content) the model was trained on; None if not recorded."""
    from .provenance import TRAINING_IMAGES

    if TRAINING_IMAGES not in mv.metadata.get("artifacts", {}):
        return None
    trained = set(mv.verify(TRAINING_IMAGES).read_text().split())
    return int(index["sha256"].isin(trained).sum())


def evaluate(ref: str, data_dir: str | os.PathLike | None = None, *, split: str = "test",
             registry: Registry | None = None, output: str | os.PathLike | None = None,
             skip_bad: bool = False) -> dict:
    """Score ``ref`` on one split of a dataset.

    Uses the version's ONNX file when it has one (what is deployed), else the
    Keras model; both apply the model's recorded preprocessing. Reports
    metrics at the model's stored threshold and at 0.5, and writes
    ``metrics.json``, ``predictions.csv``, ``roc.png`` and ``confusion.png`` to ``output``.
    """
    from .export import ONNX_FILE
    from .plots import confusion, roc_curves

    registry = registry or Registry()
    if str(split).lower() not in SPLITS:
        raise ConfigError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    split = str(split).lower()  # folders match case-insensitively too
    mv = registry.get(ref)
    out = Path(output) if output else Path("runs") / "evaluate" / f"{mv.name}-v{mv.version}-{split}"
    check_output_folder(out, "--output", create=True, registry_root=registry.root)
    result = scan(data_dir, splits=[split])
    index = result.require_usable(skip_bad=skip_bad)
    index = index[index["split"] == split]
    if index.empty:
        raise DatasetError(f"no {split}/ images in {result.root}; choose another --split")
    paths, y = index["path"].tolist(), index["label"].to_numpy()
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    if ONNX_FILE in mv.metadata.get("artifacts", {}):
        from .decoding import decode_all
        from .runtime import Predictor

        predictor = Predictor(mv.ref, registry=registry)  # checks the file's sha256 first
        threshold = _exported_threshold(mv, predictor)
        images = decode_all(paths, pre)  # threaded, as in training
        step = INFERENCE_BATCH_SIZE
        prob = np.concatenate([predictor.predict_batch(pre.normalize(images[i:i + step].astype(np.float32)))
                               for i in range(0, len(paths), step)])
        engine = f"onnxruntime ({', '.join(predictor.providers_in_use)})"
    else:
        threshold = check_threshold(mv.metadata.get("threshold"), str(mv.path / "metadata.json"))
        prob = _keras_probabilities(registry, mv.ref, paths, pre)
        engine = "keras"
    bad = np.flatnonzero(~np.isfinite(prob))
    if bad.size:
        raise ModelFileError(f"{mv.ref} gave no probability for {bad.size} of {len(paths)} images "
                             f"(e.g. {paths[bad[0]]}): {NOT_FINITE}")
    seen = _training_overlap(mv, index)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "ref": mv.ref, "data": str(result.root), "split": split, "images": len(paths),
        "engine": engine, "threshold": threshold,
        "images_seen_in_training": seen,
        "at_threshold": binary_metrics(y, prob, threshold),
        "at_0.5": binary_metrics(y, prob, 0.5),
        "skipped": [p.to_dict() for p in result.problems],
        "files": {name: str(out / name) for name in
                  ("metrics.json", "predictions.csv", "roc.png", "confusion.png")},
    }
    write_csv_atomic(out / "predictions.csv", pd.DataFrame({"path": paths, "label": y, "probability": prob}))
    if len(np.unique(y)) == 2:
        roc_curves([(f"{mv.ref} on {split}", y, prob)], out / "roc.png")
    else:  # one class only: no ROC curve, no AUC
        report["files"].pop("roc.png")
        report["one_class"] = (f"only {CLASS_NAMES[int(y[0])]} images in {split}: AUC is undefined "
                               "(null), and so is either recall or specificity")
    confusion(report["at_threshold"]["confusion_matrix"], out / "confusion.png", CLASS_NAMES,
              f"{mv.ref} on {split}, threshold {threshold:.3f}")
    write_json_atomic(out / "metrics.json", report)
    return report


def _exported_threshold(mv, predictor) -> float:
    """The threshold of an exported version: the ONNX file's (sha256-checked, what ``predict``
    uses); a ``metadata.json`` that says otherwise was edited and is refused."""
    recorded = mv.metadata.get("threshold")
    if not isinstance(recorded, int | float) or not abs(float(recorded) - predictor.threshold) <= 1e-12:
        raise IntegrityError(f"{mv.path / 'metadata.json'}: threshold {recorded!r} disagrees with "
                             f"{predictor.path}'s {predictor.threshold!r}; one of them was edited. "
                             f"Run `pneumokit registry verify {mv.ref}`")
    return predictor.threshold
