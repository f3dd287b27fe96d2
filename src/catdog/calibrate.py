"""Temperature scaling (Guo et al., 2017) and expected calibration error, for one logit."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + e^z) - y z, written to stay finite for large |z|
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(logits, labels) -> float:
    """The T > 0 minimising the log loss of sigmoid(logits / T) on held-out data."""
    logits = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    result = minimize_scalar(lambda log_t: _nll(logits, labels, np.exp(log_t)),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    return expit(np.asarray(logits, dtype=np.float64).ravel() / temperature)


def expected_calibration_error(p_positive, labels, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    p_positive = np.asarray(p_positive, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    predicted = p_positive >= 0.5
    confidence = np.where(predicted, p_positive, 1.0 - p_positive)
    correct = predicted == (labels == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)
