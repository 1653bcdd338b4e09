"""Input pipeline benchmark on the real chest X-rays (see bench/README.md).

(a) naive loop: Pillow open, convert, resize, to NumPy, one image at a time;
(b) the pneumokit pipeline's first pass (decode into the uint8 cache + one augmented epoch);
(c) its cached passes (augmented epochs from the cache);
the ceiling for (c) with a geometric augmentation: one cv2.warpAffine per image
alone, one thread per core; and whether the pipeline stalls training:
cnn_optimized epoch time fed by the pipeline (after its first epoch) vs fed
from the same tensors held in memory.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pneumokit import get_catalog  # noqa: E402
from pneumokit.core.config import DEFAULT_AUGMENT  # noqa: E402
from pneumokit.data.dataset import scan  # noqa: E402
from pneumokit.data.decoding import decode_all  # noqa: E402
from pneumokit.data.preprocessing import Preprocessing  # noqa: E402
from pneumokit.training.pipeline import build_augmentations, make_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def memory_mb() -> dict:
    """Peak RSS, current RSS and its anonymous part (RSS less shared library pages mapped from disk)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    kb = {k: int(status[k].split()[0]) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
    return {k: round(v / 1024, 1) for k, v in kb.items()}


def memory_child(paths, labels, size, augment, passes):
    """One pipeline, as a training run would hold it, in a fresh process: its memory."""
    pre = Preprocessing.from_preset("unit", size, 1)
    augs = build_augmentations(augment, get_catalog(), seed=0)
    ds = make_dataset(paths, labels, pre, batch_size=64, training=True, augmentations=augs, seed=0)
    for _ in range(1 + passes):
        for _ in ds:
            pass
    print(json.dumps(memory_mb()))


def naive(paths, size):
    t = time.perf_counter()
    for p in paths:
        np.asarray(Image.open(p).convert("L").resize((size, size), Image.Resampling.BILINEAR))
    return len(paths) / (time.perf_counter() - t)


def warp_floor(paths, size):
    """Images/s of ``cv2.warpAffine`` alone on the decoded uint8 images, one thread per core.

    One bilinear resampling per image is the least work any rotation, zoom or
    crop can do, and the fused pipeline does exactly one; this is the ceiling
    for a cached pass with such an augmentation on this machine.
    """
    import cv2

    images = decode_all(paths, Preprocessing.from_preset("unit", size, 1))[..., 0]
    angle, scale, c = np.radians(3.0), 0.9, (size - 1) / 2
    m = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 0],
                  [scale * np.sin(angle), scale * np.cos(angle), 0]], np.float32)
    m[:, 2] = c - m[:, :2] @ [c, c]
    workers = os.cpu_count() or 1

    def warp(chunk):
        for img in images[chunk::workers]:
            cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(warp, range(workers)))
    return len(images) / (time.perf_counter() - t)


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


def stall(paths, labels, size, augment, epochs):
    """Median epoch seconds of cnn_optimized fed by the pipeline vs from in-memory tensors.

    Epochs of the two alternate (ABAB...) so that drift in the VM's speed hits both alike.
    """
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

    runs = {"file": (fresh(), file_fed, []), "memory": (fresh(), in_memory, [])}
    for epoch in range(epochs + 1):  # epoch 0: the pipeline's first pass and tracing, not counted
        for model, ds, times in runs.values():
            t = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            if epoch:
                times.append(time.perf_counter() - t)
    return float(np.median(runs["file"][2])), float(np.median(runs["memory"][2]))


