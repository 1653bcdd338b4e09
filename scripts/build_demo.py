"""Rebuild the bundled demo set from ../shared/data/chest_xray (run from the repo root).

Takes a seeded random sample of the official train split (100 NORMAL, 100
PNEUMONIA images; patients may repeat, as in the full set), downscales each to
128x128 grayscale JPEG (quality 90) and keeps the original file names, so
patient ids still parse. The demo README carries the CC BY 4.0 attribution.
"""

import argparse
import random
from pathlib import Path

from PIL import Image

CLASSES = ("NORMAL", "PNEUMONIA")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="../shared/data/chest_xray/train")
    parser.add_argument("--dest", default="pneumokit/data/demo/chest_xray/train")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=2018)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for cls in CLASSES:
        files = sorted(Path(args.source, cls).glob("*.jpeg"))
        out = Path(args.dest, cls)
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.jpeg"):
            old.unlink()
        for path in rng.sample(files, args.per_class):
            with Image.open(path) as img:
                small = img.convert("L").resize((args.size, args.size), Image.Resampling.LANCZOS)
                small.save(out / path.name, quality=90)
    print(f"wrote {args.per_class * len(CLASSES)} images under {args.dest}")


if __name__ == "__main__":
    main()
