"""95% confidence intervals for a model's figures on a site: a bootstrap over patients.

A site's test set is a sample of its patients, and one patient's images are
not independent of each other, so the bootstrap resamples *patients* (a
cluster bootstrap): each replicate draws as many patients as the set has, with
replacement, and every image of a drawn patient counts once per draw. The
figures are then computed with those counts as weights, for all replicates at
once (NumPy, no loop over replicates).

The interval is the bias-corrected and accelerated (BCa) one (Efron 1987;
Efron & Tibshirani 1993, ch. 14): the percentile interval, moved for the
bootstrap distribution's bias and skew, the acceleration coming from a
leave-one-patient-out jackknife. AUC near 1 has a skewed sampling
distribution, and plain percentile intervals undercover there;
``bench/site.py`` measures both methods' coverage (docs/performance.md).
A figure that is exactly 0 or 1 on the set (every NORMAL called NORMAL)
gives every replicate the same value, so no bootstrap interval; there the
interval is Wilson's score interval for that many patients (for AUC, the
smaller class's). A figure whose denominator holds fewer than
``MIN_PATIENTS`` patients gets no interval at all (None).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

REPLICATES = 2000
MIN_PATIENTS = 10  # fewer in a figure's denominator: no interval (None), and a criterion on it fails
LEVEL = 0.95
CI_METHODS = ("bca", "percentile")
DEFAULT_CI_METHOD = "bca"
FIGURES = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "brier")
_CHUNK = 4_000_000  # weights (replicates x images) held at once


def _figures(w: np.ndarray, y: np.ndarray, prob: np.ndarray, pred: np.ndarray, order: np.ndarray,
             starts: np.ndarray, ends: np.ndarray) -> dict[str, np.ndarray]:
    """Every figure, one value per row of the weights ``w`` (rows x images)."""
    pos, neg = w * (y == 1), w * (y == 0)
    tp, fn = pos @ pred, pos @ (1 - pred)
    tn, fp = neg @ (1 - pred), neg @ pred
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"accuracy": (tp + tn) / total, "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
               "ppv": tp / (tp + fp), "npv": tn / (tn + fn),
               "brier": (w @ (prob - y) ** 2) / total}
        # Weighted Mann-Whitney: each positive's weight times the negative weight below its
        # score, ties counting half; images sorted by score, tie blocks from ``starts``/``ends``.
        cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(neg[:, order], axis=1)], axis=1)
        below = cum[:, starts] + 0.5 * (cum[:, ends] - cum[:, starts])
        out["auc"] = (pos[:, order] * below).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
    return out


def _ties(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images sorted by score, and each sorted image's tie block ``[start, end)``."""
    order = np.argsort(prob, kind="stable")
    s = prob[order]
    starts = np.searchsorted(s, s, side="left")
    ends = np.searchsorted(s, s, side="right")
    return order, starts, ends


