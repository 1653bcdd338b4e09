"""How the input gate is fitted, compared: the evidence behind pneumokit/training/gate.py's choices.

Run after ``bench/gate.py --output DIR`` (it reuses that model): the same
network's gate is refitted several ways and each scored on bench/gate.py's
sets. Thresholds come from the model's own validation split (real X-rays of
patients the network never trained on), as ``pneumokit train`` does:

- ``plain``: the gate fitted on the training images only;
- ``augmented``: on the training images plus one copy through the model's
  training augmentation (what pneumokit does);
- each with the orientation check's floor at odds 1 (pneumokit's), 10 and 100.

Reported per set: the percentage flagged. Real X-ray sets (held-out, shifted,
originals, demo) should be low, the others high. The non-X-ray sets are
scored, never used to choose.

Last line: JSON with every variant's rates and the ratio of the worst shifted
set's flag rate, plain over augmented (both at floor 1).
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from gate import MISORIENTED, build_sets  # noqa: E402  (bench/gate.py)

from pneumokit import gate  # noqa: E402
from pneumokit.core.config import CV_SPLITS  # noqa: E402
from pneumokit.data.dataset import scan  # noqa: E402
from pneumokit.data.decoding import decode_all  # noqa: E402
from pneumokit.data.preprocessing import Preprocessing  # noqa: E402
from pneumokit.data.splits import holdout  # noqa: E402
from pneumokit.errors import PneumokitError  # noqa: E402
from pneumokit.registry.store import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load(items, pre):
    """What the content gate sees of a set: the images that pass the file checks."""
    out = []
    for _, source in items:
        try:
            out.append(pre.load_checked(source, scope=True)[0])
        except PneumokitError:
            continue
    return np.stack(out) if out else None


def rates(arrays, held, sets, floor):
    limits = gate.thresholds(gate.values(held, arrays), floor)
    out = {}
    for name, v in sets.items():
        vals = gate.values(v, arrays)
        flagged = np.max(np.stack([vals[k] > limits[k] for k in vals]), axis=0)
        out[name] = round(100 * float(np.mean(flagged)), 1)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--output", required=True, help="bench/gate.py's --output folder")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=300)
    args = parser.parse_args()

    registry = Registry(Path(args.output) / "registry")
    mv = registry.get("gatebench")
    model, pre = registry.load_model(mv.ref), Preprocessing.from_dict(mv.metadata["preprocessing"])
    config = mv.metadata["config"]
    index = scan(args.data, splits=CV_SPLITS).require_usable()
    held = holdout(index, args.holdout, args.seed)
    train_part, test = index[~held].reset_index(drop=True), index[held]
    val = holdout(train_part, config["val_fraction"], config["seed"])  # as pneumokit train split it
    rng = np.random.default_rng(args.seed)
    sample = sorted(rng.choice(test["path"].to_numpy(), size=min(args.sample, len(test)), replace=False))
    sets = {k: load(v, pre) for k, v in build_sets(test["path"].tolist(), sample, Path(args.data)).items()}
    sets = {k: gate.vectors(model, x, pre) for k, x in sets.items() if x is not None}
    train_images = decode_all(train_part["path"][~val].tolist(), pre)
    held_v = gate.vectors(model, decode_all(train_part["path"][val].tolist(), pre), pre)
    variants = {}
    for label, images in (("plain", train_images), ("augmented", np.concatenate(
            [train_images, gate.augmented(train_images, pre, config["augment"], config["seed"])]))):
        arrays = gate.fit_checks(model, pre, images, config["seed"])
        for floor in (1.0, 10.0, 100.0):
            variants[f"{label}, floor {floor:g}"] = rates(arrays, held_v, sets, floor)
    shifted = [k for k in sets if k.startswith("shifted:")]
    real = ["heldout", "originals", "demo", *shifted, "misoriented:hflip"]
    other = [k for k in sets if k in ("dicom_pixels", "natural", "synthetic")
             or k.split(":")[-1] in MISORIENTED]
    for title, keys in (("real X-rays (% flagged; low is right)", real),
                        ("not chest X-rays, or mis-oriented (% flagged; high is right)", other)):
        print(f"\n{title}\n{'variant':22s} " + " ".join(f"{k.split(':')[-1][:12]:>12s}" for k in keys))
        for label, r in variants.items():
            print(f"{label:22s} " + " ".join(f"{r[k]:12.1f}" for k in keys))
    worst = {label: max(r[k] for k in r if k.startswith("shifted:")) for label, r in variants.items()}
    print(json.dumps({"variants": variants, "worst_shifted": worst,
                      "ratio": worst["plain, floor 1"] / max(worst["augmented, floor 1"], 0.1)}))


if __name__ == "__main__":
    sys.exit(main())
