"""``pneumokit adapt``: fine-tune a registered model on a site's labelled images (docs/site.md).

The method, chosen with ``bench/site.py`` (docs/performance.md): every layer,
batch-norm statistics included, fine-tuned for a few epochs at a small
learning rate with the parent's augmentation and class-balanced weights, on
the site's images alone (mixing in source images halved the gain and was not
needed to keep what the model knew); batch-norm statistics re-estimated on the
unaugmented site images; then Platt scaling (temperature and shift, class-
balanced) refitted on the site patients' cross-fitted predictions, so the 0.5
decision is the balanced one at the site. What the adapted model is worth is measured by
cross-fitting: the site's patients are split into folds, and each fold is
scored by a model tuned on the other folds only, so every site patient gets a
"before" (the parent) and an "after" it did not help tune. The version that
is registered is tuned on all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.config import AdaptConfig
from ..data.dataset import class_weights
from ..data.manifest import Manifest, header, is_manifest
from ..errors import DatasetError
from ..models.ensemble import retempered
from ..registry.provenance import dataset_fingerprint, unparsed_warning
from ..registry.store import ModelVersion
from ..training.fitting import compile_model, refresh_batch_norm
from ..training.pipeline import build_augmentations, make_dataset


def fine_tune(model, pre, images: np.ndarray, labels, config: AdaptConfig, catalog, augment: str):
    """A copy of ``model`` fine-tuned on uint8 (N, H, W, 1) ``images`` (the original is untouched)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    if config.freeze_batch_norm:  # a frozen BatchNormalization runs in inference mode (Keras 3)
        for layer in tuned._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    compile_model(tuned, config.learning_rate)
    labels = np.asarray(labels, dtype=np.int64)
    ds = make_dataset([f"site image {i}" for i in range(len(images))], labels, pre,
                      batch_size=config.batch_size, training=True, seed=config.seed, images=images,
                      augmentations=build_augmentations(augment, catalog, seed=config.seed))
    tuned.fit(ds, epochs=config.epochs, class_weight=class_weights(labels), verbose=0, shuffle=False)
    if config.bn_refresh and not config.freeze_batch_norm:  # as training does: statistics of the images
        refresh_batch_norm(tuned, images, pre, config.batch_size)  # as inference sees them
    return tuned


