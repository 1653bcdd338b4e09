"""``pneumokit evaluate``: metrics of a registered model on a split, with ROC and confusion plots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import CLASS_NAMES, INFERENCE_BATCH_SIZE, SPLITS
from ..core.files import check_output_folder, write_csv_atomic, write_json_atomic
from ..core.layout import METADATA_FILE
from ..data.dataset import DatasetError, scan
from ..data.manifest import ALL
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError, IntegrityError, ModelFileError, RegistryError
from ..registry.provenance import unparsed_warning
from ..registry.store import Registry
from ..training.intervals import JUDGE_ON, intervals, judge, parse_requirement
from ..training.metrics import binary_metrics, expected_calibration_error
from ..training.plots import reliability_diagram
from .report import write_html
from .runtime import NOT_FINITE, check_threshold


def _keras_rows(registry: Registry, mv, paths, pre: Preprocessing, gate: bool) -> tuple[list[dict], str]:
    """``predict_files``'s rows from the Keras model (a version not exported yet), gate included,
    and the gate's state: one forward pass per image gives the probability and the gate score."""
    from ..training.gate import THRESHOLD, version_arrays, with_gate
    from .runtime import gate_state, read_source, scored_row

    model = registry.load_model(mv.ref)
    arrays = version_arrays(mv)
    net = model if arrays is None else with_gate(model, arrays)
    gate_threshold = THRESHOLD if gate and arrays is not None else None
    classes, threshold = mv.metadata.get("class_names", list(CLASS_NAMES)), float(mv.metadata["threshold"])
    rows = []
    for p in paths:
        pixels, notes, row = read_source(pre, p, p, gate)
        if row is None:
            out = net(pre.normalize(pixels[None].astype(np.float32)), training=False)
            prob, score = (out, None) if arrays is None else (out[0], float(np.ravel(out[-1])[0]))
            row = scored_row(p, float(np.ravel(prob)[0]), score, threshold, classes, gate_threshold, notes)
        rows.append(row)
    return rows, gate_state(gate, arrays is not None)


def _training_overlap(mv, index: pd.DataFrame) -> int | None:
    """How many of these images (by content) the model was trained on; None if not recorded."""
    from ..registry.provenance import TRAINING_IMAGES

    if TRAINING_IMAGES not in mv.metadata.get("artifacts", {}):
        return None
    trained = set(mv.verify(TRAINING_IMAGES).read_text().split())
    return int(index["sha256"].isin(trained).sum())


