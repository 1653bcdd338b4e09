"""The modules' paths before the house was divided by stage (docs/architecture.md).

``import pneumokit.gate`` and the like keep working, for plugins and scripts written against them,
and give the module at its new path: the very same object, so a patch through the old path
patches the real module. ``pneumokit.data`` and ``pneumokit.registry`` were modules and are now
packages: ``names_of`` gives them the old module's names. New code uses the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

PACKAGE = "pneumokit"

MOVED = {
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
    """``pneumokit.OLD`` imports as ``pneumokit.NEW``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.removeprefix(PACKAGE + ".") in MOVED and fullname.startswith(PACKAGE + "."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        new = importlib.import_module(f"{PACKAGE}.{MOVED[module.__name__.removeprefix(PACKAGE + '.')]}")
        sys.modules[module.__name__] = new  # the import system returns what sys.modules holds


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (before the path finder, which would load a second
    copy of a moved module under its old name), once."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())


def names_of(package: str, module: str):
    """A module ``__getattr__`` for ``package`` that gives a name it lacks from ``package.module``
    (imported on first use, without going through the package's own attributes)."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__
