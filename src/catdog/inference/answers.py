"""From a model's outputs to an answer, in NumPy alone: the arithmetic that `calibrate` fits.

- `blend_logits`: the fine-tuned logit weighed with the ImageNet head's dog-versus-cat log-odds.
- `bounded_logits`: no answer surer than the validation set can vouch for.
- `probabilities`: the calibrated p(dog), sigmoid(logit / temperature).
- `pet_score`: the unknown detector's two scores (`p_pet`, `pet_energy`) weighed into one,
  learned from validation pets against pictures of neither cats nor dogs.
- `is_unknown`: any detector score below its threshold.

`Predictor` applies them as model.json says; `catdog.training.calibrate` fits them on
validation data; `catdog.evaluation` measures the result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Outputs that make the cat-or-dog answer; any other output is an unknown-detector score.
ANSWER_OUTPUTS = ("logit", "dog_odds")
PET_SCORE_INPUTS = ("pet_energy", "log_p_pet")


def blend_logits(scores, blend) -> np.ndarray:
    """`blend["bias"]` plus each named score times its weight: the calibrated evidence for "dog".

    `scores` maps names ("logit", "dog_odds") to arrays; `blend` is what `calibrate.fit_blend`
    wrote to model.json, e.g. {"logit": 0.9, "dog_odds": 0.1, "bias": 0.02}.
    """
    total = np.full(np.shape(scores["logit"]), float(blend.get("bias", 0.0)))
    for name, weight in blend.items():
        if name != "bias":
            total = total + float(weight) * np.asarray(scores[name], dtype=np.float64)
    return total


def pet_score_inputs(scores) -> np.ndarray:
    """(N, 2): pet_energy and log(p_pet) (floored at 1e-30) from the detector's scores."""
    energy = np.asarray(scores["pet_energy"], dtype=np.float64).reshape(-1)
    log_p = np.log(np.maximum(np.asarray(scores["p_pet"], dtype=np.float64).reshape(-1), 1e-30))
    return np.column_stack([energy, log_p])


def pet_score(scores, spec) -> np.ndarray:
    """The learned evidence that a picture shows a cat or dog at all; low means "unknown".

    `spec` is model.json's {"pet_energy": w1, "log_p_pet": w2, "bias": b}.
    """
    weights = np.array([float(spec[name]) for name in PET_SCORE_INPUTS])
    return pet_score_inputs(scores) @ weights + float(spec["bias"])


def bounded_logits(logits, temperature: float, floor: float) -> np.ndarray:
    """`logits` clipped so that expit(logit / temperature) stays within [floor, 1 - floor]."""
    bound = float(temperature) * np.log((1.0 - floor) / floor)
    return np.clip(np.asarray(logits, dtype=np.float64), -bound, bound)


def probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """sigmoid(logits / T), computed stably, as float64."""
    z = np.asarray(logits, dtype=np.float64).ravel() / temperature
    return np.exp(-np.logaddexp(0.0, -z))


def is_unknown(scores: Mapping[str, float], thresholds: Mapping[str, float]) -> bool:
    """True when any of the unknown detector's scores is below its threshold."""
    return any(scores[name] < threshold for name, threshold in thresholds.items())