def probabilities(model, pre, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The model's probabilities (N,) for uint8 (N, H, W, 1) images."""
    out = [np.asarray(model(pre.normalize(images[i:i + batch_size].astype(np.float32)), training=False))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float64).ravel() if out else np.zeros(0)

# Why ``adapt`` needs labels (docs/site.md, bench/site.py).
UNLABELLED = ("adapt needs labelled images (both classes): without labels nothing can show that a "
              "change helped at your site. Re-estimating batch-norm statistics on unlabelled images gained "
              "+0.000-0.010 AUC on stand-in sites and nothing on a real external one; fine-tuning on 25 "
              "labelled images gained +0.021 where that gained +0.010. Label a few dozen patients "
              "(docs/site.md)")


@dataclass
class AdaptResult:
    """What ``adapt`` measured and did. ``version`` is None when it was not registered."""

    version: ModelVersion | None
    parent: str
    site: dict  # images, patients, the data's fingerprint
    before: dict  # ``intervals`` of the parent on the site patients
    after: dict  # of the adapted model, each patient scored by a model not tuned on them
    differences: dict  # {"auc": ..., "accuracy": ...}: after - before, with paired 95% intervals
    worse: list[str]  # figures on which the adapted model is worse (see ``worse_on``)
    temperature: float
    threshold: float
    scores: dict = field(default_factory=dict)  # {"before", "after"}: the site images' probabilities
    shift: float = 0.0  # added to the calibrated logit (Platt recalibration)

    def to_dict(self) -> dict:
        registered = self.version is not None
        return {"ref": self.version.ref if self.version is not None else None, "registered": registered,
                "parent": self.parent, "site": self.site, "before": self.before, "after": self.after,
                "differences": self.differences, "worse": self.worse, "temperature": self.temperature,
                "shift": self.shift,
                "threshold": self.threshold}


def _site(data, config: AdaptConfig, pre):
    """The site's index (train + val of a folder, all of a manifest without splits) and its images."""
    from ..core.config import CV_SPLITS
    from ..data.dataset import scan
    from ..data.decoding import decode_all

    if is_manifest(data):
        manifest = data if isinstance(data, Manifest) else Manifest(str(data))
        if manifest.label_column not in header(manifest):
            raise DatasetError(f"{manifest.path}: no {manifest.label_column!r} column. {UNLABELLED}")
    result = scan(data, splits=CV_SPLITS)
    index = result.require_usable(skip_bad=config.skip_bad)
    if index["label"].nunique() < 2:
        raise DatasetError(f"{result.root}: adapting needs labelled images of both classes; found only "
                           f"{index['class_name'].iloc[0] if len(index) else 'none'}")
    return result, index, decode_all(index["path"].tolist(), pre)


def recalibrate(y, prob, method: str) -> tuple[float, float]:
    """``(factor, shift)``: the site's calibrated logit is ``logit(prob) / factor + shift``. The
    temperature keeps where 0.5 lies; Platt scaling moves it too."""
    from ..training.calibration import fit_platt, fit_temperature

    if method == "platt":
        a, b = fit_platt(y, prob)
        return 1.0 / a, b
    return fit_temperature(y, prob), 0.0


def cross_fit(model, pre, images, index, config: AdaptConfig, catalog, augment: str, echo):
    """Each site image's probability from a model fine-tuned on the other folds' patients, and
    each image's fold."""
    from ..data.splits import kfold

    folds = kfold(index, config.folds, config.seed)
    y = index["label"].to_numpy()
    out = np.zeros(len(index))
    for k in range(config.folds):
        held = folds == k
        echo(f"cross-fitting fold {k + 1}/{config.folds}: tuning on {int((~held).sum())} images, scoring "
             f"{int(held.sum())}")
        tuned = fine_tune(model, pre, images[~held], y[~held], config, catalog, augment)
        out[held] = probabilities(tuned, pre, images[held])
    return out, folds


def recalibrated(y, oof, folds, method: str) -> np.ndarray:
    """The cross-fitted probabilities recalibrated fold by fold, each with the recalibration
    fitted on the other folds: the recalibration is cross-fitted too."""
    from ..training.calibration import apply_platt

    out = np.zeros(len(oof))
    for k in np.unique(folds):
        held = folds == k
        factor, shift = recalibrate(y[~held], oof[~held], method)
        out[held] = apply_platt(oof[held], 1.0 / factor, shift)
    return out


def worse_on(differences: dict) -> list[str]:
    """The figures on which the adapted model is worse: those whose paired 95% interval of
    after - before lies below 0, or, when none does, all of them if every one is lower."""
    clearly = [k for k, d in differences.items() if d["ci"] is not None and d["ci"][1] < 0]
    if clearly:
        return clearly
    return list(differences) if all(d["estimate"] < 0 for d in differences.values()) else []


def adapt(ref: str, data=None, *, config: AdaptConfig | None = None, registry=None, name: str | None = None,
          force: bool = False, echo=print) -> AdaptResult:
    """Adapt version ``ref`` to a site's labelled images (a folder or a manifest) and register it.

    The before/after figures are on the site's patients, cross-fitted (``config.folds``): each
    patient is scored by a model tuned without them. The adapted version is registered only
    when it is not worse there (``worse_on``: AUC or accuracy clearly lower, or both lower),
    unless ``force``; its metadata records the lineage (parent, the site data's fingerprint,
    what changed). The recalibration is cross-fitted too; a parent whose threshold rule is not
    0.5 (Youden's J, a target sensitivity) has its threshold chosen on the same cross-fitted
    predictions it is judged on, which flatters the "after" figures a little.
    """
    from ..core.plugins import get_catalog
    from ..data.preprocessing import Preprocessing
    from ..registry.store import Registry, validate_name
    from ..training.intervals import intervals
    from ..training.metrics import choose_threshold

    config = config or AdaptConfig()
    registry = registry or Registry()
    mv = registry.get(ref)
    name = validate_name(name or mv.name)
    registry.check_writable(name)
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    augment = config.augment if config.augment is not None else mv.metadata["config"]["augment"]
    result, index, images = _site(data, config, pre)
    notice = unparsed_warning(index)
    if notice:
        echo(notice)
    model = registry.load_model(mv.ref)
    config = _supported(config, model, echo)
    y, groups = index["label"].to_numpy(), index["patient"].to_numpy()
    before = probabilities(model, pre, images)
    oof, folds = cross_fit(model, pre, images, index, config, get_catalog(), augment, echo)
    factor, shift = recalibrate(y, oof, config.recalibration)  # for the registered model: on all
    after = recalibrated(y, oof, folds, config.recalibration)
    parent_config = mv.metadata["config"]
    threshold, rule = choose_threshold(y, after, parent_config.get("threshold_rule", "calibrated"),
                                       parent_config.get("target_sensitivity"))
    ci_before = intervals(y, before, groups, float(mv.metadata["threshold"]), seed=config.seed)
    ci_after = intervals(y, after, groups, threshold, seed=config.seed)
    site = {"data": str(result.root), "images": len(index), "patients": int(index["patient"].nunique()),
            "fingerprint": dataset_fingerprint(index, result.root)}
    change = differences(y, before, after, groups, (float(mv.metadata["threshold"]), threshold), config.seed)
    outcome = AdaptResult(None, mv.ref, site, ci_before, ci_after, change,
                          worse_on(change), factor, threshold, {"before": before, "after": after},
                          shift)
    if outcome.worse and not force:
        return outcome
    echo(f"fine-tuning on all {len(index)} site images")
    tuned = fine_tune(model, pre, images, y, config, get_catalog(), augment)
    outcome.version = _register(registry, name, mv, retempered(tuned, factor, shift), outcome, index, config,
                                rule)
    return outcome


def _supported(config: AdaptConfig, model, echo) -> AdaptConfig:
    """Platt's shift needs pneumokit's stock calibrated head; other models get temperature scaling."""
    import dataclasses

    from ..models.ensemble import temperature_of

    if config.recalibration == "platt" and temperature_of(model) is None:
        echo("this model has no stock calibrated head (a plugin's probability output): recalibrating by "
             "temperature only, which keeps where 0.5 lies")
        return dataclasses.replace(config, recalibration="temperature")
    return config


def differences(y, before, after, groups, thresholds, seed: int) -> dict:
    """AUC and accuracy after - before on the same patients, with paired 95% intervals."""
    from ..training.intervals import difference

    return {k: difference(y, before, after, groups, k, thresholds=thresholds, seed=seed)
            for k in ("auc", "accuracy")}


def _register(registry, name: str, mv, model, outcome: AdaptResult, index, config: AdaptConfig, rule: str):
    """Register the adapted model: the parent's metadata with what changed, its lineage, the
    training images of both (so ``evaluate`` sees overlap with either) and the parent's gate."""
    from ..models.ensemble import temperature_of
    from ..registry.provenance import TRAINING_IMAGES, package_versions
    from ..training import gate
    from ..training.metrics import binary_metrics, expected_calibration_error

    y = index["label"].to_numpy()
    dropped = ("name", "version", "created_at", "artifacts", "onnx", "metrics", "split", "best_epoch")
    metrics = {}
    for key, result, threshold in (("site_before", outcome.before, float(mv.metadata["threshold"])),
                                   ("site_after", outcome.after, outcome.threshold)):
        scores = outcome.scores[key.removeprefix("site_")]
        metrics[key] = {"figures": result["estimate"], "ci95": result["ci"], "patients": result["patients"],
                        "at_threshold": binary_metrics(y, scores, threshold)}
    meta = {k: v for k, v in mv.metadata.items() if k not in dropped} | {
        "kind": "adapt", "threshold": outcome.threshold, "threshold_rule": rule,
        "packages": package_versions(),
        "calibration": {"method": config.recalibration,
                        "temperature": temperature_of(model) or outcome.temperature,
                        "site_factor": outcome.temperature, "site_shift": outcome.shift,
                        "brier": outcome.after["estimate"]["brier"],
                        "ece": expected_calibration_error(y, outcome.scores["after"]),
                        "fitted_on": "cross-fitted site predictions"},
        "metrics": metrics, "lineage": _lineage(mv, outcome, config, rule),
        "dataset": outcome.site["fingerprint"], "forced": bool(outcome.worse)}
    trained = set()
    if TRAINING_IMAGES in mv.metadata["artifacts"]:
        trained = set(mv.verify(TRAINING_IMAGES).read_text().split())
    artifacts = {TRAINING_IMAGES: ("\n".join(sorted(trained | set(index["sha256"]))) + "\n").encode()}
    if gate.GATE_FILE in mv.metadata["artifacts"]:
        artifacts[gate.GATE_FILE] = mv.verify(gate.GATE_FILE).read_bytes()
    return registry.save(name, model, meta, artifacts=artifacts)


def _lineage(mv, outcome: AdaptResult, config: AdaptConfig, rule: str) -> dict:
    from ..registry.store import MODEL_FILE

    return {"parent": mv.ref, "parent_model_sha256": mv.metadata["artifacts"].get(MODEL_FILE),
            "parent_dataset": mv.metadata.get("dataset"), "site": outcome.site, "adapt": config.to_dict(),
            "changed": (f"every layer fine-tuned on {outcome.site['images']} site images ({config.epochs} "
                        f"epochs, learning rate {config.learning_rate:g}, batch norm "
                        f"{'frozen' if config.freeze_batch_norm else 'trained'}); recalibrated "
                        f"({config.recalibration}) on cross-fitted site predictions: logit / "
                        f"{outcome.temperature:.3f} {outcome.shift:+.3f}; threshold {outcome.threshold:.4f} "
                        f"({rule})")}
