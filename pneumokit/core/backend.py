"""Checks that a compute backend (TensorFlow + onnxruntime) is installed, and only one."""

from __future__ import annotations

import importlib.util
import warnings
from importlib import metadata

from ..errors import BackendMissingError  # noqa: F401  (re-exported)

INSTALL_HINT = (
    "install a backend extra: pip install 'pneumokit[cpu]' (TensorFlow CPU + onnxruntime) "
    "or pip install 'pneumokit[gpu]' (TensorFlow with CUDA + onnxruntime-gpu)"
)


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def check_backend(find_spec=importlib.util.find_spec, installed=_installed) -> None:
    """Raise ``BackendMissingError`` naming the extra to install when a backend is absent.

    Warn when onnxruntime and onnxruntime-gpu are installed together: they
    overwrite each other's files and the result is unpredictable.
    """
    missing = [name for name in ("tensorflow", "onnxruntime") if find_spec(name) is None]
    if missing:
        raise BackendMissingError(f"pneumokit needs {' and '.join(missing)}: {INSTALL_HINT}")
    if installed("onnxruntime") and installed("onnxruntime-gpu"):
        warnings.warn(
            "both onnxruntime and onnxruntime-gpu are installed; they overwrite each other. "
            "Keep one: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install 'pneumokit[cpu]' (or [gpu])",
            RuntimeWarning,
            stacklevel=2,
        )
