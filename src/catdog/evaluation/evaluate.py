"""evaluate(run) -> the metrics of a trained run on its held-out test split.

Accuracy, precision, recall and F1 (dog = positive), ROC AUC, log loss (Kaggle's metric),
the confusion matrix, and expected calibration error before and after temperature scaling.
Written to `<run>/metrics_<split>[_tta].json` (per image: `predictions_<split>[_tta].csv`)
and printed as a table. `evaluate_data` scores any model on any labelled pictures the same way.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from catdog import config as config_lib
from catdog import runs
from catdog.console import progress_bar
from catdog.data import run_data
from catdog.data.prepare import CLASS_NAMES, Example, load_split, prepare, read_report
from catdog.errors import DataError
from catdog.evaluation import provenance
from catdog.evaluation.reliability import expected_calibration_error
from catdog.inference.answers import probabilities
from catdog.inference.predictor import Predictor
from catdog.inference.records import DETECTOR_FIELDS


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


# The per-image CSV: `label` is the true class here, `answer` the model's (a predict record's `label`).
PREDICTION_FIELDS = ("path", "label", "logit", "p_dog", "answer", *DETECTOR_FIELDS, "dog_odds", "error")


def score(predictor: Predictor, examples: list[Example]) -> tuple[dict, list[dict]]:
    """(metrics, one row per image) for labelled examples; unreadable files are counted, not scored."""
    started = time.perf_counter()
    progress = progress_bar(total=len(examples), unit="img", desc="scoring", delay=2)
    rows = []
    for example, scored in zip(examples, predictor.score_paths([str(e.path) for e in examples]), strict=True):
        progress.update()
        row = {"path": str(example.path), "label": CLASS_NAMES[example.label]}
        if scored.error:
            rows.append({**row, "error": scored.error})
            continue
        answer = predictor.record(scored)["label"]
        p_dog = float(probabilities([scored.logit], predictor.temperature)[0])
        rows.append({**row, "logit": scored.logit, "p_dog": p_dog, "answer": answer, **(scored.pet or {}),
                     **({"dog_odds": scored.dog_odds} if scored.dog_odds is not None else {})})
    progress.close()
    seconds = time.perf_counter() - started
    ok = [r for r in rows if "error" not in r]
    if not ok:
        raise DataError(f"none of the {len(rows)} images can be read (first: {rows[0]['error'] if rows else '-'}); "
                        f"has the data moved?")
    result = classification_metrics([CLASS_NAMES.index(r["label"]) for r in ok], [r["logit"] for r in ok],
                                     predictor.temperature)
    if predictor.unknown:
        # Every image here is a cat or a dog: each "unknown" is a pet given up.
        result["unknown_rate"] = float(np.mean([r["answer"] == "unknown" for r in ok]))
    result.update(unreadable=len(rows) - len(ok), images_per_second=round(len(rows) / seconds, 1),
                  seconds=round(seconds, 1), model=str(predictor.path))
    return result, rows


def write_predictions(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, PREDICTION_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """The rows `write_predictions` wrote, numbers as floats."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("logit", "p_dog", *DETECTOR_FIELDS, "dog_odds"):
            row[key] = float(row[key]) if row.get(key) not in (None, "") else None
    return rows


def evaluate(run: str | os.PathLike, split: str = "test", tta: bool = False, batch_size: int = 64) -> dict:
    """Scores the run's best model on one split of its own manifest; writes metrics JSON and predictions CSV."""
    run_dir = runs.check_run(run)
    cfg = config_lib.load(run_dir / "config.json")
    examples = run_data.split(run_dir, split, cfg.max_images, cfg.seed)
    if not examples:
        raise DataError(f"{run_dir}: the {split!r} split is empty")
    result, rows = score(Predictor(run_dir, batch_size=batch_size, tta=tta), examples)
    result.update(split=split, tta=tta)
    stem = f"{split}{'_tta' if tta else ''}"
    (run_dir / f"metrics_{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_predictions(run_dir / f"predictions_{stem}.csv", rows)
    return result


def evaluate_data(data_path: str | os.PathLike, model: str | os.PathLike | None = None, split: str | None = None,
                  out: str | os.PathLike | None = None, tta: bool = False, batch_size: int = 64) -> dict:
    """Scores any model (run, .keras, None = shipped) on labelled pictures (zip or folder, any `prepare` layout).

    `split` None: the model's own test split when these are the pictures it was trained on
    (the split is by content, so it is the same test split), else every picture ("all").
    Writes `metrics.json`, `predictions.csv` and `data.json` into `out`, returned as `result["out"]`.
    """
    origin = provenance.trained_on(model)
    work = prepare(data_path, origin["val_fraction"], origin["test_fraction"], origin["split_seed"])
    report = read_report(work)
    own = provenance.same_source(report["settings"]["source"], origin, report["counts"])
    split = split or ("test" if own else "all")
    examples = load_split(work / "manifest.csv", report["root"], split,
                               origin["max_images"] if own else 0, origin["seed"])
    if not examples:
        raise DataError(f"{data_path}: no labelled pictures in split {split!r}")
    result, rows = score(Predictor(model, batch_size=batch_size, tta=tta), examples)
    source = Path(report["settings"]["source"])
    out = Path(out or Path("evaluations") / f"{origin['name']}-on-{source.stem}-{split}{'-tta' if tta else ''}")
    out.mkdir(parents=True, exist_ok=True)
    result.update(split=split, tta=tta, data=str(source), own_data=own, run=origin["run"], out=str(out))
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    write_predictions(out / "predictions.csv", rows)
    (out / "data.json").write_text(json.dumps({**report, "split": split}, indent=2) + "\n")
    return result


def format_table(result: dict) -> str:
    """The metrics as an aligned two-column table for the terminal."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in result.items()
            if k not in ("confusion_matrix", "out")]
    (tn, fp), (fn, tp) = result["confusion_matrix"]
    rows.append(("confusion", f"true cat: {tn} cat / {fp} dog; true dog: {fn} cat / {tp} dog"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
