"""Fit one architecture: the shared fit step (used by ``train`` and by cross-validation)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..core.catalog import Architecture
from ..core.config import WARMUP_EPOCHS, TrainConfig
from ..data.dataset import class_weights
from ..data.preprocessing import Preprocessing
from .pipeline import build_augmentations, load_images, make_dataset


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int, epochs: int):
    """The optimizer's learning rate: a float (``constant``) or a Keras schedule (``cosine``).

    ``cosine`` rises linearly from 0 to ``config.learning_rate`` over the first
    ``WARMUP_EPOCHS`` epochs (fewer when there are few), then follows a cosine
    down to 0 at the end of ``epochs`` (``TrainConfig`` checks the name).
    """
    import keras

    if config.lr_schedule == "constant":
        return config.learning_rate
    total = max(1, steps_per_epoch * epochs)
    warmup = min(steps_per_epoch * WARMUP_EPOCHS, total // 4)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total - warmup), warmup_target=config.learning_rate,
        warmup_steps=warmup)


def refresh_batch_norm(model, images: np.ndarray, preprocessing: Preprocessing,
                       batch_size: int) -> int:
    """Re-estimate every trainable batch-norm layer's moving statistics on ``images``.

    The moving averages collected during training lag behind the weights (and
    saw augmented images); here they become the plain average of the batch
    statistics (weighted by batch size) over the given uint8 (N, H, W, 1)
    images, as inference sees them, with the weights fixed. Frozen layers
    (``trainable=False``, e.g. a frozen backbone) are left alone. Returns the
    number of layers refreshed.
    """
    import keras
    import tensorflow as tf

    layers = [la for la in model._flatten_layers()
              if isinstance(la, keras.layers.BatchNormalization) and la.trainable]
    if not layers or not len(images):
        return 0
    saved = [la.momentum for la in layers]
    try:
        for seen in range(0, len(images), batch_size):
            x = preprocessing.normalize(images[seen:seen + batch_size].astype(np.float32))
            for la in layers:  # the mean of the batch statistics, each weighted by its size
                la.momentum = seen / (seen + len(x))
            model(tf.constant(x), training=True)
    finally:
        for la, m in zip(layers, saved, strict=True):
            la.momentum = m
    return len(layers)


def compile_model(model, learning_rate, jit_compile: bool = False):
    """Compile with Adam + binary cross-entropy and the metrics early stopping reads.

    ``learning_rate`` is a float or a Keras schedule. A model that is already
    compiled keeps its optimizer and loss.
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
    schedule_epochs: int | None = None,
    callbacks=(),
    cache: str = "",
    preprocessing: Preprocessing | None = None,
    strategy=None,
    jit_compile: bool = False,
) -> FitResult:
    """Build, compile and fit a model (``config.members`` of them) on the given images.

    With validation images: early stopping on validation AUC (patience from
    the config), best weights restored. Without: exactly ``epochs`` epochs.
    The learning rate follows ``config.lr_schedule`` over ``schedule_epochs``
    (default ``config.epochs``: a final fit for the folds' median best epoch
    then follows the folds' own trajectory);
    with ``config.bn_refresh`` the batch-norm statistics are re-estimated on
    the unaugmented training images at the end (``refresh_batch_norm``).
    With ``config.members`` > 1, member i is fitted the same way from seed
    ``config.seed + i`` (its weights, shuffling and augmentation) and the
    result is one model, the mean of the members' logits (a deep ensemble:
    Lakshminarayanan et al. 2017); member 0 is the model ``members=1`` gives.

    Parameters
    ----------
    arch : the architecture, whose builder makes the model.
    config : run settings; ``config.seed`` seeds Keras, shuffling and augmentation.
    preprocessing : the input rule (default: the architecture's at ``config.image_size``).
    strategy : a ``tf.distribute`` strategy to build and train under.
    jit_compile : XLA-compile the train step.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    pre = preprocessing or Preprocessing.for_architecture(arch, config.image_size,
                                                          jpeg_draft=config.jpeg_draft)
    train_images = load_images([str(p) for p in train_paths], pre, cache)
    val_ds = None
    if val_paths is not None and len(val_paths):
        val_ds = make_dataset(val_paths, val_labels, pre, batch_size=config.batch_size, cache=cache)
    epochs = epochs or config.epochs
    schedule = (-(-len(train_paths) // config.batch_size), max(epochs, schedule_epochs or config.epochs))
    fits = [_fit_member(arch, replace(config, seed=config.seed + i), catalog, train_paths, train_labels,
                        train_images, val_ds, pre, epochs, schedule, strategy, callbacks, jit_compile)
            for i in range(config.members)]
    if len(fits) == 1:
        return fits[0]
    return _mean_of(fits, arch.name, strategy, val_ds)


def _fit_member(arch, config, catalog, train_paths, train_labels, train_images, val_ds, pre, epochs,
                schedule, strategy, callbacks, jit_compile) -> FitResult:
    """One network of ``fit``, seeded by ``config.seed``; ``schedule``: (steps per epoch, epochs)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    augs = build_augmentations(config.augment, catalog, seed=config.seed)
    train_ds = make_dataset(train_paths, train_labels, pre, batch_size=config.batch_size,
                            training=True, augmentations=augs, seed=config.seed, images=train_images)
    with strategy.scope():
        model = arch.build_model((pre.height, pre.width, pre.channels), config.options)
        compile_model(model, learning_rate_schedule(config, *schedule), jit_compile)
    cbs = list(callbacks)
    if val_ds is not None:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_auc", mode="max",
                                                 patience=config.patience,
                                                 restore_best_weights=True))
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                        class_weight=class_weights(train_labels), callbacks=cbs, verbose=0,
                        shuffle=False)  # the pipeline shuffles
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", np.arange(1, len(hist) + 1))
    best_epoch = int(hist["val_auc"].idxmax() + 1) if "val_auc" in hist else len(hist)
    if config.bn_refresh:
        with strategy.scope():
            refresh_batch_norm(model, train_images, pre, config.batch_size)
    val_prob = predict(model, val_ds) if val_ds is not None else None
    return FitResult(model=model, history=hist, best_epoch=best_epoch, val_prob=val_prob)


def _mean_of(fits: list[FitResult], name: str, strategy, val_ds) -> FitResult:
    """The members' mean (of logits) as one fitted model: its history has a ``member`` column
    (1-based), its best epoch is the members' median, its validation probabilities its own."""
    from ..models.ensemble import calibrated

    with strategy.scope():
        model = calibrated([f.model for f in fits], 1.0, name=name, member_name="member")
    history = pd.concat([f.history.assign(member=i) for i, f in enumerate(fits, start=1)],
                        ignore_index=True)
    best_epoch = int(np.median([f.best_epoch for f in fits]))
    val_prob = predict(model, val_ds) if val_ds is not None else None
    return FitResult(model=model, history=history, best_epoch=best_epoch, val_prob=val_prob)


def predict(model, dataset) -> np.ndarray:
    """Probabilities (N,) of a dataset of (images, labels) or images."""
    spec = dataset.element_spec
    images = dataset.map(lambda x, y: x) if isinstance(spec, tuple) else dataset
    return np.asarray(model.predict(images, verbose=0), dtype=np.float64).ravel()
