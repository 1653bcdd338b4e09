"""Fit one architecture: the shared fit step (used by ``train`` and by cross-validation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .catalog import Architecture
from .config import TrainConfig
from .data import class_weights
from .pipeline import build_augmentations, make_dataset
from .preprocessing import Preprocessing


def compile_model(model, learning_rate: float, jit_compile: bool = False):
    """Compile with Adam + binary cross-entropy and the metrics early stopping reads.

    A model that is already compiled keeps its optimizer and loss.
    """
    import keras

    optimizer = getattr(model, "optimizer", None) or keras.optimizers.Adam(learning_rate)
    loss = getattr(model, "loss", None) or "binary_crossentropy"
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ],
        jit_compile=jit_compile,
    )
    return model


@dataclass
class FitResult:
    model: object
    history: pd.DataFrame  # one row per epoch
    best_epoch: int  # 1-based epoch whose weights were kept
    val_prob: np.ndarray | None  # probabilities on the validation images


def fit(
    arch: Architecture,
    config: TrainConfig,
    catalog,
    train_paths,
    train_labels,
    val_paths=None,
    val_labels=None,
    *,
    epochs: int | None = None,
    callbacks=(),
    cache: str = "",
    preprocessing: Preprocessing | None = None,
    build_model: Callable[[], object] | None = None,
    strategy=None,
    jit_compile: bool = False,
) -> FitResult:
    """Build, compile and fit a model on the given images.

    With validation images: early stopping on validation AUC (patience from
    the config), best weights restored. Without: exactly ``epochs`` epochs.

    Parameters
    ----------
    arch : the architecture (its builder, unless ``build_model`` is given).
    config : run settings; ``config.seed`` seeds Keras, shuffling and augmentation.
    preprocessing : the input rule (default: the architecture's at ``config.image_size``).
    build_model : a zero-argument callable returning a Keras model (compiled or not),
        used instead of ``arch.build`` — the original project's ``model_func``.
    strategy : a ``tf.distribute`` strategy to build and train under.
    jit_compile : XLA-compile the train step.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    pre = preprocessing or Preprocessing.for_architecture(arch, config.image_size)
    augs = build_augmentations(config.augment, catalog, seed=config.seed)
    train_ds = make_dataset(train_paths, train_labels, pre, batch_size=config.batch_size,
                            training=True, augmentations=augs, seed=config.seed, cache=cache)
    with (strategy or tf.distribute.get_strategy()).scope():
        if build_model is not None:
            model = build_model()
        else:
            model = arch.build((pre.height, pre.width, pre.channels), **config.options)
        compile_model(model, config.learning_rate, jit_compile)
    cbs = list(callbacks)
    val_ds = None
    if val_paths is not None and len(val_paths):
        val_ds = make_dataset(val_paths, val_labels, pre, batch_size=config.batch_size, cache=cache)
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_auc", mode="max",
                                                 patience=config.patience,
                                                 restore_best_weights=True))
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs or config.epochs,
                        class_weight=class_weights(train_labels), callbacks=cbs, verbose=0,
                        shuffle=False)  # the pipeline shuffles
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", np.arange(1, len(hist) + 1))
    best_epoch = int(hist["val_auc"].idxmax() + 1) if "val_auc" in hist else len(hist)
    val_prob = None
    if val_ds is not None:
        val_prob = predict(model, val_ds)
    return FitResult(model=model, history=hist, best_epoch=best_epoch, val_prob=val_prob)


def predict(model, dataset) -> np.ndarray:
    """Probabilities (N,) of a dataset of (images, labels) or images."""
    spec = dataset.element_spec
    images = dataset.map(lambda x, y: x) if isinstance(spec, tuple) else dataset
    return np.asarray(model.predict(images, verbose=0), dtype=np.float64).ravel()
