"""Shift stress bench: recipes trained on part of the patients, scored on the rest under
synthetic acquisition shifts (pneumokit/data/stress.py).

A patient-grouped, stratified ``--holdout`` of the shared images is set aside.
Each recipe trains on the rest exactly as a user's command would (``pneumokit
train``, or ``pneumokit cv --ensemble`` for ensemble recipes: the same code,
on a folder of links to the training part), registers its model (calibrated,
threshold stored), and the registered model scores the held-out patients'
images under every shift. Reported per recipe and shift: AUC, and sensitivity
and specificity at the stored threshold and at 0.5; then the worst case over
shifts. The shifts are a proxy for a new hospital, not a measurement of one.

Last line: JSON with ``shifts``, ``worst_auc``, ``worst_specificity``,
``worst_sensitivity`` of the first recipe (the default), every recipe under
``recipes``, and the worst-case specificity ratio of each recipe to the first.
"""

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from recipes import RECIPES  # noqa: E402  (bench/recipes.py)

from pneumokit.core.config import CV_SPLITS, CVConfig, TrainConfig  # noqa: E402
from pneumokit.data.dataset import scan  # noqa: E402
from pneumokit.data.preprocessing import Preprocessing  # noqa: E402
from pneumokit.data.splits import holdout  # noqa: E402
from pneumokit.data.stress import SHIFTS, shifted_file  # noqa: E402
from pneumokit.registry.store import Registry  # noqa: E402
from pneumokit.training.metrics import binary_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
def link_tree(index, folder: Path) -> Path:
    """A chest_xray-style folder of symbolic links to ``index``'s files (split and class kept)."""
    for path in index["path"]:
        p = Path(path)
        target = folder / p.parent.parent.name / p.parent.name / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(p)
    return folder


def shifted_inputs(paths, pre: Preprocessing) -> dict:
    """{shift: uint8 (N, H, W, 1)} of the held-out files under each shift, by ``pre``'s rule."""
    return {name: np.stack([pre.load(shifted_file(p, name)) for p in paths]) for name in SHIFTS}


def train_recipe(name, settings, folds, data, registry, seed):
    from pneumokit.training.cv import run_cv
    from pneumokit.training.train import train

    if folds:
        config = CVConfig(**{**settings, "folds": folds, "ensemble": True, "seed": seed})
        result = run_cv(config, data, output=registry.root.parent / f"run-{name}", registry=registry,
                        name=name, echo=lambda line: None)
        return result.version
    return train(TrainConfig(**{**settings, "seed": seed}), data, registry=registry, name=name,
                 echo=lambda line: None).version


def score(model, threshold, inputs, pre, labels) -> dict:
    out = {}
    for shift, images in inputs.items():
        prob = model.predict(pre.normalize(images.astype(np.float32)), verbose=0, batch_size=128).ravel()
        at, half = binary_metrics(labels, prob, threshold), binary_metrics(labels, prob, 0.5)
        out[shift] = {"auc": at["auc"], "sensitivity": at["recall"], "specificity": at["specificity"],
                      "accuracy": at["accuracy"], "sensitivity_at_0.5": half["recall"],
                      "specificity_at_0.5": half["specificity"], "accuracy_at_0.5": half["accuracy"]}
    return out


def member_aucs(model, inputs, pre, labels) -> dict:
    """Of a deep ensemble (``--members``): {"member_k": {shift: AUC}} of each network by its own
    logit, and {"first_k": {shift: AUC}} of the mean logit of its first k networks, k = 1..M (the
    ensemble-size curve): paired comparisons on the same split. Empty for one network."""
    import keras
    from sklearn.metrics import roc_auc_score  # on logits: binary_metrics takes probabilities

    subs = [la for la in model.layers if isinstance(la, keras.Model) and la.name.startswith("member_")]
    logits = {m.name: {shift: m.predict(pre.normalize(images.astype(np.float32)), verbose=0,
                                        batch_size=128).ravel() for shift, images in inputs.items()}
              for m in subs}
    out = {name: {shift: float(roc_auc_score(labels, z)) for shift, z in by_shift.items()}
           for name, by_shift in logits.items()}
    for k in range(1, len(subs) + 1):
        mean = {shift: np.mean([logits[m.name][shift] for m in subs[:k]], axis=0) for shift in inputs}
        out[f"first_{k}"] = {shift: float(roc_auc_score(labels, z)) for shift, z in mean.items()}
    return out


