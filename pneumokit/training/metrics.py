"""Binary classification metrics (calibration among them: Brier score, ECE, reliability), their
aggregation (mean ± std) and threshold choice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score, roc_curve

METRICS = ("accuracy", "loss", "precision", "recall", "specificity", "f1", "auc", "brier", "ece")
LOWER_IS_BETTER = ("loss", "brier", "ece")


def brier_score(labels, prob) -> float:
    """Mean squared difference between probability and outcome (0 is perfect)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    return float(np.mean((np.asarray(prob, dtype=np.float64).ravel() - y) ** 2))


def expected_calibration_error(labels, prob, bins: int = 10) -> float:
    """ECE: |mean outcome - mean probability| per equal-width bin, weighted by the bin's share."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(total)


def reliability(labels, prob, bins: int = 10) -> list[dict]:
    """Per non-empty bin: its range, count, mean probability and observed positive rate."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int((which == b).sum()),
             "mean_probability": float(p[which == b].mean()), "positive_rate": float(y[which == b].mean())}
            for b in range(bins) if (which == b).any()]



def binary_metrics(y_true, prob, threshold: float = 0.5) -> dict:
    """Accuracy, loss (binary cross-entropy), precision, recall (sensitivity),
    specificity, F1 and ROC AUC of probabilities ``prob`` at ``threshold``,
    the Brier score and expected calibration error (10 bins) of ``prob``,
    plus the confusion matrix ``[[tn, fp], [fn, tp]]``."""
    y = np.asarray(y_true).astype(int).ravel()
    raw = np.asarray(prob, dtype=np.float64).ravel()
    pred = (raw >= threshold).astype(int)  # unclipped, as the runtime decides
    p = np.clip(raw, 1e-7, 1 - 1e-7)  # for the log loss only
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()

    def ratio(a, b, empty=0.0):
        return float(a / b) if b else empty

    # Recall needs positives and specificity negatives: without them they are undefined (NaN).
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn, float("nan"))
    both = len(np.unique(y)) == 2
    return {
        "accuracy": ratio(tp + tn, len(y)),
        "loss": float(log_loss(y, p, labels=[0, 1])),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp, float("nan")),
        "f1": float("nan") if np.isnan(recall) else ratio(2 * precision * recall, precision + recall),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "brier": brier_score(y, raw),
        "ece": expected_calibration_error(y, raw),
        "threshold": float(threshold),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def youden_threshold(y_true, prob) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(np.asarray(y_true).astype(int), np.asarray(prob, dtype=np.float64))
    best = int(np.argmax(tpr - fpr))
    return float(min(max(thresholds[best], 0.0), 1.0))


def threshold_for_sensitivity(y_true, prob, sensitivity: float) -> float:
    """The highest threshold whose sensitivity (recall) is at least ``sensitivity``."""
    if not 0.0 < sensitivity <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {sensitivity!r}")
    fpr, tpr, thresholds = roc_curve(np.asarray(y_true).astype(int), np.asarray(prob, dtype=np.float64))
    ok = np.flatnonzero(tpr >= sensitivity)
    return float(min(max(thresholds[ok[0]], 0.0), 1.0))


def choose_threshold(labels, prob, rule: str, target_sensitivity: float | None = None
                     ) -> tuple[float, str]:
    """The decision threshold for (calibrated) probabilities, and the rule in words.

    ``target_sensitivity`` wins when given; else ``rule`` is ``"calibrated"``
    (0.5: the calibrated decision; the model's class weights make it the
    class-balanced one) or ``"youden"`` (maximise Youden's J on these predictions).
    """
    if target_sensitivity is not None:
        return (threshold_for_sensitivity(labels, prob, target_sensitivity),
                f"highest threshold with sensitivity >= {target_sensitivity}")
    if rule == "calibrated":
        return 0.5, "0.5 on calibrated probabilities"
    if rule == "youden":
        return youden_threshold(labels, prob), "Youden's J"
    raise ValueError(f"threshold rule {rule!r}: choose calibrated or youden")


def summarize(per_fold: Sequence[dict], metrics: Sequence[str] = METRICS) -> dict:
    """``{metric: {"mean": m, "std": s}}`` over folds (sample std, ddof=1, as pandas)."""
    out = {}
    for name in metrics:
        values = np.array([f[name] for f in per_fold], dtype=np.float64)
        out[name] = {"mean": float(np.mean(values)),
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    return out
