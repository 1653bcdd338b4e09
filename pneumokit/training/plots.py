"""Matplotlib figures, written as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(histories: Sequence, path: Path, titles: Sequence[str] | None = None) -> Path:
    """Loss and AUC per epoch, train vs validation, one row per history (e.g. per fold)."""
    plt = _plt()
    rows = len(histories)
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3 * rows), squeeze=False)
    for r, hist in enumerate(histories):
        # a deep ensemble's history has a ``member`` column: one pair of lines per network
        parts = list(hist.groupby("member")) if "member" in hist else [(None, hist)]
        for c, metric in enumerate(("loss", "auc")):
            ax = axes[r][c]
            for i, (member, part) in enumerate(parts):
                tag, colour = (f"member {member}, ", f"C{i}") if member is not None else ("", None)
                ax.plot(part["epoch"], part[metric], label=f"{tag}train", color=colour)
                if f"val_{metric}" in part:
                    ax.plot(part["epoch"], part[f"val_{metric}"], label=f"{tag}validation",
                            color=colour, linestyle="--" if colour else "-")
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.set_title(f"{titles[r] + ': ' if titles else ''}{metric}")
            ax.legend(fontsize="small" if len(parts) > 1 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def roc_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path,
               mean: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """ROC curves: ``[(label, y_true, prob), ...]``, with an optional mean curve (fpr, tpr)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, y, p in curves:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, alpha=0.6 if mean is not None else 1.0,
                label=f"{label} (AUC {roc_auc_score(y, p):.3f})")
    if mean is not None:
        ax.plot(*mean, color="black", linewidth=2, label="mean")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion(matrix, path: Path, class_names: Sequence[str], title: str = "") -> Path:
    """A 2x2 confusion matrix with counts; rows are the truth, columns the prediction."""
    plt = _plt()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > m.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cv_summary(folds, summary: dict, path: Path) -> Path:
    """Each metric's per-fold values (dots) with its mean ± std (bar and whisker)."""
    from .metrics import LOWER_IS_BETTER, METRICS

    plt = _plt()
    names = [m for m in METRICS if m not in LOWER_IS_BETTER]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    ax.bar(x, [summary[m]["mean"] for m in names], yerr=[summary[m]["std"] for m in names],
           color="lightsteelblue", capsize=4, label="mean ± std")
    for f in folds:
        ax.scatter(x, [f.metrics[m] for m in names], s=12, color="black", zorder=3)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{len(folds)}-fold cross-validation (dots: folds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reliability_diagram(y_true, prob_before, prob_after, path: Path, title: str = "") -> Path:
    """Observed positive rate against mean predicted probability per bin, before and after
    calibration (``prob_before=None``: one curve, ``prob_after``), with the diagonal of perfect
    calibration and each bin's count below."""
    from .metrics import expected_calibration_error, reliability

    plt = _plt()
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    curves = (("uncalibrated", prob_before, "o"), ("calibrated", prob_after, "s"))
    for label, prob, marker in curves if prob_before is not None else (("model", prob_after, "s"),):
        bins = reliability(y_true, prob)
        ece = expected_calibration_error(y_true, prob)
        ax.plot([b["mean_probability"] for b in bins], [b["positive_rate"] for b in bins],
                marker=marker, label=f"{label} (ECE {ece:.3f})")
    edges = np.linspace(0, 1, 11)
    bars.hist(np.asarray(prob_after, dtype=np.float64).ravel(), bins=edges, color="lightsteelblue")
    bars.set_yscale("log")
    bars.set_ylabel("images")
    bars.set_xlabel("predicted probability of PNEUMONIA (calibrated)")
    ax.set_ylabel("observed PNEUMONIA rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
