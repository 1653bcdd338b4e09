"""Inference latency and throughput: Keras predict, Keras __call__, pneumokit Predictor (ONNX).

For cnn_optimized and mobilenet_v2 at their default sizes: median latency at
batch 1 and throughput at batch 32, in one process. Weights are random
(weights=none: no download); speed does not depend on their values. A model
named ``NAME:N`` is a deep ensemble of N such networks (``--members N``, the
``accurate`` recipe is ``cnn_optimized:3``), built as training builds it.
"""

import argparse
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402  (bench/timing.py)

from pneumokit import get_catalog  # noqa: E402
from pneumokit.config import TrainConfig  # noqa: E402
from pneumokit.export import export  # noqa: E402
from pneumokit.preprocessing import Preprocessing  # noqa: E402
from pneumokit.registry import Registry  # noqa: E402
from pneumokit.runtime import Predictor  # noqa: E402


def bench_architecture(spec, registry, repeats):
    import keras

    from pneumokit.ensemble import calibrated

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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="cnn_optimized,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(tmp)
        for name in args.models.split(","):
            r = results[name] = bench_architecture(name, registry, args.repeats)
            print(f"{name} ({r['image_size']}px): batch 1 latency ms — keras predict "
                  f"{r['keras_predict_latency_ms_b1']}, keras call {r['keras_call_latency_ms_b1']}, "
                  f"predictor {r['predictor_latency_ms_b1']}; batch 32 images/s — keras predict "
                  f"{r['keras_predict_images_per_s_b32']}, keras call {r['keras_call_images_per_s_b32']}, "
                  f"predictor {r['predictor_images_per_s_b32']}")
    summary = {"cpu_cores": os.cpu_count(), "models": results,
               "latency_ratio_b1": results.get("cnn_optimized", {}).get("latency_ratio_b1"),
               "throughput_ratio_b32": results.get("cnn_optimized", {}).get("throughput_ratio_b32")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
