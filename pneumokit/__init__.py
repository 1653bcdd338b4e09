"""pneumokit: train, cross-validate, version, export and serve chest X-ray pneumonia classifiers.

Importing pneumokit is cheap: TensorFlow is imported only by the functions that need it.
"""

import os

# TensorFlow's C++ INFO/WARNING logs (oneDNN notices, grappler cost-model
# noise) drown real output; errors still show. Set the variable to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from importlib.metadata import PackageNotFoundError  # noqa: E402
from importlib.metadata import version as _version  # noqa: E402

from .backend import check_backend  # noqa: E402
from .catalog import Architecture, Augmentation, CatalogError, Recipe  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .plugins import get_catalog, load_plugins  # noqa: E402

check_backend()

try:
    __version__ = _version("pneumokit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_LAZY = {
    "prepare_cv_data": "data",
    "perform_optimized_cross_validation": "compat",
    "create_model": "compat",
    "create_gpu_optimized_model": "compat",
    "create_optimized_transfer_learning_model": "compat",
    "run_cv": "cv",
    "train": "train",
    "adapt": "adapt",
    "evaluate": "evaluate",
    "Manifest": "manifest",
    "recipe_config": "recipes",
    "Registry": "registry",
    "Predictor": "runtime",
    "write_dicom_results": "dicom_results",
    "SeededAugmentation": "augmentations.layers",
    "GeometricAugmentation": "augmentations.layers",
    "PointwiseAugmentation": "augmentations.layers",
    "ImageAugmentation": "augmentations.layers",
}


def __getattr__(name):
    """The original project's names and the main entry points, imported on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pneumokit' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "Architecture",
    "Augmentation",
    "CatalogError",
    "Recipe",
    "__version__",
    "get_catalog",
    "hookimpl",
    "load_plugins",
]
