"""Temperature scaling of probabilities (how calibrated they are: ``metrics``, Brier score and ECE).

Temperature scaling (Guo et al. 2017) divides a model's logit by one number
``T`` fitted by maximum likelihood on held-out predictions: it fixes over- or
under-confidence without changing the ranking (AUC) or the 0.5 decision. The
exported model applies it inside the graph (``pneumokit.ensemble``).

pneumokit trains with class weights, so its models estimate the probability
of PNEUMONIA for a *balanced* prior (as many NORMAL as PNEUMONIA patients).
``fit_temperature`` keeps that meaning: each class weighs half in the fitted
likelihood, and the targets are Platt's smoothed ones ((N+1)/(N+2) and
1/(N+2)), so a perfectly separated validation set gives a finite temperature
instead of one that drives every output to 0 or 1.
"""

from __future__ import annotations

import numpy as np

from ..core.config import EPS
from ..errors import TrainingError
from .metrics import brier_score, choose_threshold, expected_calibration_error

T_RANGE = (1e-2, 1e2)


def logit(prob) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(prob, temperature: float) -> np.ndarray:
    """``sigmoid(logit(prob) / temperature)``."""
    return 1.0 / (1.0 + np.exp(-logit(prob) / float(temperature)))


def fit_temperature(labels, prob) -> float:
    """The temperature minimising the class-balanced log loss of ``prob`` against 0/1
    ``labels``, with Platt's smoothed targets (see the module's docstring)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=np.float64).ravel()
    z = logit(prob).ravel()
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if not n_pos or not n_neg:
        return 1.0  # nothing to fit against
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    weight = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)

    def nll(log_t):
        s = z / np.exp(log_t)
        return float(np.sum(weight * (np.logaddexp(0.0, s) - target * s)))  # cross-entropy

    low, high = np.log(T_RANGE)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))


def fit_platt(labels, prob) -> tuple[float, float]:
    """``(a, b)`` of Platt scaling, ``sigmoid(a * logit(prob) + b)``, fitted as ``fit_temperature``
    (class-balanced, smoothed targets): the temperature and also where the balanced 0.5 decision
    lies. For a population whose scores moved (a new site), not only spread."""
    from scipy.optimize import minimize

    y = np.asarray(labels, dtype=np.float64).ravel()
    z = logit(prob).ravel()
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if not n_pos or not n_neg:
        return 1.0, 0.0
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    weight = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)

    def nll(params):
        s = params[0] * z + params[1]
        return float(np.sum(weight * (np.logaddexp(0.0, s) - target * s)))

    a, b = minimize(nll, np.array([1.0, 0.0]), method="L-BFGS-B",
                    bounds=[(1 / T_RANGE[1], 1 / T_RANGE[0]), (-20.0, 20.0)]).x
    return float(a), float(b)


def apply_platt(prob, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * logit(prob) + b)))


def check_finite(prob, which: str) -> None:
    """``TrainingError`` if any prediction is not finite: the training diverged."""
    bad = int(np.count_nonzero(~np.isfinite(np.asarray(prob, dtype=np.float64))))
    if bad:
        raise TrainingError(f"training diverged: {bad} of {len(prob)} {which} predictions are not finite "
                            "(NaN); lower --learning-rate, or check the images and the architecture")


def calibrate(labels, prob, rule: str, target_sensitivity: float | None = None):
    """Fit the temperature on held-out ``prob``, then choose the threshold on the calibrated ones.

    Returns ``(calibrated probabilities, threshold, the rule in words, calibration_report)``;
    ``rule`` and ``target_sensitivity`` are as in ``metrics.choose_threshold``.
    """
    check_finite(prob, "held-out")
    temperature = fit_temperature(labels, prob)
    calibrated = apply_temperature(prob, temperature)
    threshold, rule_text = choose_threshold(labels, calibrated, rule, target_sensitivity)
    return calibrated, threshold, rule_text, calibration_report(labels, prob, temperature)


def calibration_report(labels, prob, temperature: float) -> dict:
    """Brier score and ECE before and after applying ``temperature``."""
    calibrated = apply_temperature(prob, temperature)
    return {"method": "temperature", "temperature": float(temperature),
            "brier": brier_score(labels, calibrated), "ece": expected_calibration_error(labels, calibrated),
            "brier_uncalibrated": brier_score(labels, prob),
            "ece_uncalibrated": expected_calibration_error(labels, prob)}
