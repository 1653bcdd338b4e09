"""Recipes side by side under `pneumokit cv` on the real chest X-rays: patient-grouped 5-fold CV.

For each recipe (bench/recipes.py; the first is the reference, normally
``default``): CV AUC and accuracy (mean ± std over folds, at 0.5), the pooled
out-of-fold figures at the stored threshold, Brier score and ECE before and
after temperature scaling, and the wall time of the whole command (folds,
then the final fit or the ensemble). ``--image-grouping`` adds the reference
recipe with image-level folds, to show how much leaking patients inflates CV.

CV scores patients of the same source as training: they cannot show how a
recipe holds up elsewhere. bench/robustness.py is the bench for that.
Last line: JSON, per recipe, plus each recipe's minutes as a ratio to the
45-minute budget for the default command.
"""

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from recipes import RECIPES  # noqa: E402  (bench/recipes.py, beside this script)

from pneumokit.core.config import CVConfig  # noqa: E402
from pneumokit.registry.store import Registry  # noqa: E402
from pneumokit.training.cv import format_table, run_cv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MINUTES = 45


def one(name, config, data, out, registry):
    t = time.perf_counter()
    result = run_cv(config, data, output=out, registry=registry, name=name.replace("_", "-"),
                    final=config.grouping == "patient", echo=lambda line: None)
    minutes = (time.perf_counter() - t) / 60
    s, m, cal = result.summary, result.oof_metrics["at_threshold"], result.calibration
    kind = f"{config.grouping}-grouped{', ensemble' if config.ensemble else ''}"
    print(f"\n{name} ({kind}): {minutes:.1f} min")
    print(format_table(s))
    print(f"out-of-fold at threshold {result.threshold:.4f} ({result.threshold_rule}): " + ", ".join(
        f"{k} {m[k]:.4f}" for k in ("accuracy", "recall", "specificity", "auc")))
    print(f"temperature {cal['temperature']:.3f}: "
          f"Brier {cal['brier_uncalibrated']:.4f} -> {cal['brier']:.4f}, "
          f"ECE {cal['ece_uncalibrated']:.4f} -> {cal['ece']:.4f}", flush=True)
    return {"config": {k: v for k, v in dataclasses.asdict(config).items()},
            "auc_mean": s["auc"]["mean"], "auc_std": s["auc"]["std"],
            "accuracy_mean": s["accuracy"]["mean"], "accuracy_std": s["accuracy"]["std"],
            "specificity_mean": s["specificity"]["mean"], "recall_mean": s["recall"]["mean"],
            "threshold": result.threshold, "threshold_rule": result.threshold_rule,
            "oof_at_threshold": {k: m[k] for k in ("accuracy", "recall", "specificity", "auc")},
            "calibration": cal, "minutes": round(minutes, 2),
            "minutes_vs_budget": round(minutes / BUDGET_MINUTES, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--recipes", default="default", help=f"comma-separated; known: {', '.join(RECIPES)}")
    parser.add_argument("--output", default=None, help="keep run folders here (default: temporary)")
    parser.add_argument("--image-grouping", action="store_true",
                        help="also the first recipe with image-level folds (no model registered)")
    args = parser.parse_args()
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.output or tmp)
        registry = Registry(base / "registry")
        for name in names:
            settings, folds = RECIPES[name]
            config = CVConfig(**settings, **({"folds": folds, "ensemble": True} if folds else {}))
            summary[name] = one(name, config, args.data, base / name, registry)
        if args.image_grouping:
            settings, folds = RECIPES[names[0]]
            config = CVConfig(**settings, grouping="image")
            image = one(f"{names[0]}_image_grouping", config, args.data, base / "image", registry)
            summary["image_grouping"] = image
            summary["auc_inflation_image_vs_patient"] = round(
                image["auc_mean"] - summary[names[0]]["auc_mean"], 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
