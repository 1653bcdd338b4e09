"""``pneumokit cv``: patient-grouped, stratified k-fold cross-validation, then a final model.

Per fold: a patient-grouped inner validation split (early stopping on its
AUC, best weights restored) is carved from the training part, so the
held-out fold is never used for any decision. Finished folds (results and
model) are saved atomically and a run can be resumed; each fold is seeded on
its own (seed + fold), so a resumed run gives the same results as an unbroken one.

The pooled out-of-fold predictions then fit the temperature that calibrates
the probabilities, and the threshold is chosen on the calibrated ones. The
registered model is the final fit on all the data, or with ``ensemble`` the
mean of the fold models (no final fit); either way the temperature is
applied inside it, so every runtime gets calibrated probabilities.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.catalog import Architecture, Catalog
from ..core.config import CLASS_NAMES, DEFAULT_RECIPE, CVConfig
from ..core.files import atomic_path, check_output_folder, write_csv_atomic, write_json_atomic
from ..data.index import Scan
from ..data.manifest import Manifest
from ..data.preprocessing import Preprocessing
from ..data.splits import holdout, kfold
from ..errors import ResumeError
from ..registry.store import ModelVersion, Registry
from .calibration import calibrate, check_finite
from .device import DevicePlan
from .metrics import METRICS, binary_metrics, choose_threshold, summarize
from .steps import Prepared, finish, prepare

RUN_FILE = "run.json"
LEAK_WARNING = ("grouping=image: images of one patient can fall in both the training and the "
                "validation part of a fold, so these scores are inflated (patients leak)")




@dataclass
class FoldResult:
    fold: int  # 1-based
    metrics: dict  # held-out fold, at threshold 0.5
    best_epoch: int
    history: pd.DataFrame
    paths: list[str]
    labels: np.ndarray
    prob: np.ndarray
    tuned: dict  # held-out fold at a threshold chosen on the fold's inner validation split
    settings_sha256: str = ""  # the run's settings and data it was trained under (_settings_sha256)
    trained: bool = field(default=False, compare=False)  # by this call, not loaded

    def to_json(self) -> dict:
        return {"fold": self.fold, "settings_sha256": self.settings_sha256, "metrics": self.metrics,
                "best_epoch": self.best_epoch, "history": self.history.to_dict(orient="list"),
                "paths": self.paths, "labels": self.labels.tolist(), "prob": self.prob.tolist(),
                "tuned": self.tuned}

    @classmethod
    def from_json(cls, d: dict) -> FoldResult:
        return cls(d["fold"], d["metrics"], d["best_epoch"], pd.DataFrame(d["history"]), d["paths"],
                   np.asarray(d["labels"]), np.asarray(d["prob"], dtype=np.float64),
                   d["tuned"], d.get("settings_sha256", ""))


@dataclass
class CVResult:
    config: CVConfig
    folds: list[FoldResult]
    table: pd.DataFrame  # one row per fold, then mean and std
    summary: dict  # {metric: {"mean", "std"}}
    threshold: float
    threshold_rule: str
    oof: pd.DataFrame
    oof_metrics: dict  # {"at_threshold": ..., "at_0.5": ...}
    device: dict
    wall_s: float
    output: Path
    tuned_summary: dict = field(default_factory=dict)  # held-out folds at inner-validation thresholds
    calibration: dict = field(default_factory=dict)  # temperature, Brier and ECE before/after
    version: ModelVersion | None = None  # the registered final model
    final_model: Any = None  # its keras.Model
    resumed_folds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "folds": [{"fold": f.fold, "best_epoch": f.best_epoch, "images": len(f.paths),
                       "metrics": f.metrics} for f in self.folds],
            "mean": {k: v["mean"] for k, v in self.summary.items()},
            "std": {k: v["std"] for k, v in self.summary.items()},
            "threshold": self.threshold, "threshold_rule": self.threshold_rule,
            "calibration": self.calibration, "out_of_fold": self.oof_metrics,
            "held_out_at_inner_threshold": self.tuned_summary,
            "device": self.device, "wall_s": round(self.wall_s, 2), "output": str(self.output),
            "resumed_folds": self.resumed_folds,
            "model": None if self.version is None else {
                "name": self.version.name, "version": self.version.version,
                "ref": self.version.ref, "path": str(self.version.path)},
        }


def results_table(folds: list[FoldResult]) -> pd.DataFrame:
    """The cv.csv table: fold 1..k rows, then ``mean`` and ``std`` rows (sample std)."""
    rows = pd.DataFrame([{"fold": str(f.fold), **{m: f.metrics[m] for m in METRICS}} for f in folds])
    summary = summarize([f.metrics for f in folds])
    rows.loc[len(rows)] = {"fold": "mean", **{m: summary[m]["mean"] for m in METRICS}}
    rows.loc[len(rows)] = {"fold": "std", **{m: summary[m]["std"] for m in METRICS}}
    return rows


_LABELS = {"auc": "AUC", "ece": "ECE", "f1": "F1"}


def format_table(summary: dict) -> str:
    """The original project's table: Metric | Value | Standard Deviation."""
    lines = ["| Metric | Value | Standard Deviation |", "|--------|-------|-------------------|"]
    for m in METRICS:
        lines.append(f"| {_LABELS.get(m, m.capitalize())} | {summary[m]['mean']:.4f} | "
                     f"±{summary[m]['std']:.4f} |")
    return "\n".join(lines)


