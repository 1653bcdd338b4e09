"""The original project's Python API, kept working on top of pneumokit.

``create_model``, ``create_gpu_optimized_model`` and
``create_optimized_transfer_learning_model`` return compiled Keras models;
``perform_optimized_cross_validation`` runs ``pneumokit.cv.run_cv`` and
returns ``(cv_results, cv_df, final_model)`` as the original did.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_FOLDS, DEFAULT_LEARNING_RATE, CVConfig
from .errors import ConfigError
from .plugins import get_catalog

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

    model_func = model_func or create_gpu_optimized_model
    run_keys = {"output", "registry", "name", "final", "progress", "resume", "echo"}
    run_kwargs = {k: options.pop(k) for k in list(options) if k in run_keys}
    probe = model_func()
    known = get_catalog().architectures.get(probe.name)
    config = CVConfig(architecture=known.name if known else "cnn_optimized", folds=n_splits,
                      epochs=epochs, batch_size=batch_size, **options)
    run_kwargs.setdefault("name", known.name if known else "model_func")
    result = run_cv(config, data_dir, build_model=model_func, **run_kwargs)
    cv_results = {
        "folds": [{"fold": f.fold, "metrics": f.metrics, "best_epoch": f.best_epoch,
                   "history": f.history} for f in result.folds],
        "mean": {k: v["mean"] for k, v in result.summary.items()},
        "std": {k: v["std"] for k, v in result.summary.items()},
        "threshold": result.threshold,
        "result": result,
    }
    return cv_results, result.table, result.final_model
