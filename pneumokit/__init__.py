"""pneumokit: train, cross-validate, version, export and serve chest X-ray pneumonia classifiers.

Importing pneumokit is cheap: TensorFlow is imported only by the functions that need it.
"""

import os

# TensorFlow's C++ INFO/WARNING logs (oneDNN notices, grappler cost-model
# noise) drown real output; errors still show. Set the variable to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .core import moved  # noqa: E402
from .core.backend import check_backend  # noqa: E402
from .core.catalog import Architecture, Augmentation, CatalogError, Recipe  # noqa: E402
from .core.config import __version__  # noqa: E402
from .core.plugins import get_catalog, load_plugins  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402

check_backend()

moved.install()  # the modules' paths before the stages keep working (pneumokit.core.moved)

_LAZY = {
    "prepare_cv_data": "data.dataset",
    "perform_optimized_cross_validation": "training.compat",
    "create_model": "training.compat",
    "create_gpu_optimized_model": "training.compat",
    "create_optimized_transfer_learning_model": "training.compat",
    "run_cv": "training.cv",
    "train": "training.train",
    "adapt": "inference.adapt",
    "evaluate": "inference.evaluate",
    "Manifest": "data.manifest",
    "recipe_config": "models.recipes",
    "Registry": "registry.store",
    "Predictor": "inference.runtime",
    "predict": "inference.predict",
    "write_dicom_results": "inference.dicom_results",
    "SeededAugmentation": "models.augmentations.layers",
    "GeometricAugmentation": "models.augmentations.layers",
    "PointwiseAugmentation": "models.augmentations.layers",
    "ImageAugmentation": "models.augmentations.layers",
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