def evaluate(ref: str, data_dir=None, *, split: str = "test",
             registry: Registry | None = None, output: str | os.PathLike | None = None,
             skip_bad: bool = False, gate: bool = True, require=(), judge_on: str = "bound",
             seed: int = 0) -> dict:
    """Score ``ref`` on one split of a dataset (a folder or a manifest): a site acceptance test.

    Uses the version's ONNX file when it has one (what is deployed), else the
    Keras model; both apply the model's recorded preprocessing. Reports
    metrics at the model's stored threshold and at 0.5, 95% confidence intervals (a
    bootstrap over patients, ``pneumokit.training.intervals``), calibration, the model's own
    estimate from its training run, and a verdict on each ``require`` criterion
    (``"sensitivity>=0.95"``; judged on the interval's bound unless ``judge_on="estimate"``).
    Writes ``metrics.json``, ``predictions.csv``, ``report.html`` and the plots to ``output``.
    The input gate applies (``gate=False``: off): images it flags are counted under ``gate``
    and left out of the metrics, which are of the images in scope (docs/gate.md).
    """
    from ..training.plots import confusion, roc_curves

    _check_criteria(require, judge_on)  # a typo fails now, not after scoring
    registry = registry or Registry()
    if str(split).lower() not in SPLITS:
        raise ConfigError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    split = str(split).lower()  # folders match case-insensitively too
    mv = registry.get(ref)
    out = Path(output) if output else Path("runs") / "evaluate" / f"{mv.name}-v{mv.version}-{split}"
    check_output_folder(out, "--output", create=True, registry_root=registry.root)
    result = scan(data_dir, splits=[split])
    index = result.require_usable(skip_bad=skip_bad)
    index = index[index["split"].isin([split, ALL])]  # a manifest without splits is one set
    if (index["split"] == ALL).any():
        split = ALL
    if index.empty:
        raise DatasetError(f"no {split}/ images in {result.root}; choose another --split")
    paths, y = index["path"].tolist(), index["label"].to_numpy()
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    rows, threshold, engine, state = _rows(mv, registry, paths, pre, gate)
    _check_errors(rows, paths, mv)
    scored = np.array([r["probability"] is not None for r in rows])
    prob = np.array([np.nan if r["probability"] is None else r["probability"] for r in rows])
    if not scored.any():
        raise DatasetError(f"the input gate flagged all {len(paths)} {split}/ images as out of scope (e.g. "
                           f"{paths[0]}: {rows[0]['reason']}); nothing to evaluate. See docs/gate.md")
    seen = _training_overlap(mv, index)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "ref": mv.ref, "data": str(result.root), "split": split, "images": len(paths),
        "engine": engine, "threshold": threshold,
        "images_seen_in_training": seen,
        "warnings": [w for w in (unparsed_warning(index),) if w],
        "gate": _gate_summary(rows, y, state),
        "at_threshold": binary_metrics(y[scored], prob[scored], threshold),
        "at_0.5": binary_metrics(y[scored], prob[scored], 0.5),
        "skipped": [p.to_dict() for p in result.problems],
        "files": {name: str(out / name) for name in
                  ("metrics.json", "predictions.csv", "roc.png", "confusion.png")},
    }
    write_csv_atomic(out / "predictions.csv", pd.DataFrame({
        "path": paths, "label": y, "probability": prob, "in_scope": [r["in_scope"] for r in rows],
        "gate_score": [r["gate_score"] for r in rows], "reason": [r["reason"] for r in rows]}))
    groups = index["patient"].to_numpy()[scored]
    y, prob = y[scored], prob[scored]
    report |= acceptance(mv.metadata, y, prob, groups, threshold, require, judge_on, seed)
    if len(np.unique(y)) == 2:
        roc_curves([(f"{mv.ref} on {split}", y, prob)], out / "roc.png")
    else:  # one class only: no ROC curve, no AUC
        report["files"].pop("roc.png")
        report["one_class"] = (f"only {CLASS_NAMES[int(y[0])]} images in {split}: AUC is undefined "
                               "(null), and so is either recall or specificity")
    confusion(report["at_threshold"]["confusion_matrix"], out / "confusion.png", CLASS_NAMES,
              f"{mv.ref} on {split}, threshold {threshold:.3f}")
    reliability_diagram(y, None, prob, out / "reliability.png", f"{mv.ref} on {split}")
    report["files"] |= {name: str(out / name) for name in ("reliability.png", "report.html")}
    _record(registry, mv, report)
    write_json_atomic(out / "metrics.json", report)
    write_html(report, out / "report.html")
    return report


def _record(registry: Registry, mv, report: dict) -> None:
    """Record the run against the version (``metadata.json`` ``evaluations``; its model card shows
    it). A registry that cannot be written (read-only at a site) costs a warning, not the run."""
    from datetime import datetime, timezone

    entry = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": report["data"],
             "split": report["split"], "images": report["images"], "patients": report["patients"],
             "flagged": report["gate"].get("flagged"), "engine": report["engine"],
             "threshold": report["threshold"], "figures": report["figures"], "ci95": report["ci95"],
             "ci_method": report["ci_method"]["method"], "accepted": report["accepted"],
             "criteria": [f"{'PASS' if c['passed'] else 'FAIL'} {c['requirement']}"
                          for c in report["criteria"]],
             "images_seen_in_training": report["images_seen_in_training"],
             "output": report["files"]["metrics.json"]}
    try:
        registry.record(mv.ref, "evaluations", entry)
        report["recorded"] = (f"{mv.path / METADATA_FILE} (evaluations), shown by `pneumokit registry "
                              f"card {mv.ref}`")
    except RegistryError as exc:
        report["recorded"] = None
        report["warnings"].append(f"warning: this run was not recorded against {mv.ref}: {exc}")


def _check_criteria(require, judge_on: str) -> None:
    for text in require:
        try:
            parse_requirement(text)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if judge_on not in JUDGE_ON:
        raise ConfigError(f"judge_on {judge_on!r}: choose one of {', '.join(JUDGE_ON)}")


def acceptance(meta: dict, y, prob, groups, threshold: float, require, judge_on: str, seed: int) -> dict:
    """The acceptance part of the report: 95% intervals, calibration, the model's own estimate
    and the verdicts on ``require``."""
    from ..training.metrics import reliability

    result = intervals(y, prob, groups, threshold, seed=seed)
    criteria = judge(require, result, judge_on)
    return {"patients": result["patients"], "figures": result["estimate"], "ci95": result["ci"],
            "ci_method": {"method": f"{result['method']} bootstrap over patients", "level": result["level"],
                          "replicates": result["replicates"], "seed": seed},
            "calibration": {"brier": result["estimate"]["brier"], "ece": expected_calibration_error(y, prob),
                            "reliability": reliability(y, prob)},
            "model_estimate": model_estimate(meta), "criteria": criteria,
            "accepted": all(c["passed"] for c in criteria) if criteria else None}


