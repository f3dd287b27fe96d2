"""Labelled pictures for an export, and the parity check on them.

The int8 representative set comes from a training split, the check runs on a test split: the
run folder's own, or those of a data source (`--data`: Kaggle's zip, a folder per class, ...)
split as `catdog prepare` splits it, which for Kaggle's zip and the default settings is the
shipped model's own held-out test split. `check` scores them with the Keras model and the export.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from catdog.data import run_data
from catdog.data.prepare import Example, load_split, prepare, read_report
from catdog.inference.predictor import Predictor

AGREEMENT = 0.995  # share of images whose answer (cat, dog, unknown) must match the Keras model's
INT8_ACCURACY_DROP = 0.003  # int8 may lose at most 0.3 point of accuracy to the float model


def _labelled(examples: list[Example], where: str | Path, name: str) -> list[tuple[str, int]]:
    if not examples:
        raise ValueError(f"{where}: the {name!r} split is empty")
    return [(str(e.path), e.label) for e in examples]


def examples(model: str | os.PathLike | None, source, n_representative: int, n_check: int) -> tuple[list, list]:
    """(representative, check) lists of (path, label), from the train and test splits.

    Of the run folder `model`, or of `source` (zip or folder, prepared as `catdog prepare` does:
    once, then cached; a model without a run folder, such as the shipped one, needs it).
    `n_check` 0 means the whole test split; samples are seeded.
    """
    run = Path(model) if model else None
    if source is None and run and run.is_dir():
        if not (run / "manifest.csv").exists():
            raise FileNotFoundError(f"not a run folder: no manifest.csv in {run}")
        where = run / "manifest.csv"

        def split(name: str, limit: int) -> list[tuple[str, int]]:
            return _labelled(run_data.split(run, name, limit, seed=0), where, name)
    else:
        work = prepare(source)  # source None: $CATDOG_DATA, then the download cache
        report, where = read_report(work), work / "manifest.csv"

        def split(name: str, limit: int) -> list[tuple[str, int]]:
            return _labelled(load_split(where, report["root"], name, limit, seed=0), where, name)
    representative = split("train", n_representative) if n_representative else []
    return representative, split("test", n_check)


def check(reference: Predictor, exported: Path, fmt: str, labelled: list[tuple[str, int]]) -> dict:
    """Scores `labelled` with the Keras model (`reference`) and the export: answer agreement, accuracy, unknown rates, largest logit gap."""
    paths, labels = [p for p, _ in labelled], np.array([y for _, y in labelled])
    export = Predictor(exported)  # the file decides the runtime
    ref, out = list(reference.score_paths(paths)), list(export.score_paths(paths))
    ok = [i for i, s in enumerate(ref) if s.error is None]
    answers = [(reference.record(ref[i])["label"], export.record(out[i])["label"]) for i in ok]
    ref_logit, out_logit = (np.array([s[i].logit for i in ok]) for s in (ref, out))
    truth = labels[ok]
    result = dict(
        images=len(ok),
        agreement=float(np.mean([a == b for a, b in answers])),
        accuracy_keras=float(np.mean((ref_logit >= 0) == truth)),
        accuracy_export=float(np.mean((out_logit >= 0) == truth)),
        unknown_rate_keras=float(np.mean([a == "unknown" for a, _ in answers])),
        unknown_rate_export=float(np.mean([b == "unknown" for _, b in answers])),
        max_abs_logit_difference=float(np.max(np.abs(ref_logit - out_logit))),
    )
    # Rounded: 1.0 - 0.997 is 0.0030000000000000027 in floats, and 3 of 1,000 is "at most 0.3 point".
    drop = round(result["accuracy_keras"] - result["accuracy_export"], 9)
    result["required"] = dict(agreement=AGREEMENT, **({"accuracy_drop": INT8_ACCURACY_DROP} if "int8" in fmt else {}))
    result["passed"] = bool(result["agreement"] >= AGREEMENT and ("int8" not in fmt or drop <= INT8_ACCURACY_DROP))
    return result
