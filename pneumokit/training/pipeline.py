"""The tf.data input pipeline: parallel decode into a uint8 cache, then shuffle, augment, batch, prefetch."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.catalog import BUILTIN_PLUGIN, Catalog
from ..data.decoding import decode_all
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError, PluginError, PneumokitError, one_line
from .fused import FusedAugmentation, layer_seeds


def parse_augmentations(spec: str | Sequence[str] | None) -> list[tuple[str, dict[str, Any]]]:
    """Parse ``"flip,rotate:degrees=10,crop:scale=0.35-1,ratio=0.75-1.33"`` into ``[(name, params), ...]``.

    Items are comma-separated; each is a name, then ``:key=value`` parameters.
    A comma-separated ``key=value`` with no name before it belongs to the item
    before it (``crop:scale=0.35-1,ratio=0.75-1.33`` is one crop).
    """
    if not spec:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    parsed: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        name, *pairs = item.strip().split(":")
        if "=" in name:  # a parameter of the previous item
            if not parsed:
                raise ConfigError(f"augmentation parameter {item!r} comes before any augmentation name")
            pairs, params = [name, *pairs], parsed[-1][1]
        else:
            params = {}
            parsed.append((name.strip(), params))
        for pair in filter(None, pairs):
            key, sep, value = pair.partition("=")
            if not sep:
                raise ConfigError(f"augmentation parameter {pair!r} in {item!r}: expected key=value")
            params[key.strip()] = _number(value.strip())
    return parsed


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def build_augmentations(spec, catalog: Catalog, seed: int | None = None) -> list:
    """Keras layers for an augmentation spec, each seeded from ``seed``."""
    layers = []
    for i, (name, params) in enumerate(parse_augmentations(spec)):
        aug = catalog.augmentation(name)
        kwargs = {**aug.params, **params}
        if seed is not None and _accepts(aug.build, "seed"):
            kwargs.setdefault("seed", seed + i)
        try:
            layers.append(aug.build(**kwargs))
        except (PneumokitError, KeyboardInterrupt, MemoryError):
            raise
        except TypeError as exc:
            raise ConfigError(
                f"augmentation {name!r}: {exc}; its parameters are {dict(aug.params)}"
            ) from exc
        except BaseException as exc:  # a plugin's failure, even SystemExit, is named
            if aug.plugin in ("", BUILTIN_PLUGIN):
                raise  # pneumokit's own: a bug, with its traceback
            raise PluginError(f"augmentation {name!r} (plugin {aug.plugin or '?'}) failed to build "
                              f"with {params}: {type(exc).__name__}: {one_line(exc)}"
                              ) from exc
    return layers


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _takes_seed(layer) -> bool:
    """Whether a layer's ``call`` accepts a per-call ``seed`` (stateless augmentation)."""
    return _accepts(layer.call, "seed")


def _cache_file(cache_dir: str, paths: Sequence[str], pre: Preprocessing) -> Path:
    key = hashlib.sha256(json.dumps(pre.to_dict(), sort_keys=True).encode())
    for p in paths:
        st = os.stat(p)
        key.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"pneumokit-{key.hexdigest()[:24]}.npy"


def load_images(paths: Sequence[str], pre: Preprocessing, cache: str = "") -> np.ndarray:
    """Decoded uint8 (N, H, W, 1) images: decoded now (``cache=""``) or from a file cache.

    With ``cache=DIR`` the array is written once to ``DIR/pneumokit-<key>.npy``
    (the key covers the preprocessing and each file's path, size and mtime)
    and memory-mapped on later runs, so it need not fit in memory.
    """
    if not cache:
        return decode_all(paths, pre)
    target = _cache_file(cache, paths, pre)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        images = decode_all(paths, pre)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, target)  # atomic: a crash never leaves a partial cache
    return np.load(target, mmap_mode="r")


def _decoded(paths: list[str], preprocessing: Preprocessing, cache: str, images) -> np.ndarray:
    """The uint8 (N, H, W, 1) cache: ``images`` checked against the rule, or ``paths`` decoded."""
    if not paths:
        raise ConfigError("no images to build a dataset from")
    cached = load_images(paths, preprocessing, cache) if images is None else images
    height, width = preprocessing.height, preprocessing.width
    if cached.dtype != np.uint8 or cached.shape[1:] != (height, width, 1) or len(cached) != len(paths):
        raise ConfigError(f"images: expected uint8 ({len(paths)}, {height}, {width}, 1) decoded by the "
                         f"preprocessing, got {cached.dtype} {tuple(cached.shape)}")
    return cached


