"""`catdog audit DATA`: the pictures of a labelled data set that are not what their label says.

    >>> result = audit("train.zip")               # the shipped model's ImageNet side looks at every picture
    >>> result.rows[0]                            # the most suspicious first
    {"path": "train/cat.4688.jpg", "label": "cat", "issue": "neither", "score": 0.98, "reason": "...", ...}

Issues, each with a score in 0..1 and a one-line reason: neither, both, label_error, conflict,
duplicate, leak, low_quality, unreadable (see README, "Audit the data"). Judged from the pictures'
content alone: their pixels, ImageNet's view of them and how they relate to one another.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from catdog.audit import checks, label_errors, pairs
from catdog.audit.scan import Looks, pet_masses, scan
from catdog.audit.view import audit_home, load_view
from catdog.console import quiet_stderr
from catdog.data import similar
from catdog.data.prepare import CLASS_NAMES, resolve_source, source_root
from catdog.data.prepare import scan as list_files
from catdog.data.similar import groups as linked_groups
from catdog.data.splits import split_pictures

ISSUES = ("unreadable", "conflict", "label_error", "neither", "both", "leak", "duplicate", "low_quality")
FIELDS = ("path", "label", "issue", "score", "reason", "issues", "split", "neighbour", "sha256")
# Not "both", whose flags were mostly single cats on train.zip, nor "low_quality" (a dark cat is a cat).
EXCLUDED_ISSUES = ("unreadable", "conflict", "label_error", "neither", "leak", "duplicate")
DISAGREED = 0.6  # a label error's score where ImageNet sides with the label: below leaks (0.7)


@dataclass
class Result:
    rows: list[dict]  # one per flagged picture, most suspicious first
    root: Path  # the folder the rows' paths are relative to
    looks: Looks  # what the pass saw of every picture (for the report)
    paths: list[str]  # every picture, relative to `root`
    flags: list[checks.Flag] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _splits(labelled, looks: Looks, seed: str, val: float, test: float, near_duplicate_bits: int) -> list:
    """Each picture's split as `prepare` makes it (None where unreadable); near-duplicates, where kept
    together, by the hashes of the audit's own 224 px squares (prepare hashes the whole picture)."""
    found = [(digest or None, error, int(hashed))
             for digest, error, hashed in zip(looks.digests, looks.errors, looks.phash, strict=True)]
    split_of = split_pictures(labelled, found, seed, val, test, near_duplicate_bits)[3]
    return [split_of.get(digest) for digest in looks.digests]


def _label_flags(p_dog: np.ndarray, labels: list[str], readable: np.ndarray, looks: Looks) -> list[checks.Flag]:
    """Confident learning's label issues, each ranked lower (x DISAGREED) where ImageNet's own classifier
    gives the picture's label more mass than the other class: two models that looked differently
    (the features' classifier, ImageNet's 1000 classes) agree on a wrong label far more often than
    one alone. On train.zip, 9 of the 23 flags were dogs called cats (brindle and black puppies), and
    ImageNet gave all 9 more dog than cat; of the real problems, it demotes one (a woman holding a
    cat, labelled dog, where ImageNet sees little of either)."""
    rows = np.flatnonzero(readable)
    y = np.array([CLASS_NAMES.index(label) for label in labels])[rows]
    masses = pet_masses(looks.logits[rows])  # (cat, dog): the order of CLASS_NAMES
    flags = []
    for at, p_other, threshold in label_errors.label_issues(p_dog[rows], y):
        label, other = CLASS_NAMES[y[at]], CLASS_NAMES[1 - y[at]]
        agrees = masses[at, 1 - y[at]] > masses[at, y[at]]
        imagenet = f"ImageNet: {other} {masses[at, 1 - y[at]]:.0%}, {label} {masses[at, y[at]]:.0%}"
        flags.append(checks.Flag(int(rows[at]), "label_error", p_other * (1.0 if agrees else DISAGREED),
                                 f"labelled {label}, looks like a {other}: {p_other:.0%} {other} from a model that "
                                 f"never saw it (a {other} typically gets {threshold:.0%}); {imagenet}"))
    return flags


