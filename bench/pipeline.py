"""Input pipeline benchmark on the real chest X-rays (see bench/README.md).

(a) naive loop: Pillow open, convert, resize, to NumPy, one image at a time;
(b) the pneumokit pipeline's first pass (decode into the uint8 cache + one augmented epoch);
(c) its cached passes (augmented epochs from the cache);
and whether the pipeline stalls training: cnn_optimized epoch time fed by the
pipeline (after its first epoch) vs fed from the same tensors held in memory.
"""

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pneumokit import get_catalog  # noqa: E402
from pneumokit.data import scan  # noqa: E402
from pneumokit.pipeline import build_augmentations, make_dataset  # noqa: E402
from pneumokit.preprocessing import Preprocessing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive(paths, size):
    t = time.perf_counter()
    for p in paths:
        np.asarray(Image.open(p).convert("L").resize((size, size), Image.Resampling.BILINEAR))
    return len(paths) / (time.perf_counter() - t)


def pipeline_passes(paths, labels, size, augment, passes):
    pre = Preprocessing.from_preset("unit", size, 1)
    augs = build_augmentations(augment, get_catalog(), seed=0)
    t = time.perf_counter()
    ds = make_dataset(paths, labels, pre, batch_size=64, training=True, augmentations=augs, seed=0)
    for _ in ds:
        pass
    first = len(paths) / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(passes):
        for _ in ds:
            pass
    cached = passes * len(paths) / (time.perf_counter() - t)
    return first, cached


def epoch_seconds(model, ds, epochs):
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        times.append(time.perf_counter() - t)
    return times


def stall(paths, labels, size, augment, epochs):
    import keras
    import tensorflow as tf

    arch = get_catalog().architecture("cnn_optimized")
    pre = Preprocessing.for_architecture(arch, size)
    augs = build_augmentations(augment, get_catalog(), seed=0)
    file_fed = make_dataset(paths, labels, pre, batch_size=64, training=True, augmentations=augs, seed=0)
    # The same tensors, already preprocessed, held in memory: the pipeline's cost removed.
    x = np.concatenate([b for b, _ in make_dataset(paths, labels, pre, batch_size=256)])
    y = np.asarray(labels, dtype=np.float32)
    in_memory = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=0).batch(64).prefetch(2)

    def fresh():
        keras.utils.set_random_seed(0)
        model = arch.build((size, size, arch.channels))
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model

    files = epoch_seconds(fresh(), file_fed, epochs + 1)[1:]  # skip the pipeline's first pass
    memory = epoch_seconds(fresh(), in_memory, epochs + 1)[1:]  # skip tracing/warm-up
    return float(np.median(files)), float(np.median(memory))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--size", type=int, default=224, help="image size for (a)-(c)")
    parser.add_argument("--augment", default="flip,crop,brightness,contrast")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--stall-size", type=int, default=128)
    parser.add_argument("--stall-epochs", type=int, default=2)
    args = parser.parse_args()

    index = scan(args.data).require_usable()
    paths, labels = index["path"].tolist(), index["label"].tolist()
    print(f"{len(paths)} images from {args.data}; {os.cpu_count()} CPU cores")
    naive_ips = naive(paths, args.size)
    print(f"(a) naive Pillow loop at {args.size}px: {naive_ips:.0f} images/s")
    first, cached = pipeline_passes(paths, labels, args.size, args.augment, args.passes)
    peak = rss_mb()
    print(f"(b) pipeline first pass: {first:.0f} images/s; (c) cached passes: {cached:.0f} images/s "
          f"(augment={args.augment}); peak RSS so far {peak:.0f} MB")
    naive_small = naive(paths, args.stall_size)
    first_small, cached_small = pipeline_passes(paths, labels, args.stall_size, args.augment, args.passes)
    print(f"at {args.stall_size}px: naive {naive_small:.0f}, first pass {first_small:.0f}, "
          f"cached {cached_small:.0f} images/s")
    file_s, memory_s = stall(paths, labels, args.stall_size, args.augment, args.stall_epochs)
    print(f"cnn_optimized epoch at {args.stall_size}px: fed by the pipeline {file_s:.2f}s, "
          f"from in-memory tensors {memory_s:.2f}s")
    print(json.dumps({
        "images": len(paths),
        "image_size": args.size,
        "augment": args.augment,
        "naive_images_per_s": round(naive_ips, 1),
        "first_pass_images_per_s": round(first, 1),
        "cached_images_per_s": round(cached, 1),
        "ratio_first_pass_vs_naive": round(first / naive_ips, 3),
        "ratio_cached_vs_first_pass": round(cached / first, 3),
        "peak_rss_mb_after_cached_passes": round(peak, 1),
        f"naive_images_per_s_{args.stall_size}px": round(naive_small, 1),
        f"first_pass_images_per_s_{args.stall_size}px": round(first_small, 1),
        f"cached_images_per_s_{args.stall_size}px": round(cached_small, 1),
        "epoch_s_file_fed": round(file_s, 3),
        "epoch_s_in_memory": round(memory_s, 3),
        "stall_ratio": round(file_s / memory_s, 3),
    }))


if __name__ == "__main__":
    main()
