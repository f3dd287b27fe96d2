"""Labelled pictures for an export: its int8 representative set and its parity check.

From a run folder: the run's own manifest (representative images from the training split,
the check on the test split). From a data source (`--data`: Kaggle's zip, a folder per class,
...): seeded, disjoint samples of the labelled files, for models without a run folder, such as
the shipped one. Then `check` scores one set with the Keras model and with the export.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from catdog import data as data_lib
from catdog.images import is_image_name
from catdog.predict import Predictor

AGREEMENT = 0.995  # share of images whose answer (cat, dog, unknown) must match the Keras model's
INT8_ACCURACY_DROP = 0.003  # int8 may lose at most 0.3 point of accuracy to the float model


def run_split(run: Path, split: str, limit: int = 0) -> list[tuple[str, int]]:
    """(path, label) of one split of a run's manifest; `limit` > 0 takes a seeded sample."""
    if not (run / "config.json").exists():
        raise FileNotFoundError(f"not a run folder: no config.json in {run}")
    root = json.loads((run / "data.json").read_text())["root"]
    examples = data_lib.load_split(run / "manifest.csv", root, split, limit, seed=0)
    if not examples:
        raise ValueError(f"{run}: the {split!r} split is empty")
    return [(str(e.path), e.label) for e in examples]


def sample_source(source: str | os.PathLike | None, counts: tuple[int, ...], work: Path) -> list[list]:
    """Seeded samples of `counts` labelled images from a zip or folder (zip members go to `work`),
    disjoint while the source has enough.

    `source` None means `$CATDOG_DATA`, then the download cache, as for training.
    """
    source = data_lib.resolve_source(source)
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            names = sorted(n for n in archive.namelist() if is_image_name(n) and data_lib.label_of(Path(n)))
            picked = _pick(names, counts)
            for name in (n for group in picked for n in group):
                archive.extract(name, work)
        root = work
    else:
        root = source
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if is_image_name(p))
        picked = _pick([n for n in names if data_lib.label_of(Path(n))], counts)
    label = {name: data_lib.CLASS_NAMES.index(data_lib.label_of(Path(name))) for name in names}
    return [[(str(root / n), label[n]) for n in group] for group in picked]


def _pick(names: list[str], counts: tuple[int, ...]) -> list[list[str]]:
    if not names:
        raise FileNotFoundError("no labelled images in the data source (cat./dog. names or cat/dog folders)")
    order = np.random.default_rng(0).permutation(len(names))
    groups, at = [], 0
    for count in counts:
        # A small source runs out: later groups then overlap the first (calibration can share images).
        chosen = order[at:at + count] if at < len(order) else order[:count]
        groups.append(sorted(names[i] for i in chosen))
        at += count
    return groups


def examples(model: str | os.PathLike | None, source, n_representative: int, n_check: int,
             work: Path) -> tuple[list, list]:
    """(representative, check) lists of (path, label): the run's train/test splits, else samples of
    `source` (a zip's sampled members are extracted into `work`)."""
    run = Path(model) if model else None
    if run and run.is_dir() and source is None:
        representative = run_split(run, "train", n_representative) if n_representative else []
        return representative, run_split(run, "test", n_check)
    check_set, representative = sample_source(source, (n_check, n_representative), work)
    return representative, check_set


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
    drop = result["accuracy_keras"] - result["accuracy_export"]
    result["required"] = dict(agreement=AGREEMENT, **({"accuracy_drop": INT8_ACCURACY_DROP} if "int8" in fmt else {}))
    result["passed"] = bool(result["agreement"] >= AGREEMENT and ("int8" not in fmt or drop <= INT8_ACCURACY_DROP))
    return result
