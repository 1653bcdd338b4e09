"""Defaults, in one place. Every command and function reads its defaults from here."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# The bundled demo set: ~200 real chest X-rays (CC BY 4.0, see demo/README.md).
DEMO_DATA_DIR = PACKAGE_DIR / "demo" / "chest_xray"

CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # label 0, label 1 (the positive class)
SPLITS = ("train", "val", "test")
CV_SPLITS = ("train", "val")  # pooled for cross-validation; test stays aside
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

DEFAULT_ARCHITECTURE = "cnn_optimized"
DEFAULT_BATCH_SIZE = 32
DEFAULT_SEED = 42
DEFAULT_THRESHOLD = 0.5

# Decoding/resizing rule shared by training, export metadata and inference.
RESIZE_METHOD = "bilinear"  # Pillow's bilinear filter, antialiased when shrinking
JPEG_DRAFT = True  # let libjpeg decode grayscale at a reduced DCT scale (>= target size)
