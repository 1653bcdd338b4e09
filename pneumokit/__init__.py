"""pneumokit: train, cross-validate, version, export and serve chest X-ray pneumonia classifiers.

Importing pneumokit is cheap: TensorFlow is imported only by the functions that need it.
"""

import importlib.abc
import importlib.util
import os
import sys

# TensorFlow's C++ INFO/WARNING logs (oneDNN notices, grappler cost-model
# noise) drown real output; errors still show. Set the variable to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .core.backend import check_backend  # noqa: E402
from .core.catalog import Architecture, Augmentation, CatalogError, Recipe  # noqa: E402
from .core.config import __version__  # noqa: E402
from .core.plugins import get_catalog, load_plugins  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402

check_backend()


# The modules' paths before the house was divided by stage (docs/architecture.md): `import
# pneumokit.gate` and the like keep working, for plugins and scripts written against them, and
# give the module at its new path. New code uses the new paths.
_MOVED = {
    "config": "core.config", "files": "core.files", "plugins": "core.plugins", "catalog": "core.catalog",
    "backend": "core.backend", "progress": "core.progress",
    "manifest": "data.manifest", "splits": "data.splits", "decoding": "data.decoding", "dicom": "data.dicom",
    "preprocessing": "data.preprocessing", "contract": "data.contract", "stress": "data.stress",
    "architectures": "models.architectures", "architectures.cnn": "models.architectures.cnn",
    "architectures.heads": "models.architectures.heads",
    "architectures.transfer": "models.architectures.transfer",
    "augmentations": "models.augmentations", "augmentations.basic": "models.augmentations.basic",
    "augmentations.layers": "models.augmentations.layers", "recipes": "models.recipes",
    "ensemble": "models.ensemble", "heatmap": "models.heatmap", "scaffold": "models.scaffold",
    "card": "registry.card", "provenance": "registry.provenance", "golden": "registry.golden",
    "pipeline": "training.pipeline", "fused": "training.fused", "device": "training.device",
    "fitting": "training.fitting", "calibration": "training.calibration", "metrics": "training.metrics",
    "plots": "training.plots", "intervals": "training.intervals", "gate": "training.gate",
    "train": "training.train", "cv": "training.cv", "compat": "training.compat",
    "export": "inference.export", "quantize": "inference.quantize", "runtime": "inference.runtime",
    "verify": "inference.verify", "evaluate": "inference.evaluate", "adapt": "inference.adapt",
    "explain": "inference.explain", "overlay": "inference.overlay",
    "dicom_results": "inference.dicom_results", "report": "inference.report", "serve": "inference.serve",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``pneumokit.OLD`` imports as ``pneumokit.NEW`` (the same module object, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        if fullname.startswith(__name__ + ".") and old in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        new = importlib.import_module(f"{__name__}.{_MOVED[module.__name__.removeprefix(__name__ + '.')]}")
        sys.modules[module.__name__] = new  # the import system returns what sys.modules holds


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


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
