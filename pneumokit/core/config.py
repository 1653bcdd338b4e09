"""Defaults, in one place. Every command and function reads its defaults from here."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from pathlib import Path

from ..errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # pneumokit/

try:
    __version__ = _version("pneumokit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# The bundled demo set: ~200 real chest X-rays (CC BY 4.0, see demo/README.md).
DEMO_DATA_DIR = PACKAGE_DIR / "data" / "demo" / "chest_xray"

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking logits

CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # label 0, label 1 (the positive class)
SPLITS = ("train", "val", "test")
CV_SPLITS = ("train", "val")  # pooled for cross-validation; test stays aside
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".dcm")  # .dcm: DICOM, see pneumokit/data/dicom.py
# The only formats decoded (Pillow's plugin names; JPEG's also opens multi-picture
# JPEGs). Anything else is refused by name, so no other decoder (e.g. EPS, which
# runs Ghostscript) ever runs.
IMAGE_FORMATS = ("JPEG", "PNG")
# The input gate's shape checks (docs/gate.md), read from the header before any pixel is
# decoded: a chest radiograph is hundreds of pixels a side (the shared data, downscaled, is 224)
# and roughly square (the 60 originals: width/height 1.02..2.12, and one 437x144 crop at 3.03).
# Below 32 px a side nothing of the lungs is left to read; beyond 4:1 an image is a strip.
MIN_IMAGE_SIDE = 32
MAX_ASPECT_RATIO = 4.0


def shape_refusal(width: int, height: int) -> str | None:
    """Why an image of this size is not a chest radiograph to score, or None."""
    if min(width, height) < MIN_IMAGE_SIDE:
        return (f"image is {width}x{height} pixels; a chest X-ray to score is at least {MIN_IMAGE_SIDE} "
                "pixels a side")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (f"image is {width}x{height} pixels, a {max(width, height) / min(width, height):.3g}:1 strip; "
                f"a chest X-ray is at most {MAX_ASPECT_RATIO:g}:1")
    return None

DEFAULT_ARCHITECTURE = "cnn_optimized"
DEFAULT_RECIPE = "fast"  # the recipe whose settings are the defaults below (pneumokit/models/recipes.py)
DEFAULT_BATCH_SIZE = 64  # the original project's
DEFAULT_SEED = 42
DEFAULT_THRESHOLD = 0.5
INFERENCE_BATCH_SIZE = 64  # images per onnxruntime/Keras call when scoring (predict, evaluate)
DEFAULT_OPSET = 17  # ONNX opset for export

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
# pneumokit serve (docs/serve.md): where it listens, and what one request may carry
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_UPLOAD_MB = 20.0  # a request body over this is refused (413)
MAX_UPLOAD_FILES = 64  # files in one multipart request
MAX_CONCURRENT = 2  # requests decoded and scored at once per worker (each may need ~1 GB at the pixel limit)
# Request bodies held at once per worker, in MB: reserved (Content-Length, else the upload limit)
# before a body is read; a request over the budget gets 503 with Retry-After, its body unread.
MAX_PENDING_MB = 100.0
# Seconds a client has to send its request headers (from connecting, or from the last response
# on a kept-alive connection) and, once they are in, its whole body; then it is dropped
REQUEST_TIMEOUT = 30.0
EXPLAIN_METHODS = ("auto", "cam", "grad-cam")  # pneumokit explain --method (docs/explain.md)
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
MAX_EPOCHS = 100_000
MAX_IMAGE_SIZE = 4096  # pixels per side, as for an architecture's image_size
# Keras's and NumPy's seeds are unsigned 32-bit; derived seeds (seed + fold, + layer) stay below.
MAX_SEED = 2**31 - 1
MAX_MEMBERS = 20  # networks in one deep ensemble (``members``)
GROUPINGS = ("patient", "image")  # "image" lets a patient's images leak across folds
PRECISIONS = ("auto", "float32", "mixed")  # auto: mixed_float16 on GPUs with compute capability >= 7.0
XLA_MODES = ("auto", "on", "off")  # auto: on with a GPU, off on CPU (where it is ~10x slower)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def is_int(value, low: int, high: float = math.inf) -> bool:
    """An integer (NumPy's too, not a bool) within [low, high]."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= int(value) <= high


def is_number(value) -> bool:
    """A finite real number (NumPy's too, not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _as_python(config) -> None:
    """NumPy integers and floats given as settings become Python ones (JSON, equality)."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
            object.__setattr__(config, f.name, int(value))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool | int | float):
            object.__setattr__(config, f.name, float(value))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides one training run. Defaults live here only."""

    architecture: str = DEFAULT_ARCHITECTURE
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    image_size: int | None = None  # None: the architecture's default
    members: int = 1  # >1: a deep ensemble, networks from seeds seed, seed+1, ... whose logits are averaged
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
    recipe: str = DEFAULT_RECIPE  # the recipe these settings came from (a label; --recipe)

    def __post_init__(self):
        # Checked here, so a bad setting fails before any training, not after it.
        _as_python(self)
        _check(isinstance(self.recipe, str) and self.recipe.isidentifier(),
               f"recipe must be a recipe's name, got {self.recipe!r}")
        _check(self.lr_schedule in LR_SCHEDULES,
               f"lr_schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
        _check(self.threshold_rule in THRESHOLD_RULES,
               f"threshold_rule {self.threshold_rule!r}: choose one of {', '.join(THRESHOLD_RULES)}")
        _check(self.target_sensitivity is None or (is_number(self.target_sensitivity)
                                                   and 0.0 < self.target_sensitivity <= 1.0),
               f"target_sensitivity must be in (0, 1], got {self.target_sensitivity!r}")
        _check(is_number(self.learning_rate) and 0 < self.learning_rate <= 1,
               f"learning_rate must be a number in (0, 1], got {self.learning_rate!r}")
        limits = (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, 2**20), ("patience", 0, MAX_EPOCHS),
                  ("members", 1, MAX_MEMBERS))
        for key, low, high in limits:
            _check(is_int(getattr(self, key), low, high), f"{key} must be an integer in {low}..{high}, "
                                                          f"got {getattr(self, key)!r}")
        _check(self.image_size is None or is_int(self.image_size, 8, MAX_IMAGE_SIZE),
               f"image_size must be an integer in 8..{MAX_IMAGE_SIZE} (or None), got {self.image_size!r}")
        _check(is_number(self.val_fraction) and 0.0 < self.val_fraction < 0.5,
               f"val_fraction must be in (0, 0.5), got {self.val_fraction!r}")
        _check(is_int(self.seed, 0, MAX_SEED),
               f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}")
        _check(isinstance(self.options, dict), f"options must be a dict, got {self.options!r}")

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

    def __post_init__(self):
        super().__post_init__()
        _check(is_int(self.folds, 2, 1000), f"folds must be an integer in 2..1000, got {self.folds!r}")
        _check(self.grouping in GROUPINGS,
               f"grouping {self.grouping!r}: choose one of {', '.join(GROUPINGS)}")
        _check(self.precision in PRECISIONS,
               f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        _check(self.xla in XLA_MODES, f"xla {self.xla!r}: choose one of {', '.join(XLA_MODES)}")


# pneumokit adapt (docs/site.md): fine-tuning a registered model on a site's labelled images.
# Chosen with bench/site.py (docs/performance.md, "Adapting to a site").
ADAPT_EPOCHS = 5
ADAPT_LEARNING_RATE = 1e-4
ADAPT_BATCH_SIZE = 16
ADAPT_FOLDS = 5  # cross-fitting: each site patient is scored by a model not tuned on them
RECALIBRATIONS = ("temperature", "platt")


@dataclass(frozen=True)
class AdaptConfig:
    """How ``pneumokit adapt`` fine-tunes. ``augment=None`` uses the parent version's augmentation."""

    epochs: int = ADAPT_EPOCHS
    learning_rate: float = ADAPT_LEARNING_RATE
    batch_size: int = ADAPT_BATCH_SIZE
    folds: int = ADAPT_FOLDS
    # False: batch-norm statistics follow the site's images too (bench/site.py: on a shifted stand-in
    # site +0.021-0.030 AUC against +0.009-0.022 with them frozen; nothing lost on an unshifted one)
    freeze_batch_norm: bool = False
    # After fine-tuning, re-estimate batch-norm statistics on the unaugmented site images (as training
    # does), and recalibrate by Platt scaling, which also moves where the 0.5 decision lies. On a shifted
    # stand-in site (524 images): accuracy 0.849 -> 0.868 without both, 0.918 with (bench/site.py).
    bn_refresh: bool = True
    recalibration: str = "platt"  # or "temperature": the spread only, 0.5 stays where it was
    augment: str | None = None
    seed: int = DEFAULT_SEED
    skip_bad: bool = False

    def __post_init__(self):
        _as_python(self)
        _check(self.recalibration in RECALIBRATIONS,
               f"recalibration {self.recalibration!r}: choose one of {', '.join(RECALIBRATIONS)}")
        _check(is_number(self.learning_rate) and 0 < self.learning_rate <= 1,
               f"learning_rate must be a number in (0, 1], got {self.learning_rate!r}")
        for key, low, high in (("epochs", 1, 1000), ("batch_size", 1, 4096), ("folds", 2, 20)):
            _check(is_int(getattr(self, key), low, high), f"{key} must be an integer in {low}..{high}, "
                                                          f"got {getattr(self, key)!r}")
        _check(is_int(self.seed, 0, MAX_SEED), f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)
