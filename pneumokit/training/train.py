"""``pneumokit train``: one fit of one architecture, registered as a new model version."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import CLASS_NAMES, TrainConfig
from ..data.index import Problem
from ..data.preprocessing import Preprocessing
from ..data.splits import holdout
from ..registry.provenance import model_metadata
from ..registry.store import ModelVersion, Registry
from .calibration import calibrate
from .fitting import compile_model, fit
from .metrics import binary_metrics
from .steps import finish, prepare


@dataclass
class TrainResult:
    version: ModelVersion
    metrics: dict  # validation metrics at the chosen threshold, and at 0.5
    threshold: float
    best_epoch: int
    threshold_rule: str = ""
    calibration: dict = field(default_factory=dict)
    skipped: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.version.name, "version": self.version.version,
                "ref": self.version.ref, "path": str(self.version.path),
                "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "calibration": self.calibration, "best_epoch": self.best_epoch,
                "metrics": self.metrics, "skipped": [p.to_dict() for p in self.skipped]}


def train(
    config: TrainConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    registry: Registry | None = None,
    name: str | None = None,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``config.architecture`` on the train (+ val) split and register it.

    A stratified, patient-grouped ``config.val_fraction`` of the images is held
    out for early stopping (validation AUC, best weights restored), to fit the
    temperature that calibrates the probabilities (applied inside the
    registered model), by ``config.threshold_rule``, the decision threshold, and
    the input gate's threshold (docs/gate.md; the gate itself is fitted on the
    training split). Class weights balance the classes.

    Parameters
    ----------
    config : the run's settings (``pneumokit.core.config.TrainConfig``; its defaults when None).
    data_dir : dataset folder; None is the bundled demo set.
    registry : where to register the model (default ``Registry()``).
    name : registered model name (default: the architecture's name).
    progress : show a tqdm bar per epoch.
    echo : where notices go (e.g. file names without patient ids).
    """
    from ..core.progress import EpochBar
    from ..models.ensemble import calibrated

    config = config or TrainConfig()
    prepared = prepare(config, data_dir, registry=registry, name=name, echo=echo)
    arch, index = prepared.arch, prepared.index
    val = holdout(index, config.val_fraction, config.seed)
    tr, va = index[~val], index[val]
    fitted = fit(arch, config, prepared.catalog, tr["path"].tolist(), tr["label"].to_numpy(),
                 va["path"].tolist(), va["label"].to_numpy(),
                 callbacks=[EpochBar(config.epochs, f"train {arch.name}", enabled=progress)])
    y_val = va["label"].to_numpy()
    prob, threshold, rule, calibration = calibrate(y_val, fitted.val_prob, config.threshold_rule,
                                                   config.target_sensitivity)
    temperature = calibration["temperature"]
    # Temperature and threshold come from the images they are scored on: optimistic.
    metrics = {
        "validation": binary_metrics(y_val, prob, threshold),
        "validation_at_0.5": binary_metrics(y_val, prob, 0.5),
    }
    pre = Preprocessing.for_architecture(arch, config.image_size, jpeg_draft=config.jpeg_draft)
    skipped = list(prepared.scan.problems)
    meta = model_metadata(
        arch, config, pre, index, root=prepared.scan.root, threshold=threshold, metrics=metrics,
        kind="train", best_epoch=fitted.best_epoch, threshold_rule=rule, calibration=calibration,
        split={"train_images": len(tr), "validation_images": len(va),
               "validation_patients": int(va["patient"].nunique()), "grouping": "patient"},
        skipped=[p.to_dict() for p in skipped],
    )
    model = compile_model(calibrated(fitted.model, temperature), config.learning_rate)
    version = finish(prepared, model, pre, meta, (tr["path"], va["path"]),
                     "the validation split: patients the network never trained on",
                     _artifacts_of(fitted, arch.name, metrics, threshold, y_val, prob, temperature))
    return TrainResult(version=version, metrics=metrics, threshold=threshold,
                       best_epoch=fitted.best_epoch, threshold_rule=rule, calibration=calibration,
                       skipped=skipped)


def _artifacts_of(fitted, label: str, metrics: dict, threshold: float, y_val, prob, temperature: float):
    """``tmp -> artifacts``: the history and plots, written when the staging folder exists."""
    return lambda tmp: _artifacts(tmp, fitted, label, metrics, threshold, y_val, prob, temperature)


def _artifacts(tmp: Path, fitted, label: str, metrics: dict, threshold: float, y_val, prob,
               temperature: float) -> dict:
    """The history and the plots of a training run, written in ``tmp`` for the registry."""
    from .plots import confusion, reliability_diagram, training_curves

    history_csv = tmp / "history.csv"
    fitted.history.to_csv(history_csv, index=False)
    curves = training_curves([fitted.history], tmp / "training_curves.png", [label])
    cm = confusion(metrics["validation"]["confusion_matrix"], tmp / "confusion.png", CLASS_NAMES,
                   f"validation, threshold {threshold:.3f}")
    reliability = reliability_diagram(y_val, fitted.val_prob, prob, tmp / "reliability.png",
                                      f"validation split, temperature {temperature:.3f}")
    return {"history.csv": history_csv, "plots/training_curves.png": curves, "plots/confusion.png": cm,
            "plots/reliability.png": reliability}
