"""Defaults, in one place. Every command and function reads its defaults from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# The bundled demo set: ~200 real chest X-rays (CC BY 4.0, see demo/README.md).
DEMO_DATA_DIR = PACKAGE_DIR / "demo" / "chest_xray"

CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # label 0, label 1 (the positive class)
SPLITS = ("train", "val", "test")
CV_SPLITS = ("train", "val")  # pooled for cross-validation; test stays aside
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

DEFAULT_ARCHITECTURE = "cnn_optimized"
DEFAULT_BATCH_SIZE = 64  # the original project's
DEFAULT_SEED = 42
DEFAULT_THRESHOLD = 0.5

# Decoding/resizing rule shared by training, export metadata and inference.
RESIZE_METHOD = "bilinear"  # Pillow's bilinear filter, antialiased when shrinking
# Whether libjpeg may decode at a reduced DCT scale (>= target size; Pillow's draft).
# Off by default: few runtimes can ask for it (browsers, Java, C#, most DICOM
# tool chains decode fully, then resize), and on full-size X-rays it moved
# probabilities by up to 0.24. An opt-in speed setting, recorded in the contract.
JPEG_DRAFT = False

# Training. Augmentation default, chosen with bench/robustness.py (docs/performance.md):
# random resized crops (60-100% of the area), small rotations, and what differs
# between hospitals' acquisition and export — JPEG compression, blur, noise,
# brightness, contrast, gamma. No left-right flip: anatomy is not symmetric.
# Kept in the order geometric, image, pointwise so the pipeline fuses it.
DEFAULT_AUGMENT = ("crop:scale=0.6-1,rotate:degrees=10,jpeg:quality=30-95,blur:sigma=1,noise:std=0.03,"
                   "brightness:factor=0.2,contrast:factor=0.2,gamma:factor=0.2")
DEFAULT_EPOCHS = 20
DEFAULT_LEARNING_RATE = 1e-3  # the peak of the schedule
# Learning-rate schedule: "cosine" warms up linearly for WARMUP_EPOCHS, then decays
# to zero by the last epoch; "constant" keeps the rate (the original project's).
LR_SCHEDULES = ("cosine", "constant")
DEFAULT_LR_SCHEDULE = "cosine"
WARMUP_EPOCHS = 1
# After fitting, re-estimate batch-norm statistics over the (unaugmented) training
# images so inference-mode statistics match the final weights.
DEFAULT_BN_REFRESH = True
# How the stored decision threshold is chosen from calibrated probabilities:
# "calibrated" keeps 0.5 (the calibrated, class-balanced decision), "youden" maximises
# Youden's J on held-out predictions; --target-sensitivity overrides both.
THRESHOLD_RULES = ("calibrated", "youden")
DEFAULT_THRESHOLD_RULE = "calibrated"
DEFAULT_PATIENCE = 5
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_MODEL_NAME = None  # None: the architecture's name


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides one training run. Defaults live here only."""

    architecture: str = DEFAULT_ARCHITECTURE
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    image_size: int | None = None  # None: the architecture's default
    augment: str = DEFAULT_AUGMENT
    learning_rate: float = DEFAULT_LEARNING_RATE
    lr_schedule: str = DEFAULT_LR_SCHEDULE
    bn_refresh: bool = DEFAULT_BN_REFRESH
    threshold_rule: str = DEFAULT_THRESHOLD_RULE
    target_sensitivity: float | None = None  # None: threshold by ``threshold_rule``
    patience: int = DEFAULT_PATIENCE
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = DEFAULT_SEED
    options: dict = field(default_factory=dict)  # the architecture builder's options
    skip_bad: bool = False
    jpeg_draft: bool = JPEG_DRAFT  # opt-in: faster decoding of large JPEGs (see above)

    def __post_init__(self):
        # Checked here, so a bad setting fails before any training, not after it.
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule {self.threshold_rule!r}: choose one of "
                             f"{', '.join(THRESHOLD_RULES)}")
        if self.target_sensitivity is not None and not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {self.target_sensitivity!r}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class CVConfig(TrainConfig):
    """A cross-validation run: a TrainConfig plus the protocol and the device choices."""

    folds: int = DEFAULT_FOLDS
    grouping: str = "patient"  # "image" lets a patient's images leak across folds
    ensemble: bool = False  # register the mean of the fold models instead of a final fit
    precision: str = "auto"  # auto | float32 | mixed
    xla: str = "auto"  # auto | on | off