def median_rounds(fn, rounds):
    """Run ``fn`` ``rounds`` times; the median of each figure it returns (VM timing noise)."""
    results = [fn() for _ in range(rounds)]
    return tuple(float(np.median(col)) for col in zip(*results, strict=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--size", type=int, default=224, help="image size for (a)-(c)")
    parser.add_argument("--augment", default=DEFAULT_AUGMENT, help="default: training's default")
    parser.add_argument("--passes", type=int, default=3, help="cached passes per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    parser.add_argument("--stall-size", type=int, default=128)
    parser.add_argument("--stall-epochs", type=int, default=3)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    index = scan(args.data).require_usable()
    paths, labels = index["path"].tolist(), index["label"].tolist()
    if args.memory_only:
        memory_child(paths, labels, args.size, args.augment, args.passes)
        return
    child = subprocess.run([sys.executable, __file__, "--memory-only",
                            "--data", args.data, "--size", str(args.size), "--augment", args.augment],
                           capture_output=True, text=True, check=True)
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"memory of one {args.size}px pipeline after {1 + args.passes} passes (fresh process): "
          f"peak RSS {memory['VmHWM']:.0f} MB, of which TensorFlow's shared libraries "
          f"{memory['RssFile']:.0f} MB; anonymous (process-private) {memory['RssAnon']:.0f} MB")
    print(f"{len(paths)} images from {args.data}; {os.cpu_count()} CPU cores; "
          f"medians of {args.rounds} interleaved rounds")
    figures = {}
    for size in (args.size, args.stall_size):
        def one_round(size=size):
            return (naive(paths, size),
                    *pipeline_passes(paths, labels, size, args.augment, args.passes),
                    *pipeline_passes(paths, labels, size, "", args.passes))

        n, first, cached, first_plain, cached_plain = median_rounds(one_round, args.rounds)
        figures[size] = {"naive": n, "first": first, "cached": cached,
                         "first_plain": first_plain, "cached_plain": cached_plain}
        print(f"{size}px: (a) naive {n:.0f} images/s; augment={args.augment}: (b) first pass "
              f"{first:.0f}, (c) cached {cached:.0f}; no augmentation: first pass "
              f"{first_plain:.0f}, cached {cached_plain:.0f}")
    floor = warp_floor(paths, args.size)
    print(f"{args.size}px: one cv2.warpAffine per image, alone, {os.cpu_count()} threads: "
          f"{floor:.0f} images/s (ceiling of a cached pass with a geometric augmentation; "
          f"the 10x target needs {10 * figures[args.size]['first']:.0f})")
    file_s, memory_s = stall(paths, labels, args.stall_size, args.augment, args.stall_epochs)
    print(f"cnn_optimized epoch at {args.stall_size}px: fed by the pipeline {file_s:.2f}s, "
          f"from in-memory tensors {memory_s:.2f}s")
    main_fig, small = figures[args.size], figures[args.stall_size]
    print(json.dumps({
        "images": len(paths),
        "image_size": args.size,
        "augment": args.augment,
        "naive_images_per_s": round(main_fig["naive"], 1),
        "first_pass_images_per_s": round(main_fig["first"], 1),
        "cached_images_per_s": round(main_fig["cached"], 1),
        "ratio_first_pass_vs_naive": round(main_fig["first"] / main_fig["naive"], 3),
        "ratio_cached_vs_first_pass": round(main_fig["cached"] / main_fig["first"], 3),
        "warp_floor_images_per_s": round(floor, 1),
        "ratio_warp_floor_vs_first_pass": round(floor / main_fig["first"], 3),
        "first_pass_images_per_s_no_augment": round(main_fig["first_plain"], 1),
        "cached_images_per_s_no_augment": round(main_fig["cached_plain"], 1),
        "ratio_first_pass_vs_naive_no_augment": round(main_fig["first_plain"] / main_fig["naive"], 3),
        "ratio_cached_vs_first_pass_no_augment": round(
            main_fig["cached_plain"] / main_fig["first_plain"], 3),
        "peak_rss_mb": memory["VmHWM"],
        "rss_file_backed_mb": memory["RssFile"],
        "rss_anonymous_mb": memory["RssAnon"],
        f"naive_images_per_s_{args.stall_size}px": round(small["naive"], 1),
        f"first_pass_images_per_s_{args.stall_size}px": round(small["first"], 1),
        f"cached_images_per_s_{args.stall_size}px": round(small["cached"], 1),
        f"ratio_first_pass_vs_naive_{args.stall_size}px": round(small["first"] / small["naive"], 3),
        "stall_image_size": args.stall_size,
        "epoch_s_file_fed": round(file_s, 3),
        "epoch_s_in_memory": round(memory_s, 3),
        "stall_ratio": round(file_s / memory_s, 3),
    }))


if __name__ == "__main__":
    main()