def _to_input(cached: np.ndarray, layers: list, seedable: list[bool], preprocessing: Preprocessing):
    """``(indices, batch_seed) -> model input``: fused when the layers allow it, else layer by layer.

    Without augmentation, TensorFlow's cast and normalise are faster than a lookup
    table (measured at 224 px), so only augmented batches go through OpenCV.
    """
    import tensorflow as tf

    height, width = preprocessing.height, preprocessing.width
    if layers and FusedAugmentation.supports(layers):
        fused = FusedAugmentation(layers, preprocessing)

        # Fast path: the built-ins' random draws in the graph, the pixels in one
        # OpenCV pass per image (see fused.py).
        def fused_input(idx, batch_seed):
            maps, params, image_params = fused.draw(tf.size(idx), height, width, batch_seed)
            x = tf.numpy_function(lambda i, m, p, q: fused.apply(cached, i, m, p, q),
                                  [idx, maps, params, image_params], tf.float32, stateful=False)
            return tf.ensure_shape(x, (None, height, width, preprocessing.channels))
        return fused_input

    def layered_input(idx, batch_seed):
        x = tf.numpy_function(lambda i: np.ascontiguousarray(cached[i]), [idx], tf.uint8, stateful=False)
        x = tf.cast(tf.ensure_shape(x, (None, height, width, 1)), tf.float32)
        seeds = layer_seeds(batch_seed, len(layers)) if layers else []
        for k, layer in enumerate(layers):
            x = layer(x, training=True, seed=seeds[k]) if seedable[k] else layer(x, training=True)
        return preprocessing.normalize(x)
    return layered_input


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | None,
    preprocessing: Preprocessing,
    *,
    batch_size: int,
    training: bool = False,
    augmentations: Sequence = (),
    seed: int | None = None,
    cache: str = "",
    images: np.ndarray | None = None,
    drop_remainder: bool = False,
):
    """Build the input pipeline for a list of image files.

    Every file is decoded once (threads, see ``decoding.decode_all``) into a
    uint8 cache; each epoch then shuffles indices, gathers batches from the
    cache, augments, normalises and prefetches, with AUTOTUNE. Built-in
    augmentations run fused, one OpenCV pass per image (``fused.py``); a list
    with any other layer runs layer by layer in TensorFlow. A file
    that cannot be decoded stops here, before any training.

    Parameters
    ----------
    paths, labels : image files and their 0/1 labels (labels may be None for inference).
    preprocessing : the decode/resize/normalise rule (``Preprocessing``).
    batch_size : images per batch.
    training : shuffle every epoch and apply ``augmentations``.
    augmentations : Keras layers (see ``build_augmentations``), applied after the cache.
    seed : makes shuffling and augmentation repeatable.
    cache : ``""`` keeps decoded uint8 images in memory; a folder keeps them in
        a memory-mapped file there, reused by later runs.
    images : already decoded uint8 images for ``paths`` (skips decoding).

    Returns
    -------
    A ``tf.data.Dataset`` of ``(images, labels)`` batches (or images alone
    when ``labels`` is None): float32 (B, H, W, C) model input and float32 (B,).
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    paths = [str(p) for p in paths]
    cached = _decoded(paths, preprocessing, cache, images)
    layers = list(augmentations) if training else []
    augment = bool(layers)
    seedable = [_takes_seed(layer) for layer in layers]
    to_input = _to_input(cached, layers, seedable, preprocessing)

    # Seedable layers get a per-batch seed from a seeded stream, so batches can
    # be augmented in parallel and still repeat exactly. Layers that keep their
    # own RNG state must see the batches one at a time for that.
    parallel = None if (seed is not None and not all(seedable)) else autotune
    ds = tf.data.Dataset.range(len(paths))
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
    else:
        ds = ds.map(lambda i: (i, tf.zeros([2], tf.int64)))
    if labels is None:
        ds = ds.map(to_input, num_parallel_calls=parallel)
    else:
        y = tf.constant(np.asarray(labels, dtype=np.float32))
        ds = ds.map(lambda i, s: (to_input(i, s), tf.gather(y, i)), num_parallel_calls=parallel)
    return ds.prefetch(autotune)
