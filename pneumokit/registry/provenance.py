"""What a registered model records about where it came from."""

from __future__ import annotations

import hashlib
from importlib import metadata as importlib_metadata

import pandas as pd

from ..core.catalog import Architecture
from ..core.config import CLASS_NAMES, TrainConfig
from ..core.layout import TRAINING_IMAGES  # noqa: F401  (re-exported)
from ..data.preprocessing import Preprocessing
from ..models.recipes import recipe_record

PACKAGES = ("pneumokit", "tensorflow", "tensorflow-cpu", "keras", "numpy", "tf2onnx", "onnx",
            "onnxruntime", "onnxruntime-gpu", "scikit-learn", "pillow")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def dataset_fingerprint(index: pd.DataFrame, root=None) -> dict:
    """File count and a hash of (content sha256, label) pairs: renames do not change it; the
    images per class and the patients, for the model card."""
    pairs = sorted(f"{s}:{y}" for s, y in zip(index["sha256"], index["label"], strict=True))
    counts = index["label"].value_counts()
    return {"root": str(root) if root is not None else None, "files": len(index),
            "sha256": hashlib.sha256("\n".join(pairs).encode()).hexdigest(),
            "classes": {name: int(counts.get(i, 0)) for i, name in enumerate(CLASS_NAMES)},
            "patients": int(index["patient"].nunique()) if "patient" in index else None}


def model_metadata(arch: Architecture, config: TrainConfig, pre: Preprocessing, index: pd.DataFrame,
                   *, root=None, threshold: float, metrics: dict, **extra) -> dict:
    """The metadata.json of a registered model (the registry adds name, version, sha256s)."""
    return {
        "architecture": {"name": arch.name, "plugin": arch.plugin,
                         "plugin_version": arch.plugin_version},
        "config": config.to_dict(),
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "threshold": float(threshold),
        "image_size": pre.height,
        "channels": pre.channels,
        "preprocessing": pre.to_dict(),
        "metrics": metrics,
        "dataset": dataset_fingerprint(index, root),
        "recipe": recipe_record(config),
        "packages": package_versions(),
        **extra,
    }




def training_images(index: pd.DataFrame) -> bytes:
    """The sha256 of every training image, one per line: lets ``evaluate`` detect overlap."""
    return ("\n".join(sorted(set(index["sha256"]))) + "\n").encode()


def unparsed_warning(index: pd.DataFrame) -> str | None:
    """A notice when file names carry no patient id, so grouping cannot keep patients apart."""
    n = int((~index["patient_parsed"]).sum())
    if not n:
        return None
    return (f"warning: {n} of {len(index)} images have no patient id (no patient column in the manifest, "
            "or a file name without one); each of those images is its own group, so a patient with "
            "several such images can leak across splits (give a manifest a patient column, docs/data.md)")
