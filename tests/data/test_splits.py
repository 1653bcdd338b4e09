"""Split rules: patient grouping, duplicate merging, per-class patient counts."""

import numpy as np
import pandas as pd
import pytest

from pneumokit.data.splits import holdout, kfold, split_groups
from pneumokit.training.metrics import binary_metrics, threshold_for_sensitivity


def index_of(patients, labels, hashes=None):
    n = len(patients)
    return pd.DataFrame({"patient": patients, "label": labels,
                         "sha256": hashes or [f"h{i}" for i in range(n)]})


def test_identical_files_under_two_patients_share_a_group():
    idx = index_of(["P-1", "P-2", "P-3"], [1, 1, 0], ["same", "same", "x"])
    groups = split_groups(idx)
    assert groups[0] == groups[1] != groups[2]


def test_kfold_keeps_patients_together_and_classes_in_every_fold():
    patients = [f"P-{i // 3}" for i in range(60)] + [f"N-{i // 2}" for i in range(40)]
    labels = [1] * 60 + [0] * 40
    idx = index_of(patients, labels)
    folds = kfold(idx, 5, seed=0)
    assert pd.Series(folds).groupby(idx["patient"]).nunique().max() == 1
    for k in range(5):
        assert set(np.asarray(labels)[folds == k]) == {0, 1}


def test_too_few_patients_per_class_is_a_clear_error():
    idx = index_of(["P-1", "P-1", "P-2", "P-2", "P-3", "P-3"] + [f"N-{i}" for i in range(6)],
                   [1] * 6 + [0] * 6)
    with pytest.raises(ValueError, match="5 folds need at least 5 patients of each class; found 6 NORMAL "
                                         "and 3 PNEUMONIA"):
        kfold(idx, 5, seed=0)
    assert kfold(idx, 5, seed=0, grouping="image").max() == 4  # image folds count images
    mask = holdout(idx, 0.15, seed=0)  # shrinks to 3 parts: each class keeps a validation patient
    assert set(idx.loc[mask, "label"]) == {0, 1}


def test_threshold_uses_unclipped_probabilities():
    y = np.array([1, 1, 1, 0])
    p = np.array([1.0, 1.0, 0.2, 0.1], dtype=np.float32)  # saturated float32 sigmoid
    t = threshold_for_sensitivity(y, p, 0.5)
    assert t == 1.0 and binary_metrics(y, p, t)["recall"] == pytest.approx(2 / 3)
