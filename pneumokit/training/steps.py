"""The two steps ``train`` and ``cv`` share.

``prepare``: everything that can fail before the first epoch is checked first (the
architecture and its options, the augmentation spec, the data, the model name and the
registry), so a mistake costs seconds, not hours. ``finish``: the trained network becomes the
registered version: calibrated inside the graph, its input gate fitted (docs/gate.md), registered
with its artifacts, its training images' sha256 and its metadata. A new step a version needs
goes here once, not into each command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.catalog import Architecture, Catalog
from ..core.config import CV_SPLITS, TrainConfig
from ..core.layout import GATE_FILE, TRAINING_IMAGES
from ..core.plugins import get_catalog
from ..data.dataset import scan
from ..data.index import Scan
from ..data.preprocessing import Preprocessing
from ..registry.provenance import training_images, unparsed_warning
from ..registry.store import ModelVersion, Registry, validate_name
from . import gate
from .pipeline import build_augmentations


@dataclass
class Prepared:
    """What a run starts from, checked: its settings, architecture, name, registry and data."""

    config: TrainConfig
    catalog: Catalog
    arch: Architecture
    name: str
    registry: Registry
    scan: Scan
    index: pd.DataFrame  # the usable images


def prepare(config: TrainConfig, data_dir, *, registry: Registry | None, name: str | None,
            architecture: Architecture | None = None, register: bool = True,
            echo: Callable[[str], None] = print) -> Prepared:
    """Check the settings, the data (``data_dir``: a folder, a manifest or None for the demo set)
    and, when the run will ``register``, the registry; tell ``echo`` about images without a
    patient id. ``DatasetError``, ``ConfigError`` or ``RegistryError`` before any training."""
    catalog = get_catalog()
    arch = architecture or catalog.architecture(config.architecture)
    name = validate_name(name or arch.name)
    arch.check_options(config.options)
    build_augmentations(config.augment, catalog, config.seed)  # a bad spec fails now, not later
    result = scan(data_dir, splits=CV_SPLITS)
    index = result.require_usable(skip_bad=config.skip_bad)
    registry = registry or Registry()
    if register:
        registry.check_writable(name)
    notice = unparsed_warning(index)
    if notice:
        echo(notice)
    return Prepared(config, catalog, arch, name, registry, result, index)


def finish(prepared: Prepared, model, pre: Preprocessing, meta: dict, gate_split: tuple, held_out: str,
           artifacts: dict | Callable[[Path], dict]) -> ModelVersion:
    """Register ``model`` (already calibrated) as the next version of ``prepared.name``: its input
    gate fitted on ``gate_split``'s first paths with thresholds from its second (``held_out``
    says which images those are), then saved with ``artifacts`` (a dict, or a function that
    writes them into a staging folder in the registry and returns the dict)."""
    config, registry = prepared.config, prepared.registry
    fit_paths, held_paths = gate_split
    gate_file, meta["gate"] = gate.fit_on_files(model, pre, fit_paths, held_paths, augment=config.augment,
                                                seed=config.seed, batch_size=config.batch_size,
                                                held_out=held_out)
    with registry.staging(prepared.name) as tmp:
        files = artifacts(Path(tmp)) if callable(artifacts) else dict(artifacts)
        files |= {TRAINING_IMAGES: training_images(prepared.index), GATE_FILE: gate_file}
        return registry.save(prepared.name, model, meta, artifacts=files)
