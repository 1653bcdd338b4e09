"""Confidence intervals by a bootstrap over patients, and acceptance criteria."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumokit.training.intervals import difference, intervals, judge, parse_requirement, wilson


def _set(n=300, patients=200, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, (np.round(prob, 1) if ties else prob), rng.integers(0, patients, n)


@pytest.mark.parametrize("ties", [False, True])
def test_estimates_are_the_plain_figures(ties):
    y, prob, groups = _set(ties=ties)
    r = intervals(y, prob, groups, 0.5)
    pred = prob >= 0.5
    assert r["estimate"]["auc"] == pytest.approx(roc_auc_score(y, prob), abs=1e-12)
    assert r["estimate"]["accuracy"] == pytest.approx(np.mean(pred == y))
    assert r["estimate"]["sensitivity"] == pytest.approx(pred[y == 1].mean())
    assert r["estimate"]["npv"] == pytest.approx((y[~pred] == 0).mean())
    for k, (low, high) in r["ci"].items():
        assert low <= r["estimate"][k] <= high, k
    assert r["patients"] == len(np.unique(groups))


def test_resampling_patients_widens_for_clustered_images():
    """Ten identical images per patient carry one patient's information: the interval is as wide
    as for one image each, not sqrt(10) narrower."""
    y, prob, _ = _set(n=100, patients=100, seed=1)
    one = intervals(y, prob, np.arange(100), 0.5)["ci"]["accuracy"]
    groups = np.repeat(np.arange(100), 10)
    rep = intervals(np.repeat(y, 10), np.repeat(prob, 10), groups, 0.5)["ci"]["accuracy"]
    naive = intervals(np.repeat(y, 10), np.repeat(prob, 10), np.arange(1000), 0.5)["ci"]["accuracy"]
    assert abs((rep[1] - rep[0]) - (one[1] - one[0])) < 0.02
    assert (naive[1] - naive[0]) < 0.5 * (rep[1] - rep[0])


def test_bca_covers_near_nominal_on_a_known_population():
    """Draws from a fixed population: the 95% intervals hold its AUC and accuracy about 95% of the time."""
    rng = np.random.default_rng(3)
    n = 4000
    y = rng.integers(0, 2, n)
    prob = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 3.0 * (y - 0.5))))
    truth = intervals(y, prob, np.arange(n), 0.5, replicates=10)["estimate"]
    hits = {"auc": 0, "accuracy": 0}
    draws = 120
    for d in range(draws):
        rows = rng.choice(n, 150, replace=True)
        ci = intervals(y[rows], prob[rows], np.arange(150), 0.5, seed=d, replicates=1000)["ci"]
        for k in hits:
            hits[k] += ci[k][0] <= truth[k] <= ci[k][1]
    for k, h in hits.items():
        assert 0.85 <= h / draws <= 1.0, (k, h / draws)


def test_boundary_proportions_get_wilson_and_undefined_figures_none():
    y = np.zeros(40, int)
    prob = np.full(40, 0.1)
    r = intervals(y, prob, np.arange(40), 0.5)
    assert r["estimate"]["specificity"] == 1.0
    assert r["ci"]["specificity"] == pytest.approx(wilson(1.0, 40)) and r["ci"]["specificity"][0] < 0.95
    assert np.isnan(r["estimate"]["auc"]) and r["ci"]["auc"] is None and r["ci"]["sensitivity"] is None


def test_paired_difference():
    y, prob, groups = _set()
    same = difference(y, prob, prob, groups)
    assert same["estimate"] == 0 and same["ci"] == [0.0, 0.0]
    better = np.where(y == 1, np.minimum(1, prob + 0.2), prob)
    d = difference(y, prob, better, groups)
    assert d["estimate"] > 0 and d["ci"][0] > 0


def test_requirements():
    assert parse_requirement("sensitivity>=0.95") == ("sensitivity", ">=", 0.95)
    assert parse_requirement(" recall >= .9 ") == ("sensitivity", ">=", 0.9)
    for bad in ("sensitivity>0.9", "speed>=1", "auc>=high", ""):
        with pytest.raises(ValueError, match="requirement"):
            parse_requirement(bad)
    result = {"estimate": {"sensitivity": 0.96, "brier": 0.05}, "ci": {"sensitivity": [0.93, 0.98],
                                                                     "brier": [0.03, 0.08]}}
    on_bound = judge(["sensitivity>=0.95", "brier<=0.1"], result)
    assert [v["passed"] for v in on_bound] == [False, True]
    assert on_bound[0]["judged_on"] == "lower 95% bound" and on_bound[0]["judged_value"] == 0.93
    assert on_bound[1]["judged_on"] == "upper 95% bound"
    assert [v["passed"] for v in judge(["sensitivity>=0.95"], result, on="estimate")] == [True]


def test_too_few_patients_give_no_interval_and_wilson_counts_patients():
    """Ten images of one patient are one patient's evidence: no interval from 4 patients, and a
    perfect score on 40 images of 20 patients is as uncertain as on 20 images."""
    y = np.repeat([0, 0, 1, 1], 10)
    r = intervals(y, y * 0.8 + 0.1, np.repeat(np.arange(4), 10), 0.5)
    assert all(v is None for v in r["ci"].values())
    assert [v["passed"] for v in judge(["auc>=0.5", "accuracy>=0.5"], r)] == [False, False]
    y = np.repeat(np.arange(40) % 2, 2)
    r = intervals(y, y * 0.8 + 0.1, np.repeat(np.arange(40), 2), 0.5)
    assert r["ci"]["sensitivity"] == pytest.approx(wilson(1.0, 20))
    assert r["ci"]["auc"] == pytest.approx(wilson(1.0, 20))


def test_bad_arguments():
    with pytest.raises(ValueError, match="fractions"):
        parse_requirement("sensitivity>=95")
    with pytest.raises(ValueError, match="0/1 labels"):
        intervals([0, 2], [0.1, 0.9], [1, 2], 0.5)