def _run_record(config: CVConfig, root, fingerprint: dict, name: str, manifest=None) -> dict:
    record = {"config": config.to_dict(), "data": str(root), "dataset": fingerprint, "name": name,
              "settings_sha256": _settings_sha256(config.to_dict(), fingerprint)}
    return record | ({"manifest": manifest.to_dict()} if manifest is not None else {})


def _settings_sha256(config: dict, dataset: dict) -> str:
    """What decides a fold's results, hashed: the fold settings and the data's content. Each fold
    file records it, so folds trained under other settings or data are never pooled."""
    text = json.dumps({"config": _fold_settings(config), "dataset": dataset.get("sha256")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _differences(now: dict, before: dict) -> str:
    """The settings that differ, as ``key: before -> now``."""
    keys = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    return ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in keys)


@dataclass
class _Run:
    """An opened run folder and everything its folds need."""

    out: Path
    config: CVConfig
    prepared: Prepared  # the checked settings, architecture, name, data and registry (training.steps)
    index: pd.DataFrame  # the prepared index, with a ``fold`` column, 1..k
    device_plan: DevicePlan
    strategy: Any  # a tf.distribute strategy
    pre: Preprocessing
    planned: bool
    settings_sha256: str = ""
    echo: Callable[[str], None] = print
    metadata: dict = field(default_factory=dict)  # extra keys for the registered model's metadata

    @property
    def arch(self) -> Architecture:
        return self.prepared.arch

    @property
    def catalog(self) -> Catalog:
        return self.prepared.catalog

    @property
    def scan(self) -> Scan:
        return self.prepared.scan


def plan_cv(config: CVConfig | None = None, data_dir: str | os.PathLike | None = None, *,
            output: str | os.PathLike | None = None, registry: Registry | None = None,
            name: str | None = None, echo: Callable[[str], None] = print) -> Path:
    """Write a run folder (``run.json``, ``folds.csv``) whose folds are then trained as
    independent jobs (``run_fold``, any number at once) and merged (``run_cv(resume=...)``).
    Everything that can fail before training is checked here. Returns the folder."""
    return _open(config, data_dir, output=output, resume=None, final=True, registry=registry,
                 name=name, architecture=None, echo=echo, planned=True).out


def run_fold(resume: str | os.PathLike, k: int, *, progress: bool = False,
             echo: Callable[[str], None] = print) -> FoldResult:
    """Train fold ``k`` (1-based) of a run folder and write ``folds/fold_K.json`` atomically.

    A lock per fold makes sure two jobs never train the same fold: a second job
    for a fold being trained waits for the first, then loads its result. A fold
    already done is loaded and checked, not trained again (``trained`` is False).
    """

    run = _open(None, None, output=None, resume=resume, final=False, registry=None, name=None,
                architecture=None, echo=echo)
    if not (isinstance(k, int) and 1 <= k <= run.config.folds):
        raise ResumeError(f"fold {k!r}: {run.out} has folds 1..{run.config.folds}")
    return _claimed_fold(run, k, progress)


def _claimed_fold(run: _Run, k: int, progress: bool) -> FoldResult:
    """Fold ``k`` under its lock: loaded if done, else trained. While another job holds the lock,
    this one waits for it (a retried Slurm array task then exits 0, keeping ``afterok``)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(run.out / "folds" / f".fold_{k}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        run.echo(f"fold {k} of {run.out} is being trained by another job ({lock.lock_file} is held); "
                 "waiting for it")
        lock.acquire()
    try:
        if _fold_done(run, k):
            return _load_fold(run, k)
        return _train_fold(run, k, progress)
    finally:
        lock.release()


def run_cv(
    config: CVConfig | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    output: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    final: bool = True,
    registry: Registry | None = None,
    name: str | None = None,
    progress: bool = False,
    architecture: Architecture | None = None,
    metadata: dict | None = None,
    echo: Callable[[str], None] = print,
    overrides: dict | None = None,
) -> CVResult:
    """Cross-validate ``config.architecture`` and register a final model.

    Parameters
    ----------
    config : the run's settings (``CVConfig`` defaults when None).
    data_dir : dataset folder (train + val are pooled); None is the bundled demo set.
    output : folder for folds.csv, cv.csv, oof.csv, plots and fold results
        (default ``runs/cv/NAME-YYYYmmdd-HHMMSS``).
    resume : a previous run's folder: finished folds are loaded, the rest run. For a
        folder made by ``plan_cv`` the folds are the jobs' work: missing ones are named,
        not trained here.
    final : train a final model on all the data and register it.
    registry, name : where and under which name to register (default: ``Registry()``,
        the architecture's name).
    progress : tqdm bars for folds and epochs.
    architecture : an ``Architecture`` record used instead of the catalog's
        ``config.architecture`` (``compat`` wraps the original ``model_func`` in one).
    metadata : extra keys recorded in the registered model's metadata.
    echo : where the one-line notices go (device choice, leakage warning, skipped files).
    overrides : with ``resume`` and no ``config``: settings given again (e.g. on the command
        line), checked against the run's own; equal ones are accepted.
    """
    from filelock import FileLock, Timeout
    from tqdm.auto import tqdm

    started = time.perf_counter()
    run = _open(config, data_dir, output=output, resume=resume, final=final, registry=registry,
                name=name, architecture=architecture, echo=echo, overrides=overrides)
    run.metadata = dict(metadata or {})
    config, out = run.config, run.out
    missing = [k for k in range(1, config.folds + 1) if not _fold_done(run, k)]
    if run.planned and missing:
        raise ResumeError(f"{out}: fold(s) {', '.join(map(str, missing))} of {config.folds} are not done; "
                          f"run `pneumokit cv --resume {out} --only-fold K` for each, then this again")
    merge = FileLock(str(out / ".merge.lock"), timeout=0)
    try:
        merge.acquire()
    except Timeout:
        raise ResumeError(f"{out} is being finished by another process ({merge.lock_file} is held)") from None
    try:
        if resume is not None:
            read_run(out)  # again, under the lock: another merge may have finished meanwhile
        fold_results: list[FoldResult] = []
        bar = tqdm(total=config.folds, desc="folds", unit="fold", disable=not progress, position=0)
        with bar:
            for k in range(1, config.folds + 1):
                fold = _claimed_fold(run, k, progress) if k in missing else _load_fold(run, k)
                fold_results.append(fold)
                bar.set_postfix(auc=f"{fold.metrics['auc']:.4f}")
                bar.update(1)
        resumed = [k for k in range(1, config.folds + 1) if k not in missing]
        cv_result = _finish(run, fold_results, resumed, final, registry, progress)
        cv_result.wall_s = time.perf_counter() - started
        write_json_atomic(out / "result.json", cv_result.to_dict())
    finally:
        merge.release()
    return cv_result


def _open(config, data_dir, *, output, resume, final, registry, name, architecture, echo,
          planned: bool = False, overrides: dict | None = None) -> _Run:
    """Open (``resume``) or make the run folder, after every check that can fail before training."""
    from ..registry.provenance import dataset_fingerprint
    from . import device

    saved = None
    if resume is not None:
        out = Path(resume)
        saved = read_run(out)
        _check_settings_sha256(out, saved)
        config = config or dataclasses.replace(saved["config_object"], **(overrides or {}))
        changed = _differences(_fold_settings(config.to_dict()), _fold_settings(saved["config"]))
        if changed:
            raise ResumeError(f"{out} was run with other settings ({changed}); resume with the "
                              "same options (or start a new run)")
        if saved.get("planned") and config.ensemble != saved["config"].get("ensemble"):
            raise ResumeError(f"{out} was planned with ensemble={saved['config'].get('ensemble')}: its fold "
                              "jobs keep fold models only with --ensemble given at --plan time")
        if data_dir is None:
            data_dir = Manifest.from_dict(saved["manifest"]) if saved.get("manifest") else saved["data"]
        if name and saved.get("name") and name != saved["name"]:
            raise ResumeError(f"{out} was started with --name {saved['name']}; resume without --name "
                              "(or with the same one)")
        name = name or saved.get("name")
        planned = bool(saved.get("planned"))
    config = config or CVConfig()
    if architecture is None and config.architecture == "model_func":
        raise ResumeError(f"{resume or 'this run'} was started from Python with a model_func: resume it "
                          "there, with perform_optimized_cross_validation(..., model_func=..., resume=DIR)")
    prepared = prepare(config, data_dir, registry=registry, name=name, architecture=architecture,
                       register=final, echo=echo)  # before hours of training, not after
    arch, name, result, index = prepared.arch, prepared.name, prepared.scan, prepared.index
    for p in result.problems:
        echo(f"skipped {p.path}: {p.reason}")
    fingerprint = dataset_fingerprint(index, result.root)
    if saved is not None and saved["dataset"].get("sha256") != fingerprint["sha256"]:
        raise ResumeError(f"the data in {result.root} changed since {out} was started; "
                          "start a new run")
    # Everything that can fail before training is checked before the run folder exists.
    device_plan, strategy = device.setup(config.precision, config.xla)
    echo(device_plan.summary())
    if config.grouping == "image":
        echo(f"warning: {LEAK_WARNING}")
    pre = _preprocessing(arch, config)
    index = index.assign(fold=kfold(index, config.folds, config.seed, config.grouping) + 1)

    if resume is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(output) if output else Path("runs") / "cv" / f"{name}-{stamp}"
        check_output_folder(out, "--output", create=True, registry_root=(registry or Registry()).root)
        if (out / RUN_FILE).exists():
            raise ResumeError(f"{out} already holds a run: pass --resume {out} to continue it, "
                              "or choose another --output")
        out.mkdir(parents=True, exist_ok=True)
        record = _run_record(config, result.root, fingerprint, name, result.manifest)
        write_json_atomic(out / RUN_FILE, {**record,
                                           "planned": planned})
    (out / "folds").mkdir(exist_ok=True)
    _write_folds(out, index[["path", "patient", "label", "fold"]], check=resume is not None)
    return _Run(out, config, prepared, index, device_plan, strategy, pre, planned,
                _settings_sha256(config.to_dict(), fingerprint), echo)


def _write_folds(out: Path, table: pd.DataFrame, check: bool) -> None:
    """``folds.csv``; on resume, the folds computed now must equal the saved ones."""
    from filelock import FileLock

    with FileLock(str(out / ".folds.lock")):  # fold jobs of one run may start together
        if check and (out / "folds.csv").exists():
            before = pd.read_csv(out / "folds.csv")
            if not before.equals(table.reset_index(drop=True)):
                raise ResumeError(f"the folds of {out} differ from those computed now (other data "
                                  "paths or another scikit-learn?): start a new run")
        write_csv_atomic(out / "folds.csv", table)


def _fold_path(out: Path, k: int) -> Path:
    return out / "folds" / f"fold_{k}.json"


def _fold_done(run: _Run, k: int) -> bool:
    model_kept = not run.config.ensemble or fold_model_path(run.out, k).exists()
    return _fold_path(run.out, k).exists() and model_kept


def _train_fold(run: _Run, k: int, progress: bool) -> FoldResult:
    """Fit fold ``k`` on the other folds, score its held-out images, write its results."""
    from ..core.progress import EpochBar
    from .fitting import fit, predict
    from .pipeline import make_dataset

    config, index = run.config, run.index
    fold_config = dataclasses.replace(config, seed=config.seed + k)
    train_part = index[index["fold"] != k]
    held = index[index["fold"] == k]
    inner = holdout(train_part, config.val_fraction, fold_config.seed, config.grouping)
    tr, va = train_part[~inner], train_part[inner]
    fitted = fit(run.arch, fold_config, run.catalog, tr["path"].tolist(), tr["label"].to_numpy(),
                 va["path"].tolist(), va["label"].to_numpy(), preprocessing=run.pre,
                 strategy=run.strategy, jit_compile=run.device_plan.xla,
                 callbacks=[EpochBar(config.epochs, f"fold {k}", progress, position=1)])
    y_held = held["label"].to_numpy()
    prob = predict(fitted.model, make_dataset(held["path"].tolist(), y_held, run.pre,
                                              batch_size=config.batch_size))
    check_finite(fitted.val_prob, f"fold {k} inner-validation")
    check_finite(prob, f"fold {k} held-out")
    # An honest estimate of the thresholded model: the threshold comes from
    # the inner validation split, never from the fold it is scored on.
    inner_threshold = choose_threshold(va["label"].to_numpy(), fitted.val_prob, config.threshold_rule,
                                       config.target_sensitivity)[0]
    fold = FoldResult(k, binary_metrics(y_held, prob, 0.5), fitted.best_epoch, fitted.history,
                      held["path"].tolist(), y_held, prob, binary_metrics(y_held, prob, inner_threshold),
                      run.settings_sha256, trained=True)
    if config.ensemble:
        save_fold_model(fitted.model, run.out, k)  # before the results: they mark the fold done
    write_json_atomic(_fold_path(run.out, k), fold.to_json())  # a finished fold survives a crash
    return fold


def _finish(run: _Run, fold_results: list[FoldResult], resumed: list[int], final: bool,
            registry: Registry | None, progress: bool) -> CVResult:
    """Pool the out-of-fold predictions, calibrate, choose the threshold, write the tables and
    plots; with ``final``, make and register the model."""
    config, out, index = run.config, run.out, run.index
    oof = pd.concat([pd.DataFrame({"path": f.paths, "label": f.labels, "fold": f.fold,
                                   "probability": f.prob}) for f in fold_results], ignore_index=True)
    oof = oof.merge(index[["path", "patient"]], on="path", validate="one_to_one")[
        ["path", "patient", "label", "fold", "probability"]]
    if len(oof) != len(index):
        raise ResumeError(f"out-of-fold predictions cover {len(oof)} of {len(index)} images: the "
                          f"saved folds in {out} do not match the data; start a new run")
    oof["calibrated"], threshold, rule, calibration = calibrate(
        oof["label"], oof["probability"], config.threshold_rule, config.target_sensitivity)
    oof_metrics = {"at_threshold": binary_metrics(oof["label"], oof["calibrated"], threshold),
                   "at_0.5": binary_metrics(oof["label"], oof["calibrated"], 0.5)}
    table = results_table(fold_results)
    summary = summarize([f.metrics for f in fold_results])
    write_csv_atomic(out / "cv.csv", table)
    write_csv_atomic(out / "oof.csv", oof)
    plots = _plots(out / "plots", fold_results, summary, oof_metrics["at_threshold"], threshold, oof,
                   calibration["temperature"])
    cv_result = CVResult(config=config, folds=fold_results, table=table, summary=summary,
                         threshold=threshold, threshold_rule=rule, oof=oof, oof_metrics=oof_metrics,
                         tuned_summary=summarize([f.tuned for f in fold_results]), calibration=calibration,
                         device=run.device_plan.to_dict(), wall_s=0.0, output=out, resumed_folds=resumed)
    if final:
        model, meta, artifacts = _final_model(run, cv_result, plots, progress)
        held = holdout(index, config.val_fraction, config.seed, config.grouping)
        cv_result.version = finish(run.prepared, model, run.pre, meta,
                                   (index["path"][~held], index["path"][held]), GATE_HELD_OUT, artifacts)
        cv_result.final_model = model
    return cv_result


# The registered model's input gate (docs/gate.md) is fitted on the images but a patient-grouped
# ``val_fraction``, its thresholds from that fraction. The final fit (and every fold of an ensemble
# but one) trained on those too: they are held out from the gate's fit only.
GATE_HELD_OUT = "a patient-grouped split held out from the gate's fit (the registered model trained on it)"


def _final_model(run: _Run, cv: CVResult, plots: list[Path], progress: bool):
    """The registered model (the final fit, or the fold ensemble), its metadata and artifacts."""
    from ..core.progress import EpochBar
    from ..models.ensemble import calibrated
    from ..registry.provenance import model_metadata
    from .fitting import compile_model, fit

    config, out, index, temperature = run.config, run.out, run.index, cv.calibration["temperature"]
    if config.ensemble:
        with run.strategy.scope():
            models = [load_fold_model(out, f.fold) for f in cv.folds]
            model = compile_model(calibrated(models, temperature, name=f"{run.arch.name}_ensemble"),
                                  config.learning_rate)
        trained: dict = {"ensemble": {"folds": config.folds, "combine": "mean of the fold models' logits",
                                "calibration": "temperature fitted on the fold models' out-of-fold "
                                               "predictions"}}
        artifacts = {}
    else:
        epochs = max(1, int(np.median([f.best_epoch for f in cv.folds])))
        fitted = fit(run.arch, config, run.catalog, index["path"].tolist(), index["label"].to_numpy(),
                     epochs=epochs, preprocessing=run.pre,
                     strategy=run.strategy, jit_compile=run.device_plan.xla,
                     callbacks=[EpochBar(epochs, "final model", progress)])
        write_csv_atomic(out / "final_history.csv", fitted.history)
        with run.strategy.scope():
            model = compile_model(calibrated(fitted.model, temperature), config.learning_rate)
        trained = {"final_epochs": epochs}
        artifacts = {"history.csv": out / "final_history.csv"}
    meta = model_metadata(
        run.arch, config, run.pre, index, root=run.scan.root, threshold=cv.threshold,
        metrics={"cv": cv.summary, "folds": [f.metrics for f in cv.folds],
                 "out_of_fold": cv.oof_metrics, "held_out_at_inner_threshold": cv.tuned_summary},
        kind="cv", threshold_rule=cv.threshold_rule, calibration=cv.calibration,
        device=run.device_plan.to_dict(),
        folds={"k": config.folds, "grouping": config.grouping,
               "images_per_fold": [len(f.paths) for f in cv.folds],
               "best_epochs": [f.best_epoch for f in cv.folds]},
        skipped=[p.to_dict() for p in run.scan.problems],
        **trained, **run.metadata,
    )
    artifacts |= {"cv.csv": out / "cv.csv", "oof.csv": out / "oof.csv", "folds.csv": out / "folds.csv",
                  **{f"plots/{p.name}": p for p in plots}}
    return model, meta, artifacts


def fold_from_env(value: str | int, environ) -> int:
    """``--only-fold``: a 1-based fold number, or ``env``: ``$SLURM_ARRAY_TASK_ID`` (as given:
    submit ``--array=1-K``), else ``$JOB_COMPLETION_INDEX + 1`` (a Kubernetes Indexed Job counts
    from 0)."""
    text = str(value).strip()
    if text.lower() == "env":
        for var, offset in (("SLURM_ARRAY_TASK_ID", 0), ("JOB_COMPLETION_INDEX", 1)):
            if environ.get(var, "").strip():
                text, source = environ[var].strip(), f"${var}"
                if not re.fullmatch(r"[0-9]+", text):
                    raise ResumeError(f"{source} = {text!r} is not a fold index")
                return int(text) + offset
        raise ResumeError("--only-fold env: neither $SLURM_ARRAY_TASK_ID nor $JOB_COMPLETION_INDEX is set")
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ResumeError(f"--only-fold {value!r}: give a fold number (1, 2, ...) or 'env'")
    return int(text)


def read_run(out: Path) -> dict:
    """The record of a run folder to resume, checked; ``ResumeError`` naming the file otherwise."""
    path = out / RUN_FILE
    if not path.is_file():
        raise ResumeError(f"{out} is not a pneumokit cv run folder (no {RUN_FILE})")
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResumeError(f"{path}: damaged ({exc}); start a new run") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("data"), str) and isinstance(saved.get("dataset"), dict)):
        raise ResumeError(f"{path}: damaged (not a pneumokit run record); start a new run")
    saved["config"].setdefault("recipe", DEFAULT_RECIPE)  # a run from before recipes had the defaults
    missing = sorted(set(CVConfig.__dataclass_fields__) - set(saved["config"]))
    if missing:
        raise ResumeError(f"{out} was started by an older pneumokit (its settings lack "
                          f"{', '.join(missing)}): start a new run")
    try:
        saved["config_object"] = CVConfig(**saved["config"])
    except (TypeError, ValueError) as exc:
        raise ResumeError(f"{path}: damaged settings ({exc}); start a new run") from None
    model = None
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):  # no or damaged result
        model = json.loads((out / "result.json").read_text()).get("model")["ref"]
    if model:
        raise ResumeError(f"{out} is complete: it registered {model}; start a new run for another model")
    return saved


def _check_settings_sha256(out: Path, saved: dict) -> None:
    """``run.json`` must hold the settings it was written with: an edit between fold jobs would
    train the remaining folds differently from the finished ones."""
    recorded = saved.get("settings_sha256")
    if recorded is not None and recorded != _settings_sha256(saved["config"], saved["dataset"]):
        raise ResumeError(f"{out / RUN_FILE}: its settings or data record were edited after the run was "
                          f"planned (settings_sha256 {str(recorded)[:12]} no longer matches them); put "
                          "them back or start a new run")


def _load_fold(run: _Run, k: int) -> FoldResult:
    """A finished fold's results, checked against the run: ``ResumeError`` naming the file and
    the first bad value, never pooled into the run's figures."""
    path = _fold_path(run.out, k)
    try:
        fold = FoldResult.from_json(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ResumeError(f"{path}: damaged ({type(exc).__name__}: {exc}); delete it and resume to "
                          "train that fold again") from None
    problem = _fold_problem(fold, run, k)
    if problem:
        raise ResumeError(f"{path}: {problem}; delete it and resume to train that fold again")
    fold.metrics = binary_metrics(fold.labels, fold.prob, 0.5)  # from the checked rows, not as written
    return fold


def _fold_problem(fold: FoldResult, run: _Run, k: int) -> str | None:
    """What is wrong with a loaded fold file, or None."""
    if not fold.settings_sha256:
        return "has no settings_sha256 (written by an older pneumokit, or edited)"
    if fold.settings_sha256 != run.settings_sha256:
        recorded = fold.settings_sha256[:12]
        return (f"trained under other settings or data (settings_sha256 {recorded}, the run's is "
                f"{run.settings_sha256[:12]})")
    if fold.fold != k:
        return f"fold is {fold.fold!r}, not {k}"
    expected = run.index[run.index["fold"] == k]
    if not len(fold.paths) == len(fold.labels) == len(fold.prob) == len(expected):
        return (f"{len(fold.paths)} paths, {len(fold.labels)} labels and {len(fold.prob)} probabilities; "
                f"fold {k} has {len(expected)} images")
    for name, values, ok in (("prob", fold.prob, lambda v: np.isfinite(v) & (v >= 0) & (v <= 1)),
                             ("labels", fold.labels, lambda v: np.isin(v, (0, 1)))):
        bad = np.flatnonzero(~ok(values))
        if bad.size:
            return (f"{name}[{bad[0]}] is {values[bad[0]].item()!r} (probabilities lie in [0, 1], labels "
                    "are 0 or 1)")
    truth = dict(zip(expected["path"], expected["label"], strict=True))
    for i, (p, y) in enumerate(zip(fold.paths, fold.labels.tolist(), strict=True)):
        if p not in truth:
            return f"paths[{i}] {p!r} is not an image of fold {k}, or is listed twice"
        label = truth.pop(p)
        if label != y:
            return f"labels[{i}] is {y!r} but {p!r} is labelled {label}"
    return None


def _fold_settings(config: dict) -> dict:
    """The settings that decide the folds' results (``ensemble`` only decides what is registered;
    ``recipe`` names where the settings came from)."""
    return {k: v for k, v in config.items() if k not in ("ensemble", "recipe")}


def fold_model_path(out: Path, k: int) -> Path:
    return out / "folds" / f"fold_{k}.keras"


def save_fold_model(model, out: Path, k: int) -> Path:
    """Keep a fold's model (for ``ensemble``), written atomically like the fold's results."""
    target = fold_model_path(out, k)
    with atomic_path(target) as tmp:
        model.save(tmp)
    return target


def load_fold_model(out: Path, k: int):
    import keras

    path = fold_model_path(out, k)
    if not path.exists():
        raise ResumeError(f"{path} is missing: the ensemble needs every fold's model; delete "
                          f"{out / 'folds' / f'fold_{k}.json'} and resume to retrain that fold")
    return keras.saving.load_model(path, compile=False)


def _preprocessing(arch, config: CVConfig) -> Preprocessing:
    """The architecture's rule. One model is built and dropped here, so a builder that fails does
    so before the run folder is made (the augmentation spec was built by ``steps.prepare``)."""
    pre = Preprocessing.for_architecture(arch, config.image_size, jpeg_draft=config.jpeg_draft)
    arch.build_model((pre.height, pre.width, pre.channels), config.options)
    return pre


def _plots(folder: Path, folds: list[FoldResult], summary: dict, oof_at_threshold: dict,
           threshold: float, oof: pd.DataFrame, temperature: float) -> list[Path]:
    from sklearn.metrics import roc_curve

    from .plots import confusion, cv_summary, reliability_diagram, roc_curves, training_curves

    folder.mkdir(parents=True, exist_ok=True)
    grid = np.linspace(0, 1, 101)
    tprs = []
    for f in folds:
        fpr, tpr, _ = roc_curve(f.labels, f.prob)
        tprs.append(np.interp(grid, fpr, tpr))
    mean_tpr = np.mean(tprs, axis=0)
    mean_tpr[0] = 0.0
    return [
        training_curves([f.history for f in folds], folder / "training_curves.png",
                        [f"fold {f.fold}" for f in folds]),
        cv_summary(folds, summary, folder / "cv_summary.png"),
        roc_curves([(f"fold {f.fold}", f.labels, f.prob) for f in folds], folder / "roc.png",
                   mean=(grid, mean_tpr)),
        confusion(oof_at_threshold["confusion_matrix"], folder / "confusion.png", CLASS_NAMES,
                  f"out-of-fold, threshold {threshold:.3f}"),
        reliability_diagram(oof["label"], oof["probability"], oof["calibrated"], folder / "reliability.png",
                            f"out-of-fold, temperature {temperature:.3f}"),
    ]