def _out_of_sample(unit: np.ndarray, labels: list[str], groups: np.ndarray, readable: np.ndarray) -> np.ndarray:
    """(N,) P(dog) for every picture from a model that never saw it nor its near-duplicates (0.5 where
    unreadable, or where there are too few pictures to hold any out)."""
    p_dog = np.full(len(labels), 0.5)
    rows = np.flatnonzero(readable)
    if len(rows) > 2:
        y = np.array([CLASS_NAMES.index(label) for label in labels])[rows]
        p_dog[rows] = label_errors.out_of_sample(unit[rows], y, groups[rows])
    return p_dog


def _fine_tuned(model, files: list[str], labels: list[str], looks: Looks, groups: np.ndarray, view,
                batch_size: int, runtime: str) -> np.ndarray:
    """(N,) P(dog) for every picture from `model`'s ImageNet top blocks fine-tuned without its fold."""
    from catdog.inference import model_files

    with quiet_stderr():  # TensorFlow's native log lines as it loads (the pass itself ran on LiteRT alone)
        from catdog.audit import fine_tuned

        bottom, blocks = fine_tuned.imagenet_blocks(model_files.resolve(model, "keras"))
    maps = fine_tuned.trunk_maps(files, looks.digests, bottom, view.image_size, audit_home() / view.key, batch_size,
                                 runtime)
    y = np.array([CLASS_NAMES.index(label) for label in labels])
    return fine_tuned.out_of_sample(maps, blocks, y, np.array([bool(d) for d in looks.digests]), groups)


def audit(data=None, model: str | os.PathLike | None = None, runtime: str = "auto", val_fraction: float = 0.1,
          test_fraction: float = 0.1, split_seed: str = "catdog-v1", near_duplicate_bits: int = 0,
          batch_size: int = 64, fine_tune: bool = False) -> Result:
    """Looks at every labelled picture of `data` (a zip or folder `prepare` reads) and returns the flagged ones.

    `model` (default: the shipped one) lends its ImageNet side; the split settings are those of the
    `prepare` whose split the leak check judges. `fine_tune`: label errors from the ImageNet top blocks
    fine-tuned on each fold (`catdog.audit.fine_tuned`; slower) instead of a linear model on their features.
    """
    started = time.perf_counter()
    root = source_root(resolve_source(data))
    labelled, _, _ = list_files(root)
    files = [str(root / rel) for rel, _ in labelled]
    view = load_view(model, runtime)
    looks = scan(files, view, batch_size)
    seconds = {"look": time.perf_counter() - started}
    labels = [label for _, label in labelled]
    tune = (lambda groups: _fine_tuned(model, files, labels, looks, groups, view, batch_size, runtime)) \
        if fine_tune else None
    result = judge(labelled, looks, root, val_fraction, test_fraction, split_seed, near_duplicate_bits, tune)
    result.seconds = {**seconds, **result.seconds}
    return result


