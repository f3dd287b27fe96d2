import numpy as np

from catdog.calibrate import fit_temperature
from catdog.reliability import expected_calibration_error, probabilities


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = rng.random(20000) < probabilities(true_logits)
    temperature = fit_temperature(3.0 * true_logits, labels)  # a model 3x too confident
    assert abs(temperature - 3.0) < 0.15


def test_calibration_error():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 50000)
    labels = (rng.random(50000) < p).astype(int)
    assert expected_calibration_error(p, labels) < 0.01  # calibrated by construction
    assert expected_calibration_error(np.where(p > 0.5, 1.0, 0.0), labels) > 0.2  # all-or-nothing


def test_probabilities_stay_finite_for_huge_logits():
    p = probabilities([-1e4, 0.0, 1e4], temperature=0.5)
    assert np.all(np.isfinite(p)) and p[0] == 0.0 and p[1] == 0.5 and p[2] == 1.0
