import numpy as np
import pytest

from catdog.evaluation.reliability import expected_calibration_error
from catdog.inference.answers import blend_logits, bounded_logits, is_unknown, pet_score, probabilities
from catdog.training.calibrate import confidence_floor, fit_blend, fit_pet_score, fit_temperature, fit_thresholds


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


def _two_signals(n, seed):
    """Labels, a logit that sees only half the cases well, and a second signal that sees the rest."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    sign = np.where(labels, 1.0, -1.0)
    hard = rng.random(n) < 0.3  # the logit is blind to these; the other signal is not
    logit = np.where(hard, rng.normal(0, 1, n), sign * rng.uniform(2, 6, n))
    odds = sign * rng.uniform(0, 4, n) + rng.normal(0, 1, n)
    return logit, odds, labels


def test_a_blend_that_helps_is_kept_and_applied():
    logit, odds, labels = _two_signals(4000, 0)
    blend, cv = fit_blend(logit, odds, labels)
    assert blend is not None and blend["dog_odds"] > 0 and blend["logit"] > 0
    assert cv["blend"] < cv["temperature"]
    logit2, odds2, labels2 = _two_signals(4000, 1)  # new data: the blend still beats temperature alone
    blended = blend_logits({"logit": logit2, "dog_odds": odds2}, blend)
    nll = lambda z: -np.mean(np.log(np.where(labels2, probabilities(z), 1 - probabilities(z))))  # noqa: E731
    assert nll(blended) < nll(logit2 / fit_temperature(logit, labels)) - 0.05


def test_a_blend_with_noise_is_refused():
    rng = np.random.default_rng(3)
    labels = rng.random(3000) < 0.5
    logit = np.where(labels, 1.0, -1.0) * rng.uniform(0, 5, 3000)
    blend, cv = fit_blend(logit, rng.normal(0, 5, 3000), labels)  # odds carrying no information
    assert blend is None and set(cv) == {"temperature", "blend"}


def test_blend_logits_is_the_weighted_sum():
    z = blend_logits({"logit": np.array([1.0, -2.0]), "dog_odds": np.array([4.0, 0.0])},
                     {"logit": 0.5, "dog_odds": 0.25, "bias": -1.0})
    np.testing.assert_allclose(z, [0.5, -2.0])


def test_a_blend_without_a_bias_or_a_weight_is_still_an_array():
    """model.json's blend is a mapping: a missing bias is 0, and the bias alone still answers per picture."""
    scores = {"logit": np.array([1.0, -2.0])}
    np.testing.assert_array_equal(blend_logits(scores, {"logit": 2.0}), [2.0, -4.0], strict=True)
    np.testing.assert_array_equal(blend_logits(scores, {"bias": 0.5}), [0.5, 0.5], strict=True)


def test_the_pet_score_is_its_weighted_sum_plus_the_bias():
    scores = {"pet_energy": np.array([2.0, 5.0]), "p_pet": np.array([np.exp(-1.0), 0.0])}
    spec = {"pet_energy": 1.0, "log_p_pet": 2.0, "bias": 0.5}
    # log(p_pet) is floored at 1e-30: a p_pet of 0 is about -69, not minus infinity
    np.testing.assert_allclose(pet_score(scores, spec), [2.0 - 2.0 + 0.5, 5.0 + 2.0 * np.log(1e-30) + 0.5])


def test_a_pet_exactly_at_a_threshold_is_a_pet():
    """`is_unknown` gives up what `fit_thresholds` counts as given up: scores *below* a threshold.
    At a budget of 0.5% of 40 pets the thresholds are the lowest scores, and no pet is given up."""
    rng = np.random.default_rng(5)
    pets = {"p_pet": rng.uniform(0.2, 1.0, 40), "pet_energy": rng.normal(12, 2, 40)}
    thresholds = fit_thresholds(pets, budget=0.005)
    assert thresholds == {name: float(values.min()) for name, values in pets.items()}
    assert not any(is_unknown({name: pets[name][i] for name in pets}, thresholds) for i in range(40))
    assert is_unknown({"p_pet": 0.9, "pet_energy": thresholds["pet_energy"] - 1e-9}, thresholds)


def test_no_answer_is_surer_than_the_validation_set_can_vouch_for():
    floor = confidence_floor(2250)
    assert floor == pytest.approx(1 / 2252)
    logits = np.array([-40.0, -3.0, 0.0, 2.5, 40.0])
    bounded = bounded_logits(logits, 1.5, floor)
    p = probabilities(bounded, 1.5)
    np.testing.assert_allclose(p[[0, -1]], [floor, 1 - floor], rtol=1e-9)
    np.testing.assert_array_equal(bounded[1:-1], logits[1:-1])  # answers within the bounds are untouched


def test_float32_logits_as_the_model_gives_them_keep_float64_answers():
    """A model's logits are float32; in float32, 1 - p_dog is lost past a logit of about 17."""
    p = probabilities(np.array([20.0, -20.0], np.float32))
    assert p.dtype == np.float64 and 1 - p[0] == pytest.approx(2.0611536e-9, rel=1e-6)
    floor = confidence_floor(2250)
    bounded = probabilities(bounded_logits(np.array([-40.0, 40.0], np.float32), 1.5, floor), 1.5)
    np.testing.assert_allclose(bounded, [floor, 1 - floor], rtol=1e-12)


def test_a_learned_pet_score_catches_non_pets_the_two_thresholds_miss():
    rng = np.random.default_rng(4)
    energy = rng.normal(10, 1.5, 3000)
    pets = {"pet_energy": energy, "p_pet": 1 / (1 + np.exp(-(energy - 8 + rng.normal(0, 0.5, 3000))))}
    # Non-pets: each score alone looks like a pet's, their combination does not.
    non_energy = rng.normal(9, 1.0, 200)
    non_pets = {"pet_energy": non_energy, "p_pet": 1 / (1 + np.exp(-(non_energy - 11 + rng.normal(0, 0.5, 200))))}
    spec, report = fit_pet_score(pets, non_pets, budget=0.01)
    assert report["caught"] > report["caught_by_two_thresholds"] + 0.2
    assert set(spec) == {"pet_energy", "log_p_pet", "bias"}
    scores = pet_score(non_pets, spec)
    assert np.mean(scores < np.quantile(pet_score(pets, spec), 0.01)) == pytest.approx(report["caught"], abs=0.1)


def test_too_few_pictures_leave_the_two_thresholds():
    spec, report = fit_pet_score({"pet_energy": np.ones(40), "p_pet": np.ones(40)},
                                 {"pet_energy": np.zeros(30), "p_pet": np.zeros(30)}, budget=0.005)
    assert spec == {} and "skipped" in report
