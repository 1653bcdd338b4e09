"""Input gate bench: how often the gate flags real X-rays, shifted X-rays and what is not one.

The default recipe is trained (``pneumokit train``) on a patient-grouped
``1 - --holdout`` of the shared images, exactly as a user's command would (the
gate is fitted there, on its own training images), and exported to ONNX. The
exported file then scores, through ``pneumokit.inference.runtime.Predictor`` (the path of
``predict`` and ``serve``), sets built from what is here:

- ``heldout``: real X-rays of the held-out patients (must pass: target <= 1% flagged);
- ``shifted:NAME``: a sample of them under each acquisition shift of
  ``pneumokit/data/stress.py`` (must pass: target <= 5% flagged);
- ``demo``, ``originals``: the bundled demo set and the full-size originals;
- ``dicom_xray``: held-out X-rays written as DICOM (DX, PA, CHEST; must pass);
- ``dicom_refused``: the same with another Modality, a lateral view, another
  body part, and pydicom's own test files (CT, MR, RT dose, colour, ...);
- ``dicom_pixels``: those test files' pixels saved as PNG (no header to read);
- ``natural``: scikit-image's and matplotlib's sample images;
- ``synthetic``: blank frames, noise, gradients, checkerboards, pages of text,
  a colour drawing;
- ``misoriented:KIND``: held-out X-rays rotated 90/180/270 degrees, flipped upside
  down, inverted, or cropped to a small patch (must be flagged); ``hflip`` is
  reported but not a target (a left-right flip is still a chest X-ray).

Non-X-ray targets: >= 99% flagged. ``--components`` also scores each component
alone (layout, features) from the Keras model, to show what each one catches.

Last line: JSON with the flag rate of every set, ``nonxray_flagged`` (all
non-X-ray and mis-oriented inputs together), ``heldout_flagged``,
``shifted_flagged`` (worst shift) and the ratio ``nonxray_flagged /
max(heldout_flagged, 1e-3)``.
"""

import argparse
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, ImageOps  # noqa: E402

from pneumokit.core.config import CV_SPLITS, TrainConfig  # noqa: E402
from pneumokit.data.dataset import scan  # noqa: E402
from pneumokit.data.splits import holdout  # noqa: E402
from pneumokit.data.stress import SHIFTS, shifted_file  # noqa: E402
from pneumokit.registry.store import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", module="pydicom")  # pydicom's test files are odd on purpose
NONXRAY = ("dicom_refused", "dicom_pixels", "natural", "synthetic")
MISORIENTED = ("rot90", "rot180", "rot270", "upside_down", "inverted", "patch")


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def gray(path) -> Image.Image:
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("L")


def dicom_bytes(img: Image.Image, **tags) -> bytes:
    """An 8-bit MONOCHROME2 DICOM of ``img`` with ``tags`` (Modality DX unless given)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    for key, value in tags.items():
        setattr(ds, key, value)
    arr = np.asarray(img.convert("L"), dtype=np.uint8)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pydicom_files() -> list[Path]:
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(p for p in folder.glob("*.dcm"))


def dicom_sets(sample: list[str]) -> dict[str, list]:
    """X-rays as DICOM that must pass, as DICOM that must be refused, and pydicom's own files."""
    import pydicom

    good = [(f"{Path(p).name}.dcm", dicom_bytes(gray(p), ViewPosition="PA", BodyPartExamined="CHEST"))
            for p in sample]
    wrong = [("CT", {"Modality": "CT"}), ("MR", {"Modality": "MR"}), ("OT", {"Modality": "OT"}),
             ("lateral", {"ViewPosition": "LL"}), ("hand", {"BodyPartExamined": "HAND"}),
             ("knee", {"BodyPartExamined": "KNEE"})]
    refused = [(f"{label}-{Path(p).name}.dcm", dicom_bytes(gray(p), **tags))
               for p in sample[:20] for label, tags in wrong]
    pixels = []
    for path in pydicom_files():
        data = path.read_bytes()
        refused.append((path.name, data))
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            arr = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception:  # no pixels, a codec not installed here, a damaged test file
            continue
        if arr.ndim == 3 and arr.shape[-1] != 3:
            arr = arr[0]
        if arr.ndim == 3:
            arr = arr.mean(axis=-1)
        if arr.ndim != 2 or arr.max() <= arr.min():
            continue
        scaled = np.rint(255 * (arr - arr.min()) / (arr.max() - arr.min())).astype(np.uint8)
        pixels.append((f"{path.stem}.png", png(Image.fromarray(scaled))))
    return {"dicom_xray": good, "dicom_refused": refused, "dicom_pixels": pixels}