def worst(shifts: dict) -> dict:
    keys = ("auc", "specificity", "sensitivity", "accuracy", "specificity_at_0.5", "sensitivity_at_0.5",
            "accuracy_at_0.5")
    return {f"worst_{k}": min(v[k] for v in shifts.values()) for k in keys} | {
        f"mean_{k}": float(np.mean([v[k] for v in shifts.values()])) for k in keys}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--recipes", default="default,baseline",
                        help=f"comma-separated, the first is the reference; known: {', '.join(RECIPES)}")
    parser.add_argument("--holdout", type=float, default=0.2, help="patient-grouped held-out fraction")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    parser.add_argument("--output", default=None, help="keep registries and run folders here")
    parser.add_argument("--reuse", action="store_true",
                        help="score the models kept by a run with the same --output and --seed; no training")
    args = parser.parse_args()
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")

    import keras

    index = scan(args.data, splits=CV_SPLITS).require_usable()
    held = holdout(index, args.holdout, args.seed)
    test, labels = index[held], index[held]["label"].to_numpy()
    print(f"{len(index) - len(test)} training images, {len(test)} held-out images of "
          f"{test['patient'].nunique()} patients ({int(labels.sum())} PNEUMONIA); "
          f"shifts: {', '.join(SHIFTS)}",
          flush=True)
    results, inputs_by_rule = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.output or tmp)
        base.mkdir(parents=True, exist_ok=True)
        data = link_tree(index[~held], Path(tmp) / "train_part" / "chest_xray")
        registry = Registry(base / "registry")
        for name in names:
            settings, folds = RECIPES[name]
            if args.epochs:
                settings = {**settings, "epochs": args.epochs}
            started = time.perf_counter()
            reused = bool(args.reuse and registry.versions(name))
            mv = (registry.get(name) if reused
                  else train_recipe(name, settings, folds, data, registry, args.seed))
            minutes = float("nan") if reused else (time.perf_counter() - started) / 60
            pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
            key = json.dumps(pre.to_dict(), sort_keys=True)
            if key not in inputs_by_rule:
                inputs_by_rule[key] = shifted_inputs(test["path"].tolist(), pre)
            model = registry.load_model(mv.ref)
            shifts = score(model, mv.metadata["threshold"], inputs_by_rule[key], pre, labels)
            members = member_aucs(model, inputs_by_rule[key], pre, labels)
            keras.backend.clear_session()
            config = {k: v for k, v in mv.metadata["config"].items()
                      if k in {f.name for f in dataclasses.fields(CVConfig)}}
            results[name] = {"settings": settings, "ensemble_folds": folds, "config": config,
                             "threshold": mv.metadata["threshold"],
                             "threshold_rule": mv.metadata.get("threshold_rule"),
                             "temperature": mv.metadata.get("calibration", {}).get("temperature"),
                             "train_minutes": None if reused else round(minutes, 2), "shifts": shifts,
                             **worst(shifts)}
            if members:
                results[name]["members"] = {k: {"shifts": v, "worst_auc": min(v.values()), "auc": v["none"]}
                                            for k, v in members.items()}
            r = results[name]
            print(f"\n{name}: {minutes:.1f} min, threshold {r['threshold']:.3f} ({r['threshold_rule']}), "
                  f"temperature {r['temperature']}")
            print(f"  {'shift':<20} {'AUC':>6} {'sens':>6} {'spec':>6} {'acc':>6} | at 0.5: "
                  f"{'sens':>6} {'spec':>6} {'acc':>6}")
            for shift, m in shifts.items():
                print(f"  {shift:<20} {m['auc']:6.4f} {m['sensitivity']:6.4f} {m['specificity']:6.4f} "
                      f"{m['accuracy']:6.4f} |         {m['sensitivity_at_0.5']:6.4f} "
                      f"{m['specificity_at_0.5']:6.4f} {m['accuracy_at_0.5']:6.4f}")
            print(f"  worst: AUC {r['worst_auc']:.4f}, sensitivity {r['worst_sensitivity']:.4f}, "
                  f"specificity {r['worst_specificity']:.4f}; at 0.5: sensitivity "
                  f"{r['worst_sensitivity_at_0.5']:.4f}, specificity {r['worst_specificity_at_0.5']:.4f}",
                  flush=True)
            for k, v in r.get("members", {}).items():
                print(f"  {k}: AUC {v['auc']:.4f}, worst AUC {v['worst_auc']:.4f}", flush=True)
            if args.output:
                kind = "-rescored" if args.reuse else ""
                (base / f"robustness{kind}.json").write_text(json.dumps(results, indent=2))
    first = results[names[0]]
    summary = {"reference": names[0], "held_out_images": len(test), "shifts": first["shifts"],
               "worst_auc": first["worst_auc"], "worst_specificity": first["worst_specificity"],
               "worst_sensitivity": first["worst_sensitivity"], "recipes": results,
               "worst_specificity_ratio_to_reference": {
                   n: (round(r["worst_specificity"] / first["worst_specificity"], 4)
                       if first["worst_specificity"] else None)
                   for n, r in results.items()}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