def _in_chunks(weights_of, rows: int, n: int, compute) -> dict[str, np.ndarray]:
    """``compute`` over the weight rows ``weights_of(lo, hi)``, a memory-bounded chunk at a time."""
    step = max(1, _CHUNK // max(1, n))
    parts = [compute(weights_of(lo, min(rows, lo + step))) for lo in range(0, rows, step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def wilson(p: float, n: float, level: float = LEVEL) -> list[float]:
    """Wilson's score interval of a proportion ``p`` of ``n``."""
    z = float(norm.ppf((1 + level) / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if p == 0 else max(0.0, centre - half)
    high = 1.0 if p == 1 else min(1.0, centre + half)  # exact bounds, not 0.9999999999999999
    return [float(low), float(high)]


def _bca(theta: float, boot: np.ndarray, jack: np.ndarray, level: float) -> list[float] | None:
    boot = boot[np.isfinite(boot)]
    jack = jack[np.isfinite(jack)]
    if not np.isfinite(theta) or len(boot) < 10:
        return None
    z0 = norm.ppf(np.clip(np.mean(boot < theta) + 0.5 * np.mean(boot == theta), 1e-6, 1 - 1e-6))
    d = jack.mean() - jack if len(jack) > 2 else np.zeros(1)
    a = float((d ** 3).sum() / (6 * ((d ** 2).sum()) ** 1.5)) if (d ** 2).sum() > 0 else 0.0
    z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    alphas = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    return [float(v) for v in np.quantile(boot, alphas)]


def _percentile(boot: np.ndarray, level: float) -> list[float] | None:
    boot = boot[np.isfinite(boot)]
    if len(boot) < 10:
        return None
    return [float(v) for v in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])]


def _resample(groups, replicates: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each image's patient number, and (replicates x patients) draw counts."""
    _, member = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    patients = int(member.max()) + 1 if len(member) else 0
    counts = np.random.default_rng(seed).multinomial(patients, np.full(patients, 1 / max(1, patients)),
                                                     size=replicates)
    return member, counts


def _replicates(y, prob, threshold: float, member, counts, jackknife: bool):
    """The figures on the set, on each bootstrap replicate and (``jackknife``) leaving out each patient."""
    pred = (prob >= threshold).astype(np.float64)
    order, starts, ends = _ties(prob)

    def compute(w):
        return _figures(w, y, prob, pred, order, starts, ends)

    estimate = {k: float(v[0]) for k, v in compute(np.ones((1, len(y)))).items()}
    boot = _in_chunks(lambda lo, hi: counts[lo:hi][:, member].astype(np.float64), len(counts), len(y),
                      compute)
    jack = {}
    if jackknife:
        jack = _in_chunks(lambda lo, hi: (member[None, :] != np.arange(lo, hi)[:, None]).astype(np.float64),
                          counts.shape[1], len(y), compute)
    return estimate, boot, jack


def _patients_in(y, pred, member) -> dict[str, int]:
    """How many patients each figure's denominator holds (AUC: the smaller class's)."""
    def count(mask):
        return len(np.unique(member[mask]))
    pos, neg = count(y == 1), count(y == 0)
    return {"accuracy": count(np.ones(len(y), bool)), "brier": count(np.ones(len(y), bool)),
            "sensitivity": pos, "specificity": neg, "ppv": count(pred == 1), "npv": count(pred == 0),
            "auc": min(pos, neg)}


def difference(y, prob_before, prob_after, groups, figure: str = "auc", *, thresholds=(0.5, 0.5),
               replicates: int = REPLICATES, seed: int = 0, level: float = LEVEL) -> dict:
    """``figure`` after minus before on the same patients, with its paired BCa interval (the same
    bootstrap draws for both, so what the two share cancels)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    member, counts = _resample(groups, replicates, seed)
    parts = [_replicates(y, np.asarray(p, dtype=np.float64).ravel(), t, member, counts, True)
             for p, t in zip((prob_before, prob_after), thresholds, strict=True)]
    (e0, b0, j0), (e1, b1, j1) = parts
    theta = e1[figure] - e0[figure]
    return {"figure": figure, "estimate": float(theta),
            "ci": _bca(theta, b1[figure] - b0[figure], j1[figure] - j0[figure], level)}


def intervals(y, prob, groups, threshold: float, *, replicates: int = REPLICATES, seed: int = 0,
              level: float = LEVEL, method: str = DEFAULT_CI_METHOD) -> dict:
    """Point estimates and ``level`` confidence intervals of every figure in ``FIGURES``.

    Parameters
    ----------
    y, prob : 0/1 labels and probabilities, one per image.
    groups : the patient of each image; the bootstrap resamples patients.
    threshold : decision threshold for the figures that need one (``prob >= threshold``).
    method : ``"bca"`` (default) or ``"percentile"``.

    Returns ``{"estimate": {figure: value}, "ci": {figure: [low, high] or None}, "method",
    "level", "replicates", "patients"}``; a figure undefined on the set (no positives: no
    sensitivity, no AUC) is NaN with interval None.
    """
    if method not in CI_METHODS:
        raise ValueError(f"interval method {method!r}: choose one of {', '.join(CI_METHODS)}")
    y = np.asarray(y, dtype=np.float64).ravel()
    prob = np.asarray(prob, dtype=np.float64).ravel()
    if not (len(y) == len(prob) == len(np.asarray(groups).ravel())) or not np.isin(y, (0, 1)).all():
        raise ValueError("intervals need 0/1 labels, probabilities and patients, one of each per image")
    pred = (prob >= threshold).astype(np.float64)
    member, counts = _resample(groups, replicates, seed)
    estimate, boot, jack = _replicates(y, prob, threshold, member, counts, method == "bca")
    patients = counts.shape[1]
    ci: dict[str, list[float] | None] = {}
    patients_in = _patients_in(y, pred, member)
    for k in FIGURES:
        if not np.isfinite(estimate[k]) or patients_in[k] < MIN_PATIENTS:
            ci[k] = None  # undefined, or too few patients to say how uncertain it is
        elif k != "brier" and min(abs(estimate[k]), abs(1 - estimate[k])) < 1e-9:
            # Every replicate gives the same 0 or 1: the bootstrap has no spread to offer here.
            estimate[k] = float(round(estimate[k]))  # 0.9999999999999999 is 1
            ci[k] = wilson(estimate[k], float(patients_in[k]), level)
        else:
            ci[k] = (_bca(estimate[k], boot[k], jack[k], level) if method == "bca"
                     else _percentile(boot[k], level))
    return {"estimate": estimate, "ci": ci, "method": method, "level": level, "replicates": replicates,
            "patients": patients}


# Acceptance criteria (``pneumokit evaluate --require``): a figure, >= or <=, a number.
_ALIASES = {"recall": "sensitivity", "precision": "ppv", "sens": "sensitivity", "spec": "specificity"}
JUDGE_ON = ("bound", "estimate")


def parse_requirement(text: str) -> tuple[str, str, float]:
    """``"sensitivity>=0.95"`` -> ``("sensitivity", ">=", 0.95)``; ``ValueError`` saying what is wrong."""
    import re

    m = re.fullmatch(r"\s*([A-Za-z]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+)\s*", str(text))
    if not m:
        raise ValueError(f"requirement {text!r}: write FIGURE>=NUMBER or FIGURE<=NUMBER, e.g. "
                         "\"sensitivity>=0.95\"")
    figure = _ALIASES.get(m.group(1).lower(), m.group(1).lower())
    if not 0 <= float(m.group(3)) <= 1:
        raise ValueError(f"requirement {text!r}: figures are fractions in [0, 1] (0.95, not 95)")
    if figure not in FIGURES:
        raise ValueError(f"requirement {text!r}: unknown figure {m.group(1)!r}; choose one of "
                         f"{', '.join(FIGURES)}")
    return figure, m.group(2), float(m.group(3))


def judge(requirements, result: dict, on: str = "bound") -> list[dict]:
    """A verdict per requirement on an ``intervals`` result. ``on="bound"`` (default) judges
    ``>=`` on the interval's lower bound and ``<=`` on its upper bound: the site can be
    ``level`` confident the figure meets it; ``"estimate"`` judges the point estimate."""
    verdicts = []
    for text in requirements:
        figure, op, value = parse_requirement(text)
        estimate, ci = result["estimate"][figure], result["ci"][figure]
        if on == "bound":
            judged = None if ci is None else (ci[0] if op == ">=" else ci[1])
        else:
            judged = estimate if np.isfinite(estimate) else None
        passed = judged is not None and (judged >= value if op == ">=" else judged <= value)
        verdicts.append({"requirement": f"{figure}{op}{value:g}", "figure": figure, "op": op, "value": value,
                         "judged_on": "estimate" if on == "estimate" else
                         ("lower 95% bound" if op == ">=" else "upper 95% bound"),
                         "judged_value": judged, "estimate": estimate, "ci95": ci, "passed": bool(passed)})
    return verdicts
