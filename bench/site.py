"""Site bench: honest intervals, and what adapting a model to a site is worth (docs/performance.md).

A base model is trained with the default recipe (``pneumokit train``) on a
patient-grouped 80% of the shared images (as ``bench/gate.py`` does; its
registry can be reused with ``--registry``). The other 20% of patients are
the site pool. Stand-in sites are that pool as it is and under the
acquisition shifts of ``pneumokit/data/stress.py`` on which the base model does
worst (chosen on the labelled half only).

Parts (``--part``):

Stand-in sites: the pool as it is, the single shifts on which the base
model's AUC is lowest, and ``COMPOSITE`` (several shifts at once).

- ``coverage``: how often ``pneumokit.training.intervals`` 95% intervals, from ~150
  patients drawn with replacement from a site pool, hold the figure of the
  whole pool (the population), over ``--draws`` draws; BCa and percentile.
- ``methods``: each site pool split by patient into a labelled half and a
  scored half; from the labelled half ``n`` images (whole patients) adapt the
  base model by each method, scored on the scored half (AUC with its 95% CI,
  Brier, the parent's gate on the tuned network's features).
- ``adapt``: ``pneumokit.inference.adapt`` end to end (cross-fitting, temperature,
  registration) on ``n`` labelled images written as a site would send them
  (files and a manifest), then ``pneumokit.inference.evaluate`` of the base and the
  adapted version on the scored half; and whether the base's figures on the
  two halves agree within the labelled half's interval widened by sqrt(2).

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from pneumokit.core.config import CV_SPLITS, AdaptConfig, TrainConfig  # noqa: E402
from pneumokit.data.dataset import scan  # noqa: E402
from pneumokit.data.preprocessing import Preprocessing  # noqa: E402
from pneumokit.data.splits import holdout, kfold  # noqa: E402
from pneumokit.data.stress import SHIFTS, shifted_file  # noqa: E402
from pneumokit.registry.store import Registry  # noqa: E402
from pneumokit.training.intervals import intervals  # noqa: E402

NAME = "sitebench"
# A site whose export differs in several ways at once: brighter, flatter, bordered, compressed.
COMPOSITE_STEPS = ("brighter", "low_contrast", "side_borders_12pct", "jpeg_q15")
COMPOSITE = "+".join(COMPOSITE_STEPS)


def composite(path) -> bytes:
    """The bytes of ``path`` after each shift of ``COMPOSITE_STEPS`` in turn."""
    import io

    from PIL import Image

    data = shifted_file(path, COMPOSITE_STEPS[0])
    for step in COMPOSITE_STEPS[1:]:
        with Image.open(io.BytesIO(data)) as img:
            data = SHIFTS[step](img.convert("L"))
    return data


def base_model(args, index, held):
    """The base version (trained on the patients outside ``held``), reused when the registry has one."""
    from robustness import link_tree  # bench/robustness.py

    from pneumokit.training.train import train

    registry = Registry(Path(args.registry))
    names = [r["name"] for r in registry.list()]
    name = next((n for n in (NAME, "gatebench") if n in names), None)
    if name is None:
        with tempfile.TemporaryDirectory() as tmp:
            data = link_tree(index[~held], Path(tmp) / "train_part" / "chest_xray")
            train(TrainConfig(seed=args.seed), data, registry=registry, name=NAME, echo=lambda line: None)
        name = NAME
    return registry, registry.get(name)


def sites(args, pool, pre, model):
    """{site: uint8 images of the pool}: the pool as it is and under the ``--sites`` worst shifts of
    the base model, judged by AUC on the labelled half only."""
    from pneumokit.inference.adapt import probabilities
    from pneumokit.training.metrics import binary_metrics

    paths = pool["path"].tolist()
    images = {name: np.stack([pre.load(shifted_file(p, name)) for p in paths]) for name in SHIFTS}
    images[COMPOSITE] = np.stack([pre.load(composite(p)) for p in paths])
    lab = pool["half"].to_numpy() == "labelled"
    y = pool["label"].to_numpy()
    auc = {name: binary_metrics(y[lab], probabilities(model, pre, x[lab]))["auc"]
           for name, x in images.items()}
    worst = sorted((s for s in auc if s not in ("none", COMPOSITE)), key=auc.get)[:args.sites] + [COMPOSITE]
    print(json.dumps({"base_auc_on_labelled_half": auc, "sites": ["none", *worst]}), flush=True)
    return {name: images[name] for name in ["none", *worst]}


def draw_labelled(pool, n: int, seed: int) -> np.ndarray:
    """Row positions of about ``n`` labelled-half images, whole patients in random order."""
    lab = pool[pool["half"] == "labelled"]
    rng = np.random.default_rng(seed)
    chosen, count = [], 0
    for patient in rng.permutation(lab["patient"].unique()):
        rows = np.flatnonzero((pool["patient"] == patient).to_numpy())
        chosen += rows.tolist()
        count += len(rows)
        if count >= n:
            break
    return np.array(sorted(chosen))


def part_coverage(args, pool, site_images, model, pre, mv) -> dict:
    from pneumokit.inference.adapt import probabilities

    out = {}
    y, groups = pool["label"].to_numpy(), pool["patient"].to_numpy()
    patients = np.unique(groups)
    threshold = float(mv.metadata["threshold"])
    for site, images in site_images.items():
        prob = probabilities(model, pre, images)
        truth = intervals(y, prob, groups, threshold, replicates=10)["estimate"]
        rng = np.random.default_rng(args.seed)
        hits = {m: {k: 0 for k in truth} for m in ("bca", "percentile")}
        valid = {m: {k: 0 for k in truth} for m in hits}
        started = time.perf_counter()
        for d in range(args.draws):
            drawn = rng.choice(patients, size=args.patients, replace=True)
            rows = np.concatenate([np.flatnonzero(groups == p) for p in drawn])
            g = np.concatenate([[f"{k}"] * int(np.sum(groups == p)) for k, p in enumerate(drawn)])
            for method in hits:
                ci = intervals(y[rows], prob[rows], g, threshold, seed=d, method=method)["ci"]
                for k, bounds in ci.items():
                    if bounds is not None:
                        valid[method][k] += 1
                        hits[method][k] += bounds[0] <= truth[k] <= bounds[1]
        out[site] = {"pool_patients": int(len(patients)), "pool_images": int(len(y)), "truth": truth,
                     "coverage": {m: {k: hits[m][k] / max(1, valid[m][k]) for k in truth} for m in hits},
                     "monte_carlo_se": float(np.sqrt(0.95 * 0.05 / args.draws)),
                     "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps({site: out[site]}), flush=True)
    return out


def adapted_by(method: str, model, pre, images, labels, source, seed: int):
    """The base model adapted by ``method`` on labelled site images (``source``: images, labels)."""
    import keras

    from pneumokit.core.plugins import get_catalog
    from pneumokit.inference.adapt import fine_tune
    from pneumokit.training.fitting import refresh_batch_norm

    augment = TrainConfig().augment
    if method == "bn":
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        refresh_batch_norm(copy, images, pre, 64)
        return copy
    config = AdaptConfig(seed=seed, freeze_batch_norm=method != "ft_bn",
                         learning_rate=3e-4 if method == "ft_lr3e-4" else AdaptConfig().learning_rate)
    if method == "ft_mix":
        images, labels = np.concatenate([images, source[0]]), np.concatenate([labels, source[1]])
    return fine_tune(model, pre, images, labels, config, get_catalog(), augment)


def part_methods(args, pool, site_images, model, pre, mv, index, held) -> list[dict]:
    from pneumokit.inference.adapt import probabilities
    from pneumokit.training.gate import score_vectors, vectors, version_arrays

    arrays = version_arrays(mv)
    scored = (pool["half"] == "scored").to_numpy()
    y, groups = pool["label"].to_numpy(), pool["patient"].to_numpy()
    source_index = index[~held].reset_index(drop=True)
    results = []
    for site, images in site_images.items():
        for n in args.n:
            for seed in range(args.repeats):
                rows = draw_labelled(pool, n, args.seed + 1000 * seed + n)
                src = source_index.sample(len(rows), random_state=seed).reset_index(drop=True)
                source = (np.stack([pre.load(Path(p).read_bytes()) for p in src["path"]]),
                          src["label"].to_numpy())
                for method in ["none", *args.methods]:
                    if method == "none" and (n != args.n[0] or seed):
                        continue
                    started = time.perf_counter()
                    net = model if method == "none" else adapted_by(
                        method, model, pre, images[rows], y[rows], source, args.seed + seed)
                    prob = probabilities(net, pre, images[scored])
                    ci = intervals(y[scored], prob, groups[scored], 0.5, seed=0)
                    gate = score_vectors(vectors(net, images[scored], pre), arrays)
                    results.append({"site": site, "n": 0 if method == "none" else len(rows), "seed": seed,
                                    "method": method, "auc": ci["estimate"]["auc"], "auc_ci": ci["ci"]["auc"],
                                    "brier": ci["estimate"]["brier"],
                                    "gate_flagged": float(np.mean(gate > 1)),
                                    "seconds": round(time.perf_counter() - started, 1)})
                    print(json.dumps(results[-1]), flush=True)
    return results


def write_site(pool, rows, site: str, folder: Path) -> Path:
    """The pool's ``rows`` as a site would send them: image files (shifted as ``site`` says) and a
    manifest ``path,label,patient`` with relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,patient"]
    for i in rows:
        path = pool["path"].iloc[i]
        data = (Path(path).read_bytes() if site == "none" else composite(path) if site == COMPOSITE
                else shifted_file(path, site))
        name = f"{i}{Path(path).suffix if site == 'none' else '.png'}"
        (folder / name).write_bytes(data)
        lines.append(f"{name},{pool['class_name'].iloc[i]},{pool['patient'].iloc[i]}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def agreement(labelled: dict, scored: dict) -> dict:
    """Whether the scored half's figure lies within the labelled half's 95% interval widened by
    sqrt(2) about its estimate (the range for the difference of two independent halves)."""
    out = {}
    for k in ("auc", "accuracy"):
        est, (low, high) = labelled["figures"][k], labelled["ci95"][k]
        lo, hi = est - np.sqrt(2) * (est - low), est + np.sqrt(2) * (high - est)
        out[k] = {"labelled": est, "scored": scored["figures"][k], "range": [lo, hi],
                  "inside": bool(lo <= scored["figures"][k] <= hi)}
    return out


def part_adapt(args, pool, site_images, registry, mv) -> list[dict]:
    """``pneumokit.inference.adapt`` then ``pneumokit.inference.evaluate``, as a site would run them,
    per site and n."""
    from pneumokit.inference.adapt import adapt
    from pneumokit.inference.evaluate import evaluate

    scored_rows = np.flatnonzero((pool["half"] == "scored").to_numpy())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for site in site_images:
            scored = write_site(pool, scored_rows, site, Path(tmp) / site / "scored")
            base = evaluate(mv.ref, scored, registry=registry, output=Path(tmp) / "ev" / site, gate=False)
            for n in args.n:
                rows = draw_labelled(pool, n, args.seed + n)
                labelled = write_site(pool, rows, site, Path(tmp) / site / f"labelled{n}")
                base_lab = evaluate(mv.ref, labelled, registry=registry, gate=False,
                                    output=Path(tmp) / "evl" / f"{site}{n}")
                started = time.perf_counter()
                config = AdaptConfig(**json.loads(args.adapt_config))
                out = adapt(mv.ref, labelled, config=config, registry=registry, name=f"site-{len(results)}",
                            force=True, echo=lambda line: None)
                minutes = (time.perf_counter() - started) / 60
                after = evaluate(out.version.ref, scored, registry=registry,
                                 output=Path(tmp) / "eva" / f"{site}{n}", gate=False)
                registry.delete_all(out.version.name)  # the bench's registry keeps the base model only
                record = {"site": site, "n": len(rows), "minutes": round(minutes, 2),
                          "config": args.adapt_config,
                          "would_register": not out.worse, "cross_fitted": {
                              "before": out.before["estimate"], "after": out.after["estimate"]},
                          "scored_before": _figures(base), "scored_after": _figures(after),
                          "base_agreement": agreement(base_lab, base)}
                results.append(record)
                print(json.dumps(record), flush=True)
    return results


def _figures(report: dict) -> dict:
    return {k: report["figures"][k] for k in ("auc", "accuracy", "sensitivity", "specificity")} | {
        "auc_ci": report["ci95"]["auc"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--registry", default=str(ROOT / "bench/results/site-registry"))
    parser.add_argument("--part", choices=("coverage", "methods", "adapt"), default="coverage")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sites", type=int, default=1,
                        help="worst single shifts as stand-in sites, besides the pool and the composite")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--n", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["bn", "ft", "ft_bn", "ft_mix"])
    parser.add_argument("--adapt-config", default="{}", help="--part adapt: AdaptConfig settings as JSON")
    parser.add_argument("--only-sites", nargs="*", default=None, help="only these stand-in sites")
    args = parser.parse_args()

    index = scan(args.data, splits=CV_SPLITS).require_usable()
    held = holdout(index, args.holdout, args.seed)
    pool = index[held].reset_index(drop=True)
    pool["half"] = np.where(kfold(pool, 2, args.seed) == 1, "scored", "labelled")
    registry, mv = base_model(args, index, held)
    model = registry.load_model(mv.ref)
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    site_images = sites(args, pool, pre, model)
    if args.only_sites:
        site_images = {k: v for k, v in site_images.items() if k in args.only_sites}
    if args.part == "coverage":
        out = part_coverage(args, pool, site_images, model, pre, mv)
        worst = {m: min(min(s["coverage"][m]["auc"], s["coverage"][m]["accuracy"]) for s in out.values())
                 for m in ("bca", "percentile")}
        print(json.dumps({"worst_coverage_auc_accuracy": worst, "ratio": worst["bca"] / worst["percentile"]}))
    elif args.part == "adapt":
        results = part_adapt(args, pool, site_images, registry, mv)
        with open(Path(args.registry).parent / "site-adapt.jsonl", "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
        gain = [r["scored_after"]["auc"] - r["scored_before"]["auc"] for r in results]
        print(json.dumps({"mean_auc_gain_scored_half": float(np.mean(gain)), "ratio": float(np.mean(gain))}))
    elif args.part == "methods":
        results = part_methods(args, pool, site_images, model, pre, mv, index, held)
        Path(args.registry).parent.joinpath("site-methods.json").write_text(json.dumps(results, indent=1))
        base = {r["site"]: r["auc"] for r in results if r["method"] == "none"}
        gain = {m: float(np.mean([r["auc"] - base[r["site"]] for r in results if r["method"] == m]))
                for m in args.methods}
        print(json.dumps({"mean_auc_gain": gain, "ratio": max(gain.values())}))


if __name__ == "__main__":
    main()
