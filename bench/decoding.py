"""What the portable preprocessing rule costs, and how close OpenCV comes to it (issue 14).

1. First-pass decode time (threads, ``decoding.decode_all``) of the 60
   full-resolution originals and of the 5,232 shared 224-px images, with the
   full decode (the default rule) and with the opt-in ``jpeg_draft``
   (libjpeg's reduced DCT scale). Means of interleaved rounds.
2. Pixel agreement with the rule, at 128 and 224 px, on the 60 originals, of:
   the ``jpeg_draft`` decode, and OpenCV's ``imread(IMREAD_GRAYSCALE)`` then
   ``resize`` with ``INTER_AREA`` or ``INTER_LINEAR``.
3. With ``--model REF`` (an exported model), the probabilities of each
   variant against the rule's on the 60 originals: max and mean |Δp|, and
   how many labels flip at the stored threshold.

Last line: JSON with the ratio of the full decode's time to the draft's.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pneumokit.data.decoding import decode_all  # noqa: E402
from pneumokit.data.preprocessing import Preprocessing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def seconds(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def opencv(path, size, interpolation):
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(gray, (size, size), interpolation=interpolation)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None, help="registry ref of an exported model")
    parser.add_argument("--registry", default=None)
    args = parser.parse_args()
    originals = sorted(Path(args.shared, "originals").rglob("*.jpeg"))
    shared = sorted(str(p) for p in Path(args.shared, "chest_xray").rglob("*.jpeg"))
    if not originals or not shared:
        parser.error(f"--shared {args.shared}: expected originals/ and chest_xray/ with JPEGs inside")
    out = {"originals": len(originals), "shared_images": len(shared)}

    for name, paths, rounds in (("originals", originals, args.rounds), ("shared", shared, args.rounds)):
        for size in (128, 224):
            full, draft = (Preprocessing.from_preset("unit", size, 1, jpeg_draft=d) for d in (False, True))
            t_full = t_draft = 0.0
            for _ in range(rounds):  # interleaved, so drift hits both alike
                t_full += seconds(lambda p=full, x=paths: decode_all(x, p))
                t_draft += seconds(lambda p=draft, x=paths: decode_all(x, p))
            out[f"{name}_{size}px_full_s"] = round(t_full / rounds, 3)
            out[f"{name}_{size}px_draft_s"] = round(t_draft / rounds, 3)
            out[f"{name}_{size}px_full_images_per_s"] = round(len(paths) / (t_full / rounds), 1)
            print(f"{name} at {size} px: full decode {t_full / rounds:.3f} s, "
                  f"draft {t_draft / rounds:.3f} s ({len(paths)} images)", flush=True)

    variants = {"jpeg_draft": None, "opencv_area": cv2.INTER_AREA, "opencv_linear": cv2.INTER_LINEAR}
    for size in (128, 224):
        rule = decode_all(originals, Preprocessing.from_preset("unit", size, 1))[..., 0].astype(np.int16)
        for name, interp in variants.items():
            if interp is None:
                draft = Preprocessing.from_preset("unit", size, 1, jpeg_draft=True)
                got = decode_all(originals, draft)[..., 0]
            else:
                got = np.stack([opencv(p, size, interp) for p in originals])
            diff = np.abs(got.astype(np.int16) - rule)
            out[f"{name}_{size}px_pixels_mean_abs"] = round(float(diff.mean()), 3)
            out[f"{name}_{size}px_pixels_max_abs"] = int(diff.max())
            print(f"{name} vs the rule at {size} px: mean |Δpixel| {diff.mean():.3f}, max {diff.max()}")

    if args.model:
        from pneumokit.inference.runtime import Predictor
        from pneumokit.registry.store import Registry

        predictor = Predictor(args.model, registry=Registry(args.registry))
        pre = predictor.preprocessing
        size = pre.height
        rule = np.stack([Preprocessing.from_dict({**pre.to_dict(), "jpeg_draft": False}).load(p)
                         for p in originals])
        p_rule = predictor.predict_batch(pre.normalize(rule.astype(np.float32)))
        for name, interp in variants.items():
            if interp is None:
                imgs = np.stack([Preprocessing.from_dict({**pre.to_dict(), "jpeg_draft": True}).load(p)
                                 for p in originals])
            else:
                imgs = np.stack([opencv(p, size, interp) for p in originals])[..., None]
            p = predictor.predict_batch(pre.normalize(imgs.astype(np.float32)))
            d = np.abs(p - p_rule)
            flips = int(((p >= predictor.threshold) != (p_rule >= predictor.threshold)).sum())
            out[f"{name}_max_abs_dp"], out[f"{name}_mean_abs_dp"] = float(d.max()), float(d.mean())
            out[f"{name}_label_flips"] = flips
            print(f"{name} vs the rule, {args.model}: max |Δp| {d.max():.4f}, mean {d.mean():.4f}, "
                  f"{flips} label(s) flipped of {len(originals)}")
    out["ratio_full_vs_draft_originals_128px"] = round(
        out["originals_128px_full_s"] / out["originals_128px_draft_s"], 3)
    out["ratio_full_vs_draft_shared_128px"] = round(
        out["shared_128px_full_s"] / out["shared_128px_draft_s"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