def model_estimate(meta: dict) -> dict | None:
    """What the model's own training run estimated (on patients held out there), to set beside
    a site's figures: cross-validation's pooled out-of-fold figures, an adapted version's
    cross-fitted site figures, or (optimistic) a train run's validation split."""
    metrics = meta.get("metrics", {})
    for key, source in (("out_of_fold", "cross-validation, pooled out-of-fold predictions"),
                        ("site_after", "cross-fitted on the site patients it was adapted to"),
                        ("validation", "the validation split of `pneumokit train` (threshold and "
                                       "temperature chosen on it: optimistic)")):
        m = metrics.get(key)
        if m:
            m = m.get("at_threshold", m)
            return {"source": source, **{k: m.get(src) for k, src in (
                ("auc", "auc"), ("accuracy", "accuracy"), ("sensitivity", "recall"),
                ("specificity", "specificity"), ("ppv", "precision"), ("brier", "brier"))}}
    return None


def _rows(mv, registry: Registry, paths, pre: Preprocessing, gate: bool):
    """Rows as ``predict`` gives them, the threshold, the engine and the gate's state: from the
    version's ONNX file when it has one (what is deployed), else from the Keras model."""
    from .export import ONNX_FILE
    from .runtime import Predictor, gate_state

    if ONNX_FILE in mv.metadata.get("artifacts", {}):
        predictor = Predictor(mv.ref, registry=registry)  # checks the file's sha256 first
        threshold = _exported_threshold(mv, predictor)
        rows = predictor.predict_files(paths, batch_size=INFERENCE_BATCH_SIZE, gate=gate)
        engine = f"onnxruntime ({', '.join(predictor.providers_in_use)})"
        return rows, threshold, engine, gate_state(gate, predictor.gate is not None)
    threshold = check_threshold(mv.metadata.get("threshold"), str(mv.path / METADATA_FILE))
    rows, state = _keras_rows(registry, mv, paths, pre, gate)
    return rows, threshold, "keras", state


def _check_errors(rows: list[dict], paths: list[str], mv) -> None:
    """Unreadable images are named (``ImageDecodeError``); outputs that are not probabilities
    mean a damaged model file (``ModelFileError``)."""
    from ..errors import ImageDecodeError

    unreadable = [(p, r["error"]) for p, r in zip(paths, rows, strict=True)
                  if r["error"] and r["error"] != NOT_FINITE]
    if unreadable:
        listed = "; ".join(f"{p}: {e}" for p, e in unreadable[:5])
        raise ImageDecodeError(f"{len(unreadable)} image(s) could not be read ({listed}); run `pneumokit "
                               "data check` on the data, or leave them out with --skip-bad")
    bad = [p for p, r in zip(paths, rows, strict=True) if r["error"]]
    if bad:
        raise ModelFileError(f"{mv.ref} gave no probability for {len(bad)} of {len(paths)} images "
                             f"(e.g. {bad[0]}): {NOT_FINITE}")


def _gate_summary(rows: list[dict], y: np.ndarray, state: str) -> dict:
    """How many images the gate flagged (per class) and why, most common reasons first."""
    flagged = [i for i, r in enumerate(rows) if r["in_scope"] is False]
    reasons = pd.Series([rows[i]["reason"].split(" (score")[0] for i in flagged], dtype=object)
    return {"state": state, "flagged": len(flagged), "scored": len(rows) - len(flagged),
            "flagged_by_class": {c: int(sum(y[i] == k for i in flagged)) for k, c in enumerate(CLASS_NAMES)},
            "reasons": {str(k): int(v) for k, v in reasons.value_counts().items()}}


def _exported_threshold(mv, predictor) -> float:
    """The threshold of an exported version: the ONNX file's (sha256-checked, what ``predict``
    uses); a ``metadata.json`` that says otherwise was edited and is refused."""
    recorded = mv.metadata.get("threshold")
    if not isinstance(recorded, int | float) or not abs(float(recorded) - predictor.threshold) <= 1e-12:
        raise IntegrityError(f"{mv.path / METADATA_FILE}: threshold {recorded!r} disagrees with "
                             f"{predictor.path}'s {predictor.threshold!r}; one of them was edited. "
                             f"Run `pneumokit registry verify {mv.ref}`")
    return predictor.threshold
