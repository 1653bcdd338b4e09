"""Leak-free splits: stratified by label, grouped by patient (and by identical content)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..core.config import GROUPINGS
from ..errors import ConfigError


def split_groups(index: pd.DataFrame) -> np.ndarray:
    """One group id per row: rows of the same patient, or byte-identical rows, share a group.

    Identical files filed under two patient ids would otherwise leak across a
    split, so patients linked by a shared sha256 are merged (union-find).
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, patients in index.groupby("sha256")["patient"]:
        first, *rest = patients.tolist()
        for other in rest:
            parent[find(other)] = find(first)
    roots = [find(p) for p in index["patient"]]
    return pd.factorize(pd.Series(roots))[0]


def kfold(index: pd.DataFrame, n_splits: int, seed: int, grouping: str = "patient") -> np.ndarray:
    """Fold number (0..n_splits-1) of every row: stratified, grouped unless ``grouping="image"``."""
    if grouping not in GROUPINGS:
        raise ConfigError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    labels = index["label"].to_numpy()
    if n_splits < 2:
        raise ConfigError(f"need at least 2 folds, got {n_splits}")
    minority = int(np.bincount(labels, minlength=2).min())
    if minority < n_splits:
        raise ConfigError(f"{n_splits} folds need at least {n_splits} images of each class; "
                         f"the smaller class has {minority}")
    if grouping == "patient":
        groups = split_groups(index)
        per_class = [len(np.unique(groups[labels == c])) for c in (0, 1)]
        if min(per_class) < n_splits:
            raise ConfigError(f"{n_splits} folds need at least {n_splits} patients of each class; "
                             f"found {per_class[0]} NORMAL and {per_class[1]} PNEUMONIA patients")
    folds = np.full(len(index), -1)
    if grouping == "image":
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels, groups)
    for k, (_, held_out) in enumerate(parts):
        folds[held_out] = k
    return folds


def holdout(index: pd.DataFrame, fraction: float, seed: int, grouping: str = "patient") -> np.ndarray:
    """A boolean mask of about ``fraction`` of the rows for validation, grouped and stratified.

    With fewer than ``1 / fraction`` images of a class the part grows (to at most half).
    """
    if not 0.0 < fraction < 0.5:
        raise ConfigError(f"validation fraction must be in (0, 0.5), got {fraction!r}")
    n_splits = max(2, round(1 / fraction))
    # On a tiny dataset every class still needs a validation image: use fewer,
    # larger parts rather than fail.
    labels = index["label"].to_numpy()
    if grouping == "patient":
        groups = split_groups(index)
        minority = min(len(np.unique(groups[labels == c])) for c in (0, 1))
    else:
        minority = int(np.bincount(labels, minlength=2).min())
    folds = kfold(index, max(2, min(n_splits, minority)), seed, grouping)
    return folds == 0
