"""From a model's outputs to the numbers an answer rests on, in NumPy alone (fitted by `calibrate`).

- `blend_logits`: the fine-tuned logit weighed with the ImageNet head's dog-versus-cat log-odds.
- `pet_score`: the unknown detector's two scores (`p_pet`, `pet_energy`) weighed into one,
  learned from validation pets against pictures of neither cats nor dogs.
- `bounded_logits`: no answer surer than the validation set can vouch for.

`Predictor` applies them as model.json says; `calibrate` fits them on validation data.
"""

from __future__ import annotations

import numpy as np

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


def confidence_floor(n_validated: int) -> float:
    """The least chance of being wrong an answer may claim after `n_validated` right answers:
    1 / (n + 2), Laplace's rule of succession. A model right on all 2,250 validation images
    has not shown that it errs less than about once in 2,250, so no p_dog goes below 0.00044
    or above 0.99956: one confident mistake on an unfamiliar photo costs at most 7.7 nats of
    log loss instead of 14 or more, and a right answer loses at most 0.00044."""
    return 1.0 / (n_validated + 2)


def bounded_logits(logits, temperature: float, floor: float) -> np.ndarray:
    """`logits` clipped so that expit(logit / temperature) stays within [floor, 1 - floor]."""
    bound = float(temperature) * np.log((1.0 - floor) / floor)
    return np.clip(np.asarray(logits, dtype=np.float64), -bound, bound)