def judge(labelled: list[tuple], looks: Looks, root: Path, val_fraction: float = 0.1, test_fraction: float = 0.1,
          split_seed: str = "catdog-v1", near_duplicate_bits: int = 0, tune=None) -> Result:
    """The flags of `labelled` ((path, label) pairs under `root`) from what the pass saw of them (`looks`);
    `tune(groups)`, where given, gives P(dog) for the label check instead of the linear model (`audit`)."""
    started = time.perf_counter()
    paths = [str(rel) for rel, _ in labelled]
    labels = [label for _, label in labelled]
    seconds = {}
    readable = np.array([error is None for error in looks.errors], bool)
    splits = _splits(labelled, looks, split_seed, val_fraction, test_fraction, near_duplicate_bits)
    reduced = label_errors.reduced(looks.features[readable]) if readable.sum() > 2 else np.zeros((readable.sum(), 1))
    unit = np.zeros((len(paths), reduced.shape[1]), np.float32)
    unit[readable] = reduced
    found = pairs.near_pairs(looks.digests, looks.phash, unit, readable)
    groups = linked_groups(len(paths), [(p.first, p.second) for p in found])
    if tune is not None and readable.sum() > 2:
        tuning = time.perf_counter()
        p_dog = tune(groups)
        seconds["fine_tune"] = time.perf_counter() - tuning
    else:
        p_dog = _out_of_sample(unit, labels, groups, readable)
    confidence = np.where(np.array([label == CLASS_NAMES[1] for label in labels]), p_dog, 1 - p_dog)
    unusual = np.zeros(len(paths))
    unusual[readable] = similar.unusual(looks.features[readable])
    flags = [*checks.unreadable(looks), *checks.neither(looks, readable, unusual),
             *checks.both(looks, readable, confidence), *checks.low_quality(looks, readable),
             *pairs.pair_flags(found, paths, labels, splits)]
    if readable.sum() > 2:
        flags += _label_flags(p_dog, labels, readable, looks)
    seconds["judge"] = time.perf_counter() - started - seconds.get("fine_tune", 0.0)
    return Result(_rows(flags, paths, labels, splits, looks.digests), root, looks, paths, flags, seconds)


def _rows(flags: list[checks.Flag], paths, labels, splits, digests) -> list[dict]:
    """One row per flagged picture: its strongest issue with its reason, and the list of all."""
    by_picture = collections.defaultdict(list)
    for flag in flags:
        by_picture[flag.index].append(flag)
    rows = []
    for index, found in by_picture.items():
        found.sort(key=lambda f: (-f.score, ISSUES.index(f.issue)))
        top = found[0]
        rows.append(dict(path=paths[index], label=labels[index], issue=top.issue, score=round(top.score, 4),
                         reason=top.reason, issues=list(dict.fromkeys(f.issue for f in found)),
                         split=splits[index], neighbour=None if top.neighbour is None else paths[top.neighbour],
                         sha256=digests[index] or None))
    return sorted(rows, key=lambda r: (-r["score"], r["path"]))


def write_rows(rows: list[dict], out: TextIO, fmt: str = "jsonl") -> None:
    """The rows as JSON lines, or as CSV with `FIELDS` (all issues joined by ";")."""
    if fmt == "csv":
        writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "issues": ";".join(row["issues"])} for row in rows)
    else:
        out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_relabels(rows: list[dict], path: str | os.PathLike) -> list[str]:
    """The relabel list `prepare` and `train` read (`relabel=FILE`): the pictures whose strongest issue is a
    label error, as CSV `path,sha256,label,new_label,score,reason`. Returns their paths."""
    chosen = [{**row, "new_label": CLASS_NAMES[1 - CLASS_NAMES.index(row["label"])]}
              for row in rows if row["issue"] == "label_error"]
    _write_list(chosen, path, ("path", "sha256", "label", "new_label", "score", "reason"))
    return [row["path"] for row in chosen]


def write_exclusions(rows: list[dict], path: str | os.PathLike, issues=EXCLUDED_ISSUES, keep=()) -> int:
    """The exclusion list `prepare` and `train` read (`exclude=FILE`): the rows with any of `issues`, but
    those in `keep` (relabelled instead), as CSV `path,sha256,issue,score,reason`. Returns how many."""
    kept = set(keep)
    chosen = [row for row in rows if set(row["issues"]) & set(issues) and row["path"] not in kept]
    _write_list(chosen, path, ("path", "sha256", "issue", "score", "reason"))
    return len(chosen)


def _write_list(rows: list[dict], path, columns: tuple[str, ...]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def summary(result: Result) -> str:
    """One line for stderr: how many pictures, how many flagged, by issue."""
    counts = collections.Counter(issue for row in result.rows for issue in row["issues"])
    by_issue = ", ".join(f"{issue} {counts[issue]}" for issue in ISSUES if counts[issue])
    return (f"audited {len(result.paths):,} pictures in {sum(result.seconds.values()):.0f} s: "
            f"{len(result.rows):,} flagged{' (' + by_issue + ')' if by_issue else ''}")
