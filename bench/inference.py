"""Inference latency and throughput: Keras predict, Keras __call__, pneumokit Predictor (ONNX).

For cnn_optimized and mobilenet_v2 at their default sizes: median latency at
batch 1 and throughput at batch 32, in one process. Weights are random
(weights=none: no download); speed does not depend on their values. A model
named ``NAME:N`` is a deep ensemble of N such networks (``--members N``, the
``accurate`` recipe is ``cnn_optimized:3``), built as training builds it.

INT8 rows (``--int8-version DIR``, a trained cnn_optimized version folder, copied into a
temporary registry): ``pneumokit export --int8``'s file against the float32 file, both through
the Predictor on the CPU: latency at batch 1, throughput at batch 32, their ratios, and the
probability, AUC and accuracy change on held-out real X-rays: a seeded sample of
``--held-out`` (default the shared train split) of patients the version was not trained on,
checked by patient id and by content against its training_images.txt, written as a manifest
(``--manifest``) that `pneumokit export REF --int8 --int8-data` takes too.
"""

import argparse
import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402  (bench/timing.py)

from pneumokit import get_catalog  # noqa: E402
from pneumokit.core.config import TrainConfig  # noqa: E402
from pneumokit.data.preprocessing import Preprocessing  # noqa: E402
from pneumokit.inference.export import export  # noqa: E402
from pneumokit.inference.quantize import INT8_FILE, quantize  # noqa: E402
from pneumokit.inference.runtime import Predictor  # noqa: E402
from pneumokit.registry.store import Registry  # noqa: E402


