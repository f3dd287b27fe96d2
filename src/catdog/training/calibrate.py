"""calibrate(run): after training, fit what turns logits into trustworthy answers.

On the validation split: temperature scaling (Guo et al., 2017) so that `p_dog` is
calibrated, within the bounds that the split's size can vouch for
(`confidence_floor`); for backbone models, the thresholds of the "neither cat nor
dog" detector (`catdog.models.pet_detector`) and the blend of the fine-tuned logit with the ImageNet
head's own dog-versus-cat log-odds, kept where it beats temperature alone (`fit_blend`). All
are written to the run's `model.json`; `train` ends with this step, and `catdog calibrate RUN`
repeats it on a finished run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
from scipy.optimize import minimize_scalar

from catdog import config as config_lib
from catdog import runs
from catdog.data import run_data
from catdog.data.prepare import CLASS_NAMES
from catdog.errors import DataError
from catdog.evaluation.reliability import expected_calibration_error
from catdog.inference.answers import (
    PET_SCORE_INPUTS,
    blend_logits,
    bounded_logits,
    is_unknown,
    pet_score,
    pet_score_inputs,
    probabilities,
)
from catdog.inference.predictor import Predictor, expand_paths
from catdog.models.builders import load_model
from catdog.models.pet_detector import attach_pet_detector
from catdog.training.prototypes import add_prototypes, prototype_count


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + e^z) - y z, written to stay finite for large |z|
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def confidence_floor(n_validated: int) -> float:
    """The least chance of being wrong an answer may claim after `n_validated` right answers:
    1 / (n + 2), Laplace's rule of succession. A model right on all 2,250 validation images
    has not shown that it errs less than about once in 2,250, so no p_dog goes below 0.00044
    or above 0.99956: one confident mistake on an unfamiliar photo costs at most 7.7 nats of
    log loss instead of 14 or more, and a right answer loses at most 0.00044."""
    return 1.0 / (n_validated + 2)


def fit_temperature(logits, labels) -> float:
    """The T > 0 minimising the log loss of sigmoid(logits / T) on held-out data."""
    logits = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    result = minimize_scalar(lambda log_t: _nll(logits, labels, np.exp(log_t)),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def fit_blend(logits, dog_odds, labels, folds: int = 5) -> tuple[dict | None, dict]:
    """Weights for the fine-tuned logit and the ImageNet dog-versus-cat log-odds, or None.

    A logistic regression on the two numbers (it calibrates as it blends). It is kept only when
    its log loss, cross-validated over `folds` parts of these (validation) images, beats
    temperature scaling of the logit alone; the second value holds both figures ({} when there
    are too few images of either class to judge).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x = np.column_stack([np.asarray(logits, np.float64), np.asarray(dog_odds, np.float64)])
    y = np.asarray(labels, np.float64).ravel()
    if min(np.sum(y == 0), np.sum(y == 1)) < 10 * folds:  # too few to tell a better fit from luck
        return None, {}
    losses = {"temperature": [], "blend": []}
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y):
        t = fit_temperature(x[fit, 0], y[fit])
        losses["temperature"].append(_nll(x[held, 0], y[held], t) * len(held))
        model = LogisticRegression(C=1.0).fit(x[fit], y[fit])
        losses["blend"].append(_nll(model.decision_function(x[held]), y[held], 1.0) * len(held))
    cv = {name: float(np.sum(values) / len(y)) for name, values in losses.items()}
    if cv["blend"] >= cv["temperature"]:
        return None, cv
    model = LogisticRegression(C=1.0).fit(x, y)
    (a, b), c = model.coef_[0], model.intercept_[0]
    return {"logit": float(a), "dog_odds": float(b), "bias": float(c)}, cv


