"""evaluate(run) -> the metrics of a trained run on its held-out test split.

Accuracy, precision, recall and F1 (dog = positive), ROC AUC, log loss (Kaggle's metric),
the confusion matrix, and expected calibration error before and after temperature scaling.
Written to `<run>/metrics_<split>[_tta].json` and printed as a table.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from sklearn import metrics as skm

from catdog import config as config_lib
from catdog import data, runs
from catdog.calibrate import expected_calibration_error, probabilities
from catdog.errors import DataError
from catdog.predict import Predictor


def classification_metrics(labels, logits, temperature: float = 1.0) -> dict:
    """The metrics dict for binary labels (1 = dog) and uncalibrated logits."""
    labels, logits = np.asarray(labels).ravel(), np.asarray(logits, dtype=np.float64).ravel()
    p_dog = probabilities(logits, temperature)
    predicted = (p_dog >= 0.5).astype(int)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predicted, average="binary", zero_division=0)
    both = len(set(labels.tolist())) == 2
    return dict(
        n=int(labels.size),
        accuracy=float(skm.accuracy_score(labels, predicted)),
        precision=float(precision), recall=float(recall), f1=float(f1),
        roc_auc=float(skm.roc_auc_score(labels, p_dog)) if both else None,
        log_loss=float(skm.log_loss(labels, p_dog, labels=[0, 1])),
        log_loss_uncalibrated=float(skm.log_loss(labels, probabilities(logits), labels=[0, 1])),
        ece=expected_calibration_error(p_dog, labels),
        ece_uncalibrated=expected_calibration_error(probabilities(logits), labels),
        temperature=temperature,
        confusion_matrix=skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
    )


def evaluate(run: str | os.PathLike, split: str = "test", tta: bool = False, batch_size: int = 64) -> dict:
    """Scores the run's best model on one split of its own manifest and writes the JSON."""
    run_dir = runs.check_run(run)
    cfg = config_lib.load(run_dir / "config.json")
    root = json.loads((run_dir / "data.json").read_text())["root"]
    examples = data.load_split(run_dir / "manifest.csv", root, split, cfg.max_images, cfg.seed)
    if not examples:
        raise DataError(f"{run_dir}: the {split!r} split is empty")
    predictor = Predictor(run_dir, batch_size=batch_size, tta=tta)
    started = time.perf_counter()
    scored = list(predictor.score_paths([str(e.path) for e in examples]))
    seconds = time.perf_counter() - started
    ok = [(e.label, s) for e, s in zip(examples, scored, strict=True) if s.error is None]
    if not ok:
        raise DataError(f"{run_dir}: none of the {len(examples)} {split} images can be read (first: "
                        f"{scored[0].error}); has the data moved from {root}?")
    result = classification_metrics([y for y, _ in ok], [s.logit for _, s in ok], predictor.temperature)
    if predictor.unknown:
        # Every image here is a cat or a dog: each "unknown" is a pet given up.
        result["unknown_rate"] = float(np.mean([predictor.record(s)["label"] == "unknown" for _, s in ok]))
    result.update(split=split, tta=tta, unreadable=len(examples) - len(ok),
                  images_per_second=round(len(examples) / seconds, 1), model=str(predictor.path))
    (run_dir / f"metrics_{split}{'_tta' if tta else ''}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict) -> str:
    """The metrics as an aligned two-column table for the terminal."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in result.items()
            if k != "confusion_matrix"]
    (tn, fp), (fn, tp) = result["confusion_matrix"]
    rows.append(("confusion", f"true cat: {tn} cat / {fp} dog; true dog: {fn} cat / {tp} dog"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