def bench_architecture(spec, registry, repeats):
    import keras

    from pneumokit.models.ensemble import calibrated

    name, _, members = spec.partition(":")
    arch = get_catalog().architecture(name)
    options = {"weights": "none"} if "weights" in arch.options else {}
    pre = Preprocessing.for_architecture(arch)
    keras.utils.set_random_seed(0)
    nets = [arch.build((pre.height, pre.width, pre.channels), **options) for _ in range(int(members or 1))]
    model = nets[0] if len(nets) == 1 else calibrated(nets, 1.0, name=name, member_name="member")
    config = TrainConfig(architecture=name, options=options, members=len(nets))
    ref = name if len(nets) == 1 else f"{name}-x{len(nets)}"  # a registry name
    registry.save(ref, model, {"architecture": {"name": name}, "config": config.to_dict(),
                               "threshold": 0.5, "preprocessing": pre.to_dict()})
    parity = export(ref, registry).max_abs_diff
    predictor = Predictor(ref, providers="cpu", registry=registry)
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, 1, (1, pre.height, pre.width, pre.channels)).astype(np.float32)
    x32 = rng.uniform(0, 1, (32, pre.height, pre.width, pre.channels)).astype(np.float32)
    engines = {
        "keras_predict": lambda x: model.predict(x, verbose=0),
        "keras_call": lambda x: model(x, training=False),
        "predictor": predictor.predict_batch,
    }
    out = {"image_size": pre.height, "channels": pre.channels, "onnx_parity": parity}
    for engine, fn in engines.items():
        out[f"{engine}_latency_ms_b1"] = round(1000 * median_seconds(lambda f=fn: f(x1), repeats), 3)
        out[f"{engine}_images_per_s_b32"] = round(
            32 / median_seconds(lambda f=fn: f(x32), max(5, repeats // 4)), 1)
    out["latency_ratio_b1"] = round(out["predictor_latency_ms_b1"] / out["keras_predict_latency_ms_b1"], 4)
    out["throughput_ratio_b32"] = round(
        out["predictor_images_per_s_b32"] / out["keras_predict_images_per_s_b32"], 3)
    return out


def held_out_sample(version: Path, source: Path, per_class: int, manifest: Path, seed: int = 0) -> Path:
    """A manifest of ``per_class`` images of each class of ``source`` (a split folder of
    NORMAL/ and PNEUMONIA/) from patients ``version`` was not trained on."""
    from pneumokit.data.dataset import patient_id, scan

    meta = json.loads((version / "metadata.json").read_text())
    trained = set((version / "training_images.txt").read_text().split())
    root = meta.get("dataset", {}).get("root")
    index = scan(root if root and Path(root).is_dir() else None, splits=["train", "val", "test"]).index
    patients = set(index.loc[index["sha256"].isin(trained), "patient"])
    assert len(index[index["sha256"].isin(trained)]) == len(trained), "training images not all found"
    rng = np.random.default_rng(seed)
    rows = []
    for cls in ("NORMAL", "PNEUMONIA"):
        files = [p for p in sorted((source / cls).glob("*.jpeg")) if patient_id(p.name) not in patients]
        for i in sorted(rng.choice(len(files), per_class, replace=False)):
            path = files[i].resolve()
            assert hashlib.sha256(path.read_bytes()).hexdigest() not in trained
            rows.append({"path": str(path), "label": cls, "patient": patient_id(path.name)})
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def bench_int8(version: Path, manifest: Path, repeats: int) -> dict:
    """export --int8 of a copy of ``version``; the INT8 and float32 Predictors timed and compared."""
    meta = json.loads((version / "metadata.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(tmp)
        shutil.copytree(version, Path(tmp) / meta["name"] / str(meta["version"]))
        ref = f"{meta['name']}:{meta['version']}"
        export(ref, registry)
        result = quantize(ref, registry, held_out=str(manifest), warn=True)
        folder = registry.get(ref).path
        engines = {"float32": Predictor(folder / "model.onnx", providers="cpu"),
                   "int8": Predictor(folder / INT8_FILE, providers="cpu")}
        pre = engines["float32"].preprocessing
        paths = [r["path"] for r in csv.DictReader(open(manifest))][:32]
        x32 = pre.prepare(paths)
        out = {"ref": ref, "held_out_images": result.record["held_out"]["images"],
               "calibration_images": result.record["calibration"]["images"],
               "within_bounds": result.record["within_bounds"]}
        for name, predictor in engines.items():
            out[f"{name}_latency_ms_b1"] = round(
                1000 * median_seconds(lambda p=predictor: p.predict_batch(x32[:1]), repeats), 3)
            out[f"{name}_images_per_s_b32"] = round(
                32 / median_seconds(lambda p=predictor: p.predict_batch(x32), max(5, repeats // 4)), 1)
    parity = result.record["parity"]
    return out | {
        "latency_ratio_b1": round(out["int8_latency_ms_b1"] / out["float32_latency_ms_b1"], 3),
        "throughput_ratio_b32": round(out["int8_images_per_s_b32"] / out["float32_images_per_s_b32"], 3),
        "max_abs_probability_change": round(parity["max_abs_probability_change"], 4),
        "mean_abs_probability_change": round(parity["mean_abs_probability_change"], 4),
        "labels_changed": parity["labels_changed"],
        "auc_float32": round(parity["auc"]["float32"], 4), "auc_int8": round(parity["auc"]["int8"], 4),
        "auc_change": round(parity["auc"]["change"], 4),
        "accuracy_float32": round(parity["accuracy"]["float32"], 4),
        "accuracy_int8": round(parity["accuracy"]["int8"], 4),
        "accuracy_change": round(parity["accuracy"]["change"], 4), "gate": parity.get("gate")}


def _print_int8(r: dict, manifest: Path) -> None:
    print(f"int8 {r['ref']} against float32, Predictor on CPU: batch 1 latency ms "
          f"{r['int8_latency_ms_b1']} vs {r['float32_latency_ms_b1']} (x{r['latency_ratio_b1']}); "
          f"batch 32 images/s {r['int8_images_per_s_b32']} vs {r['float32_images_per_s_b32']} "
          f"(x{r['throughput_ratio_b32']}); on {r['held_out_images']} held-out images ({manifest}): "
          f"max |dp| {r['max_abs_probability_change']}, AUC {r['auc_float32']} -> {r['auc_int8']} "
          f"({r['auc_change']:+}), accuracy {r['accuracy_float32']} -> {r['accuracy_int8']} "
          f"({r['accuracy_change']:+}), {r['labels_changed']} labels changed")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="cnn_optimized,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--int8-version", type=Path,
                        help="a trained cnn_optimized version folder for the INT8 rows (skipped without)")
    parser.add_argument("--held-out", type=Path, default=Path("../shared/data/chest_xray/train"))
    parser.add_argument("--held-out-per-class", type=int, default=250)
    parser.add_argument("--manifest", type=Path, default=Path("bench/results/int8-heldout.csv"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(tmp)
        for name in filter(None, args.models.split(",")):
            r = results[name] = bench_architecture(name, registry, args.repeats)
            print(f"{name} ({r['image_size']}px): batch 1 latency ms — keras predict "
                  f"{r['keras_predict_latency_ms_b1']}, keras call {r['keras_call_latency_ms_b1']}, "
                  f"predictor {r['predictor_latency_ms_b1']}; batch 32 images/s — keras predict "
                  f"{r['keras_predict_images_per_s_b32']}, keras call {r['keras_call_images_per_s_b32']}, "
                  f"predictor {r['predictor_images_per_s_b32']}")
    int8 = None
    if args.int8_version:
        manifest = held_out_sample(args.int8_version, args.held_out, args.held_out_per_class, args.manifest)
        int8 = bench_int8(args.int8_version, manifest, args.repeats)
        _print_int8(int8, manifest)
    summary = {"cpu_cores": os.cpu_count(), "models": results,
               "latency_ratio_b1": results.get("cnn_optimized", {}).get("latency_ratio_b1"),
               "throughput_ratio_b32": results.get("cnn_optimized", {}).get("throughput_ratio_b32"),
               "int8": int8,
               "int8_latency_ratio_b1": int8 and int8["latency_ratio_b1"],
               "int8_throughput_ratio_b32": int8 and int8["throughput_ratio_b32"]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