def natural_set() -> list:
    import matplotlib
    import skimage.data

    names = ["astronaut", "brick", "camera", "cat", "checkerboard", "clock", "coffee", "coins",
             "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
             "microaneurysms", "moon", "page", "rocket", "text", "retina", "binary_blobs",
             "shepp_logan_phantom"]
    out = []
    for name in names:
        arr = np.asarray(getattr(skimage.data, name)())
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            arr = np.rint(255 * (arr - arr.min()) / max(1e-9, float(arr.max() - arr.min()))).astype(np.uint8)
        out.append((f"skimage-{name}.png", png(Image.fromarray(arr))))
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        out.append((f"matplotlib-{name}", (sample / name).read_bytes()))
    return out


def text_page(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    page = Image.new("L", (size, int(size * 1.3)), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=max(8, size // 40))
    words = ["patient", "request", "chest", "radiograph", "clinical", "history", "cough", "date",
             "signature", "ward", "referral", "urgent", "name", "number"]
    y = size // 20
    while y < page.height - size // 20:
        line = " ".join(rng.choice(words, size=int(rng.integers(4, 9))))
        draw.text((size // 15, y), line, fill=int(rng.integers(0, 60)), font=font)
        y += size // 30 + int(rng.integers(0, size // 60 + 1))
    return page


def drawing(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (400, 300), (110, 170, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 200, 400, 300), fill=(60, 170, 60))
    x, y = int(rng.integers(40, 360)), int(rng.integers(30, 120))
    draw.ellipse((x - 30, y - 30, x + 30, y + 30), fill=(250, 220, 40))
    return img


def synthetic_set() -> list:
    rng = np.random.default_rng(0)
    size = 256
    ramp = np.linspace(0, 255, size)
    yy, xx = np.mgrid[:size, :size]
    radial = np.hypot(yy - size / 2, xx - size / 2)
    arrays = {f"blank-{v}": np.full((size, size), v) for v in (0, 30, 128, 220, 255)}
    arrays |= {f"uniform-noise-{s}": rng.integers(0, 256, (size, size)) for s in range(3)}
    arrays |= {f"gaussian-noise-{s}": np.clip(rng.normal(128, 40, (size, size)), 0, 255) for s in range(3)}
    arrays |= {"gradient-h": np.tile(ramp, (size, 1)), "gradient-v": np.tile(ramp[:, None], (1, size)),
               "gradient-radial": 255 * radial / radial.max(),
               "gradient-radial-inv": 255 - 255 * radial / radial.max()}
    arrays |= {f"checkerboard-{c}": 255 * (((yy // c) + (xx // c)) % 2) for c in (8, 32, 64)}
    out = [(f"{k}.png", png(Image.fromarray(np.asarray(v, dtype=np.uint8)))) for k, v in arrays.items()]
    out += [(f"text-page-{s}.png", png(text_page(s, s))) for s in (300, 600, 1000)]
    out += [(f"drawing-{s}.png", png(drawing(s))) for s in range(3)]
    return out


def misoriented(img: Image.Image, kind: str, rng) -> Image.Image:
    if kind.startswith("rot"):
        return img.rotate(int(kind[3:]), expand=True)
    if kind == "upside_down":
        return ImageOps.flip(img)
    if kind == "hflip":
        return ImageOps.mirror(img)
    if kind == "inverted":
        return ImageOps.invert(img)
    w, h = img.size  # a patch of a quarter of each side
    x, y = int(rng.integers(0, w - w // 4)), int(rng.integers(0, h - h // 4))
    return img.crop((x, y, x + w // 4, y + h // 4))


def build_sets(test_paths: list[str], sample: list[str], data_root: Path) -> dict[str, list]:
    from pneumokit.core.config import DEMO_DATA_DIR
    from pneumokit.inference.runtime import expand_inputs

    rng = np.random.default_rng(1)
    sets = {"heldout": [(Path(p).name, p) for p in test_paths]}
    for shift in SHIFTS:
        if shift != "none":
            sets[f"shifted:{shift}"] = [(Path(p).name, shifted_file(p, shift)) for p in sample]
    sets["demo"] = [(p.name, str(p)) for p in expand_inputs([DEMO_DATA_DIR])]
    sets["originals"] = [(p.name, str(p)) for p in expand_inputs([data_root.parent / "originals"])]
    sets |= dicom_sets(sample)
    sets["natural"] = natural_set()
    sets["synthetic"] = synthetic_set()
    for kind in (*MISORIENTED, "hflip"):
        sets[f"misoriented:{kind}"] = [(Path(p).name, png(misoriented(gray(p), kind, rng))) for p in sample]
    return sets


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/chest_xray"))
    parser.add_argument("--holdout", type=float, default=0.2, help="patient-grouped held-out fraction")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=300,
                        help="held-out images per shifted/mis-oriented set")
    parser.add_argument("--epochs", type=int, default=None, help="override the default recipe's epochs")
    parser.add_argument("--output", default=None, help="keep the registry here (and reuse a model in it)")
    parser.add_argument("--components", action="store_true", help="also score each gate component alone")
    args = parser.parse_args()

    from robustness import link_tree  # noqa: E402  (bench/robustness.py)

    from pneumokit.inference.export import export
    from pneumokit.inference.runtime import Predictor
    from pneumokit.training.train import train

    index = scan(args.data, splits=CV_SPLITS).require_usable()
    held = holdout(index, args.holdout, args.seed)
    test = index[held]
    rng = np.random.default_rng(args.seed)
    sample = sorted(rng.choice(test["path"].to_numpy(), size=min(args.sample, len(test)), replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.output or tmp)
        registry = Registry(base / "registry")
        started = time.perf_counter()
        if not any(r["name"] == "gatebench" for r in registry.list()):
            data = link_tree(index[~held], Path(tmp) / "train_part" / "chest_xray")
            settings = {"seed": args.seed} | ({"epochs": args.epochs} if args.epochs else {})
            train(TrainConfig(**settings), data, registry=registry, name="gatebench", echo=lambda line: None)
            export("gatebench", registry)
        minutes = (time.perf_counter() - started) / 60
        mv = registry.get("gatebench")
        print(f"model {mv.ref} ({minutes:.1f} min to train and export); {len(index) - len(test)} training "
              f"images, {len(test)} held-out images of {test['patient'].nunique()} patients; gate "
              f"{json.dumps(mv.metadata['gate']['components'])}", flush=True)
        predictor = Predictor(mv.ref, registry=registry, providers="cpu")
        sets = build_sets(test["path"].tolist(), sample, Path(args.data))
        results = {name: flag_rate(predictor, items) for name, items in sets.items()}
        if args.components:
            components(registry, mv, sets, results)
    report(results)


def flag_rate(predictor, items) -> dict:
    rows = predictor.predict_sources(items)
    flagged = [r for r in rows if r["in_scope"] is False]
    errors = [r for r in rows if r["error"]]
    scores = [r["gate_score"] for r in rows if r["gate_score"] is not None]
    return {"images": len(rows), "flagged": len(flagged), "errors": len(errors),
            "flag_rate": len(flagged) / max(1, len(rows) - len(errors)),
            "median_score": float(np.median(scores)) if scores else None,
            "header_or_colour": sum(1 for r in flagged if r["gate_score"] is None),
            "passed": [r["name"] for r in rows if r["in_scope"]][:8],
            "unread": [f"{r['name']}: {r['error'][:60]}" for r in errors][:4]}


def components(registry, mv, sets, results) -> None:
    """Each component's own flag rate (its squared distance over its own threshold), from Keras."""
    from pneumokit import gate
    from pneumokit.data.preprocessing import Preprocessing
    from pneumokit.errors import PneumokitError

    model = registry.load_model(mv.ref)
    pre = Preprocessing.from_dict(mv.metadata["preprocessing"])
    arrays = gate.load(str(mv.verify(gate.GATE_FILE)))
    for name, items in sets.items():
        images = []
        for _, source in items:
            try:
                images.append(pre.load(source))
            except PneumokitError:
                continue
        if not images:
            continue
        vals = gate.values(gate.vectors(model, np.stack(images), pre), arrays)
        for comp, v in vals.items():
            results[name][f"{comp}_alone"] = float(np.mean(v > arrays[f"{comp}_threshold"]))


def report(results: dict) -> None:
    print(f"\n{'set':28s} {'images':>6s} {'flagged':>8s} {'rate':>7s} {'median score':>12s}  notes")
    for name, r in results.items():
        alone = "  ".join(f"{k}={v:.1%}" for k, v in r.items() if k.endswith("_alone"))
        med = "" if r["median_score"] is None else f"{r['median_score']:.3g}"
        print(f"{name:28s} {r['images']:6d} {r['flagged']:8d} {r['flag_rate']:7.1%} {med:>12s}  "
              f"{alone} {'errors ' + str(r['errors']) if r['errors'] else ''}")
    bad = [k for k in results if k in NONXRAY or k.split(":")[-1] in MISORIENTED]
    total = sum(results[k]["images"] - results[k]["errors"] for k in bad)
    nonxray = sum(results[k]["flagged"] for k in bad) / max(1, total)
    shifted = max(r["flag_rate"] for k, r in results.items() if k.startswith("shifted:"))
    held = results["heldout"]["flag_rate"]
    for k in bad:
        if results[k]["passed"]:
            print(f"passed in {k}: {', '.join(results[k]['passed'])}")
    print(json.dumps({"sets": {k: {f: v for f, v in r.items() if f not in ("passed", "unread")}
                               for k, r in results.items()},
                      "nonxray_flagged": nonxray, "heldout_flagged": held, "shifted_flagged": shifted,
                      "ratio": nonxray / max(held, 1e-3)}))


if __name__ == "__main__":
    main()
