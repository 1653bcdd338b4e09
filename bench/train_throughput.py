"""Training throughput of every built-in architecture, fed by the real pipeline.

Images/second of model.fit at 128 px and 224 px for each architecture in the
catalog (transfer models with weights=none and their default frozen backbone),
and for a seed-style loop: the original CNN on 3-channel float32 224 px
tensors, as the original project fed it. One process, one machine.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from pneumokit import get_catalog  # noqa: E402
from pneumokit.data.dataset import scan  # noqa: E402
from pneumokit.data.preprocessing import Preprocessing  # noqa: E402
from pneumokit.training.fitting import compile_model  # noqa: E402
from pneumokit.training.pipeline import build_augmentations, make_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed_epochs(model, ds, n_images, epochs):
    model.fit(ds, epochs=1, verbose=0)  # tracing, first pass
    t = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    return n_images * epochs / (time.perf_counter() - t)


def main():
    import keras
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--augment", default="crop,rotate,brightness,contrast")
    args = parser.parse_args()

    index = scan(args.data).require_usable().sample(args.images, random_state=0)
    paths, labels = index["path"].tolist(), index["label"].to_numpy()
    catalog = get_catalog()
    results = {}
    for arch in catalog.list_architectures():
        options = {"weights": "none"} if "weights" in arch.options else {}
        for size in (128, 224):
            keras.utils.set_random_seed(0)
            pre = Preprocessing.for_architecture(arch, size)
            ds = make_dataset(paths, labels, pre, batch_size=args.batch_size, training=True,
                              augmentations=build_augmentations(args.augment, catalog, seed=0), seed=0)
            model = compile_model(arch.build((size, size, arch.channels), **options), 1e-3)
            ips = timed_epochs(model, ds, len(paths), args.epochs)
            results[f"{arch.name}@{size}"] = round(ips, 1)
            print(f"{arch.name} at {size}px: {ips:.1f} images/s", flush=True)

    # The seed-style loop: the original CNN on 3-channel float32 224 px tensors.
    keras.utils.set_random_seed(0)
    pre = Preprocessing.from_preset("unit", 224, 3)
    x = pre.prepare(paths)
    seed_ds = tf.data.Dataset.from_tensor_slices((x, labels.astype("float32"))).shuffle(
        len(labels), seed=0).batch(args.batch_size)
    model = compile_model(catalog.architecture("cnn").build((224, 224, 3)), 1e-3)
    seed_ips = timed_epochs(model, seed_ds, len(paths), args.epochs)
    print(f"seed-style loop (original CNN, float32 224x224x3 tensors): {seed_ips:.1f} images/s")
    default = results["cnn_optimized@128"]
    print(json.dumps({
        "images": len(paths), "batch_size": args.batch_size, "augment": args.augment,
        "cpu_cores": os.cpu_count(), "images_per_s": results, "seed_style_images_per_s": round(seed_ips, 1),
        "ratio_cnn_optimized_128_vs_seed_style": round(default / seed_ips, 2),
        "ratio_cnn_224_pipeline_vs_seed_style": round(results["cnn@224"] / seed_ips, 2),
    }))


if __name__ == "__main__":
    main()
