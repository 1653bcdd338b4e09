"""The original project's Python API, kept working on top of pneumokit.

``create_model``, ``create_gpu_optimized_model`` and
``create_optimized_transfer_learning_model`` return compiled Keras models;
``perform_optimized_cross_validation`` runs ``pneumokit.training.cv.run_cv`` and
returns ``(cv_results, cv_df, final_model)`` as the original did.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

from ..core.catalog import Architecture
from ..core.config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_FOLDS, DEFAULT_LEARNING_RATE, CVConfig
from ..core.plugins import get_catalog
from ..errors import ConfigError

_TRANSFER = {"efficientnetb0": "efficientnet_b0", "mobilenetv2": "mobilenet_v2", "vgg16": "vgg16"}


def _built(name: str, input_shape=None, **options):
    from .fitting import compile_model

    arch = get_catalog().architecture(name)
    shape = tuple(input_shape) if input_shape else (arch.image_size, arch.image_size, arch.channels)
    return compile_model(arch.build_model(shape, options), DEFAULT_LEARNING_RATE)


def create_model(input_shape=None):
    """The original custom CNN (``cnn``), compiled. Default input: 128x128x1."""
    return _built("cnn", input_shape)


def create_gpu_optimized_model(input_shape=None):
    """The batch-normalised CNN with global pooling (``cnn_optimized``), compiled."""
    return _built("cnn_optimized", input_shape)


def create_optimized_transfer_learning_model(base_model_name: str = "EfficientNetB0", input_shape=None,
                                             **options):
    """A keras.applications backbone with a pneumonia head, compiled.

    ``base_model_name``: ``"EfficientNetB0"``, ``"MobileNetV2"`` or ``"VGG16"``.
    ``options``: ``weights`` ("imagenet", "none" or a file), ``freeze_backbone``,
    ``fine_tune_layers``, ``dropout``.
    """
    key = base_model_name.lower().replace("_", "").replace("-", "")
    if key not in _TRANSFER:
        raise ConfigError(f"unknown base model {base_model_name!r}; choose EfficientNetB0, "
                         "MobileNetV2 or VGG16")
    return _built(_TRANSFER[key], input_shape, **options)


def model_func_architecture(model_func: Callable[[], object]) -> Architecture:
    """An ad-hoc ``Architecture`` whose builder calls ``model_func`` (the original API's
    zero-argument model builder), so the rest of pneumokit sees an architecture like any other.

    Named after the catalog's architecture when the model carries one of its names (the
    original builders do), with that architecture's preprocessing; otherwise ``model_func``,
    with inputs scaled to [0, 1]. The input size is the model's own. A ``model_func`` that
    hands back a model it returned before is refused: its weights would carry from fold to
    fold (held-out images leaking into later folds) and into the final model.
    """
    probe: Any = model_func()
    _, height, width, channels = probe.input_shape
    if height != width:
        raise ConfigError(f"model_func must build a square input, got {height}x{width}")
    known = get_catalog().architectures.get(probe.name)
    seen = weakref.WeakSet([probe])  # weak: models of earlier folds can still be freed

    def build(input_shape, **_options):
        model = model_func()
        if model in seen:
            raise ConfigError("model_func returned a model it had returned before: it must build a "
                              "new model on every call (e.g. lambda: create_gpu_optimized_model())")
        seen.add(model)
        if tuple(model.input_shape[1:]) != tuple(input_shape):
            raise ConfigError(f"model_func built input {model.input_shape[1:]}, not {tuple(input_shape)}")
        return model

    return Architecture(name=known.name if known else "model_func", build=build, image_size=int(height),
                        channels=int(channels), preprocessing=known.preprocessing if known else "unit",
                        description=f"model_func {getattr(model_func, '__name__', 'callable')}",
                        plugin=known.plugin if known else "model_func",
                        plugin_version=known.plugin_version if known else "")


def perform_optimized_cross_validation(
    n_splits: int = DEFAULT_FOLDS,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    model_func: Callable[[], object] | None = None,
    data_dir: str | os.PathLike | None = None,
    **options,
):
    """Cross-validate like the original project, on the leak-free protocol.

    Parameters
    ----------
    n_splits, epochs, batch_size : as in the original.
    model_func : zero-argument callable returning a Keras model (compiled or
        not); default ``create_gpu_optimized_model``.
    data_dir : dataset folder; None is the bundled demo set.
    options : other ``CVConfig`` fields (``seed``, ``augment``, ``grouping``, ...)
        and ``run_cv`` keywords (``output``, ``registry``, ``name``, ``final``).

    Returns
    -------
    (cv_results, cv_df, final_model): ``cv_results`` is a dict with per-fold
    metrics and histories (and the full ``CVResult`` under ``"result"``),
    ``cv_df`` the per-fold table with mean and std rows, ``final_model`` the
    compiled Keras model trained on all the data, its output calibrated (the
    temperature is a ``Rescaling`` layer inside it; plain Keras reloads a saved
    copy), or None with ``final=False``.
    """
    from .cv import run_cv

    run_keys = {"output", "registry", "name", "final", "progress", "resume", "echo"}
    run_kwargs = {k: options.pop(k) for k in list(options) if k in run_keys}
    model_func = model_func or create_gpu_optimized_model
    arch = model_func_architecture(model_func)
    config = CVConfig(architecture=arch.name, folds=n_splits, epochs=epochs, batch_size=batch_size, **options)
    run_kwargs.setdefault("name", arch.name)
    result = run_cv(config, data_dir, architecture=arch,
                    metadata={"model_func": getattr(model_func, "__name__", "callable")}, **run_kwargs)
    cv_results = {
        "folds": [{"fold": f.fold, "metrics": f.metrics, "best_epoch": f.best_epoch,
                   "history": f.history} for f in result.folds],
        "mean": {k: v["mean"] for k, v in result.summary.items()},
        "std": {k: v["std"] for k, v in result.summary.items()},
        "threshold": result.threshold,
        "result": result,
    }
    return cv_results, result.table, result.final_model
