"""Small synthetic datasets for fast tests (real-data tests are marked slow)."""

from pathlib import Path

import numpy as np
from PIL import Image

NAMES = {
    "NORMAL": ["IM-{p:04d}-{i:04d}.jpeg", "NORMAL2-IM-{p:04d}-{i:04d}.jpeg"],
    "PNEUMONIA": ["person{p}_bacteria_{i}.jpeg", "person{p}_virus_{i}.jpeg"],
}


def xray_like(label: int, size: int, rng) -> np.ndarray:
    """A grayscale image whose class shows in its brightness pattern (learnable)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 90 + 60 * np.cos(3 * xx) * np.cos(2 * yy)
    if label:
        base = base + 70 * np.exp(-((xx - 0.35) ** 2 + (yy - 0.5) ** 2) / 0.02)
    noise = rng.normal(0, 12, (size, size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 12, size: int = 48, splits=("train",), seed: int = 0,
                 per_patient: int = 1) -> Path:
    """chest_xray-style folder of synthetic images with parseable patient ids."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                patient = 100 + i // per_patient + (1000 if split != "train" else 0)
                template = NAMES[cls][(i // per_patient) % 2]  # a patient keeps one name series
                name = template.format(p=patient, i=i)
                Image.fromarray(xray_like(label, size, rng)).save(folder / name, quality=95)
    return root
