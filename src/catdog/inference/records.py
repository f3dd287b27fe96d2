"""Prediction records: the one list of their fields, and the files they are written to.

A record is what `catdog predict` prints for one picture and the API returns:

    {"path": "a.jpg", "label": "dog", "p_dog": 0.993[, "p_pet": ..., "pet_energy": ..., "pet_score": ..., ...]}
    {"path": "b.jpg", "error": "b.jpg: not an image (...)"}

`write_records` streams them as JSON lines or CSV (and Kaggle's submission file) without
holding them: a folder of a million photos costs no more memory than one.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

ANSWER_FIELDS = ("path", "label", "p_dog")
DETECTOR_FIELDS = ("p_pet", "pet_energy", "pet_score", "pet_similarity")  # where the model has the unknown detector
CSV_FIELDS = (*ANSWER_FIELDS, *DETECTOR_FIELDS, "error")
FIELD_NOTES = {  # what each field means, for the API's schema
    "path": "the client's file name (a label only, never used on disk)",
    "label": "cat, dog or unknown",
    "p_dog": "calibrated probability that the image shows a dog",
    "p_pet": "the unknown detector: ImageNet probability mass on pets",
    "pet_energy": "the unknown detector: log-sum-exp of the pet logits",
    "pet_score": "the unknown detector: both scores weighed into one, learned against pictures of neither "
                 "(where the model has it)",
    "pet_similarity": "the unknown detector: cosine similarity of the ImageNet features to the nearest prototype "
                      "of the training pets (where the model has them)",
}
FORMATS = ("jsonl", "csv")


@dataclass
class Tally:
    """What `write_records` wrote: how many records, how many were errors, and the first error."""

    records: int = 0
    failed: int = 0
    first_error: str | None = None


def write_records(records: Iterable[dict], out: TextIO, fmt: str = "jsonl",
                  kaggle_submission: str | os.PathLike | None = None) -> Tally:
    """Writes each record to `out` as it comes (flushed, so a pipe sees it at once); returns the tally.

    `kaggle_submission`, a file name, also gets Kaggle's `id,label` file once all are written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n") if fmt == "csv" else None
    tally, answers = Tally(), []
    for record in records:
        if writer and not tally.records:
            writer.writeheader()  # not before the first answer: a run that fails first leaves stdout empty
        tally.records += 1
        if "error" in record:
            tally.failed += 1
            tally.first_error = tally.first_error or record["error"]
        elif kaggle_submission:
            answers.append((record["path"], record["p_dog"]))
        if writer:
            writer.writerow(record)
        else:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    if writer and not tally.records:
        writer.writeheader()
    if kaggle_submission:
        write_kaggle_submission(kaggle_submission, answers)
    return tally


def write_kaggle_submission(path: str | os.PathLike, answers: Iterable[tuple[str, float]]) -> None:
    """Kaggle's `id,label` with label = P(dog), id = the numeric file name (test1/123.jpg), sorted by id."""
    scored = []
    for image, p_dog in answers:
        stem = os.path.splitext(os.path.basename(image))[0]
        scored.append((int(stem) if stem.isdigit() else stem, p_dog))
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "label"])
        out.writerows(sorted(scored, key=lambda item: (isinstance(item[0], str), item[0])))
