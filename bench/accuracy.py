"""The recommended CPU recipe — `pneumokit cv` with its defaults — on the real chest X-rays.

Patient-grouped 5-fold CV (the honest protocol) with its wall time, then the
same recipe with image-level folds (`--grouping image`, no final model) to show
how much leaking patients across folds inflates the scores.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pneumokit.config import CVConfig  # noqa: E402
from pneumokit.cv import format_table, run_cv  # noqa: E402
from pneumokit.registry import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one(config, data, out, final, registry):
    t = time.perf_counter()
    result = run_cv(config, data, output=out, final=final, registry=registry, progress=False)
    minutes = (time.perf_counter() - t) / 60
    print(f"grouping={config.grouping}: {minutes:.1f} min")
    print(format_table(result.summary))
    m = result.oof_metrics["at_threshold"]
    print(f"out-of-fold at threshold {result.threshold:.4f}: " + ", ".join(
        f"{k} {m[k]:.4f}" for k in ("accuracy", "recall", "specificity", "auc")), flush=True)
    return result, minutes


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--output", default=None, help="keep run folders here (default: temporary)")
    parser.add_argument("--skip-image-grouping", action="store_true")
    args = parser.parse_args()
    config = CVConfig()
    print(f"recipe: {config.to_dict()}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.output or tmp)
        registry = Registry(base / "registry")
        patient, patient_min = one(config, args.data, base / "patient", True, registry)
        summary = {
            "recipe": config.to_dict(),
            "patient": {"auc_mean": patient.summary["auc"]["mean"], "auc_std": patient.summary["auc"]["std"],
                        "accuracy_mean": patient.summary["accuracy"]["mean"],
                        "accuracy_std": patient.summary["accuracy"]["std"],
                        "specificity_mean": patient.summary["specificity"]["mean"],
                        "recall_mean": patient.summary["recall"]["mean"],
                        "threshold": patient.threshold,
                        "oof_at_threshold": {k: patient.oof_metrics["at_threshold"][k]
                                             for k in ("accuracy", "recall", "specificity", "auc")},
                        "minutes": round(patient_min, 2)},
        }
        if not args.skip_image_grouping:
            image_config = CVConfig(grouping="image")
            image, image_min = one(image_config, args.data, base / "image", False, registry)
            summary["image"] = {"auc_mean": image.summary["auc"]["mean"],
                                "auc_std": image.summary["auc"]["std"],
                                "accuracy_mean": image.summary["accuracy"]["mean"],
                                "accuracy_std": image.summary["accuracy"]["std"],
                                "minutes": round(image_min, 2)}
            summary["auc_inflation_image_vs_patient"] = round(
                image.summary["auc"]["mean"] - patient.summary["auc"]["mean"], 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
