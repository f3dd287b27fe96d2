"""How well probabilities are calibrated, in NumPy alone: expected calibration error, reliability bins.

Shared by `evaluate` (metrics), `plots` (the reliability diagram) and `calibrate` (before and
after), so none of them needs another's heavier imports.
"""

from __future__ import annotations

import numpy as np


def confidence_bins(p_positive, labels, bins: int = 15) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per equal-width bin of the confidence in the answer given.

    Confidence is p for answers "positive", 1 - p otherwise, so it lies in [0.5, 1].
    """
    p_positive = np.asarray(p_positive, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    predicted = p_positive >= 0.5
    confidence = np.where(predicted, p_positive, 1.0 - p_positive)
    correct = predicted == (labels == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return [(float(confidence[which == b].mean()), float(correct[which == b].mean()), int((which == b).sum()))
            if (which == b).any() else (float("nan"), float("nan"), 0) for b in range(bins)]


def expected_calibration_error(p_positive, labels, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    total = max(1, np.asarray(labels).size)
    return float(sum(n / total * abs(accuracy - confidence)
                     for confidence, accuracy, n in confidence_bins(p_positive, labels, bins) if n))