def fit_thresholds(scores: Mapping[str, np.ndarray], budget: float) -> dict[str, float]:
    """A threshold per score, all at one quantile level of these (validation) pets' scores.

    The level is the highest at which at most `budget` of the pets fall below *any* threshold,
    so the scores share the budget by how much they disagree about which pets look unusual.
    """
    arrays = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in scores.items()}

    def at(level: float) -> dict[str, float]:
        return {name: float(np.quantile(values, level)) for name, values in arrays.items()}

    def given_up(thresholds: dict[str, float]) -> float:
        return float(np.mean(np.any([arrays[name] < t for name, t in thresholds.items()], axis=0)))

    low, high = 0.0, budget  # given_up(at(level)) never falls as the level rises
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if given_up(at(middle)) <= budget else (low, middle)
    return at(low)


def fit_pet_score(pets, non_pets, budget: float, folds: int = 5) -> tuple[dict, dict]:
    """A logistic regression of pet against not-pet on the detector's scores, and what it catches.

    `pets` and `non_pets` are mappings of arrays ("p_pet", "pet_energy"). Returns model.json's
    spec (`catdog.inference.answers.pet_score`) and, cross-validated over `folds` parts of both sets, the
    share of non-pets below the threshold that gives up `budget` of the (held-out) pets, beside
    the same share for the two-threshold rule (whose thresholds never see the non-pets).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x_pets, x_non_pets = pet_score_inputs(pets), pet_score_inputs(non_pets)
    x, y = np.vstack([x_pets, x_non_pets]), np.r_[np.ones(len(x_pets)), np.zeros(len(x_non_pets))]
    report = {"non_pets": len(x_non_pets), "budget": budget}
    if len(x_pets) < max(10 * folds, 1 / budget) or len(x_non_pets) < 2 * folds:
        return {}, {**report, "skipped": "too few pictures to judge"}

    def model():
        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)

    held_out = np.zeros(len(y))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y):
        held_out[held] = model().fit(x[fit], y[fit]).decision_function(x[held])
    threshold = np.quantile(held_out[y == 1], budget)
    rule = fit_thresholds({k: np.asarray(pets[k]) for k in ("p_pet", "pet_energy")}, budget)
    by_rule = [is_unknown({k: non_pets[k][i] for k in rule}, rule) for i in range(len(x_non_pets))]
    fitted = model().fit(x, y)
    spec = {name: float(w) for name, w in zip(PET_SCORE_INPUTS, fitted.coef_[0])}
    spec["bias"] = float(fitted.intercept_[0])
    return spec, {**report, "caught": float(np.mean(held_out[y == 0] < threshold)),
                  "caught_by_two_thresholds": float(np.mean(by_rule))}


def calibrate(run: str | os.PathLike, unknown_budget: float | None = None, unknown_non_pets: str | None = None,
              unknown_prototypes: int | None = None) -> dict:
    """Fits temperature (and the unknown thresholds) on the run's validation split; returns model.json.

    `unknown_budget` (default: the run's config) is the share of validation cats and dogs that
    the unknown detector may give up. `unknown_non_pets` (default: the run's config), a folder of
    pictures of neither, lets it learn one score from both kinds (`fit_pet_score`), used where it
    catches more of them in cross-validation than the two thresholds do. `unknown_prototypes`
    (default: the run's config), where above 0, adds `pet_similarity` to the detector: the
    training pets in that many k-means prototypes (`catdog.training.prototypes`), fitted once
    and kept while the number stays the same; its threshold shares the budget. The settings
    given are written into the run's config.json with the calibration they made.
    """
    run_dir = runs.check_run(run)
    cfg = config_lib.load(run_dir / "config.json")
    changes = {k: v for k, v in (("unknown_budget", unknown_budget), ("unknown_non_pets", unknown_non_pets),
                                 ("unknown_prototypes", unknown_prototypes)) if v is not None}
    cfg = config_lib.override(cfg, changes)
    val_ex = run_data.split(run_dir, "val", cfg.max_images, cfg.seed)
    model = load_model(run_dir / "model.keras", compile=True)
    if cfg.unknown and cfg.model != "scratch" and not isinstance(model.output, dict):
        model = attach_pet_detector(model, cfg)
        keras.saving.save_model(model, run_dir / "model.keras")
    if cfg.unknown_prototypes and isinstance(model.output, dict) and prototype_count(model) != cfg.unknown_prototypes:
        train_paths = [str(e.path) for e in run_data.split(run_dir, "train", cfg.max_images, cfg.seed)]
        model = add_prototypes(model, train_paths, cfg.unknown_prototypes, cfg.image_size, cfg.seed)
        keras.saving.save_model(model, run_dir / "model.keras")
    # Raw logits and detector scores (whichever the model has), whatever model.json says.
    predictor = Predictor(run_dir, meta={})
    scores = list(predictor.score_paths([str(e.path) for e in val_ex]))
    pairs = [(e.label, s) for e, s in zip(val_ex, scores, strict=True) if s.error is None]
    if not pairs:
        first = scores[0].error if scores else "the split is empty"
        raise DataError(f"{run_dir}: no validation image can be read ({first}); has the data in "
                        f"{run_data.root(run_dir)} changed?")
    labels, scored = np.array([y for y, _ in pairs]), [s for _, s in pairs]
    logits = np.array([s.logit for s in scored])
    blend, blend_cv = None, None
    if scored[0].dog_odds is not None:  # the detector's ImageNet head also answers "cat or dog?"
        blend, blend_cv = fit_blend(logits, [s.dog_odds for s in scored], labels)
        if blend:
            logits = blend_logits({"logit": logits, "dog_odds": [s.dog_odds for s in scored]}, blend)
    temperature = fit_temperature(logits, labels)
    floor = confidence_floor(len(labels))
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    meta = dict(
        class_names=list(CLASS_NAMES), image_size=cfg.image_size, model=cfg.model,
        temperature=temperature, p_floor=floor,
        val_ece_before=expected_calibration_error(probabilities(logits), labels),
        val_ece_after=expected_calibration_error(
            probabilities(bounded_logits(logits, temperature, floor), temperature), labels),
        train_seconds=state.get("seconds"), keras=keras.__version__,
    )
    if blend_cv:
        meta["val_cv_log_loss"] = blend_cv  # temperature alone against the blend; the better one is used
    if blend:
        meta["blend"] = blend
    if predictor.has_detector:
        meta["unknown_budget"] = cfg.unknown_budget
        pets = {name: np.array([s.pet[name] for s in scored]) for name in predictor.detector_scores}
        # A model calibrated with prototypes and now without keeps the layer, unused.
        similarity = {"pet_similarity": pets.pop("pet_similarity")} if "pet_similarity" in pets else {}
        similarity = similarity if cfg.unknown_prototypes else {}
        if cfg.unknown_non_pets:
            spec, meta["pet_score_fit"] = fit_pet_score(pets, _non_pet_scores(predictor, cfg.unknown_non_pets),
                                                        cfg.unknown_budget)
            meta["pet_score_fit"]["folder"] = cfg.unknown_non_pets
            # Kept only where it beats the two thresholds; too few validation pets to judge: not kept.
            if meta["pet_score_fit"].get("caught", 0) > meta["pet_score_fit"].get("caught_by_two_thresholds", 1):
                meta["pet_score"] = spec
                pets = {"pet_score": pet_score(pets, spec)}
        meta["unknown_thresholds"] = fit_thresholds({**pets, **similarity}, cfg.unknown_budget)
    (run_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    if changes:  # the run folder says how its calibration was made: a plain `catdog calibrate RUN` repeats it
        config_lib.save(cfg, run_dir / "config.json")
    return meta


def _non_pet_scores(predictor: Predictor, folder: str) -> dict[str, np.ndarray]:
    """The detector's scores of the pictures in `folder` (unreadable ones skipped)."""
    if not Path(folder).expanduser().is_dir():
        raise DataError(f"unknown_non_pets: {folder} is not a folder")
    paths = expand_paths([str(Path(folder).expanduser())])
    scored = [s.pet for s in predictor.score_paths(paths) if s.error is None and s.pet]
    if len(scored) < 20:
        raise DataError(f"unknown_non_pets: {folder} has {len(scored)} readable pictures; the learned score "
                        f"needs at least 20 pictures of neither cats nor dogs")
    return {name: np.array([s[name] for s in scored]) for name in ("p_pet", "pet_energy")}
