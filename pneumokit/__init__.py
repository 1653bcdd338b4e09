"""pneumokit: train, cross-validate, version, export and serve chest X-ray pneumonia classifiers.

Importing pneumokit is cheap: TensorFlow is imported only by the functions that need it.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .backend import check_backend
from .catalog import Architecture, Augmentation, CatalogError
from .hookspecs import hookimpl
from .plugins import get_catalog, load_plugins

check_backend()

try:
    __version__ = _version("pneumokit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "Architecture",
    "Augmentation",
    "CatalogError",
    "__version__",
    "get_catalog",
    "hookimpl",
    "load_plugins",
]
