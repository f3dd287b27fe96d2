"""A person's corrections to a data set, applied by `prepare` after the split is made: pictures to
leave out (`exclude=FILE`) and labels to change (`relabel=FILE`).

    >>> corrections = Corrections(exclude="exclude.csv", relabel="relabel.csv")
    >>> skipped, relabelled = corrections.apply(seen)        # seen: {sha256: (path, label)}, changed in place

The lists are what `catdog audit --exclude-out` / `--relabel-out` write (CSV with `path` and
`sha256` columns, and `new_label` for a relabel list), or written by hand: one path or SHA-256 a
line for an exclusion list (# starts a comment). A picture is matched by its content first, so a
list still holds after the data moves.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path

from catdog.errors import DataError

_DIGEST = re.compile(r"[0-9a-f]{64}")
LABELS = ("cat", "dog")


def _lines(path: Path, key: str) -> list[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{key}={path}: not a readable list of pictures ({error})") from None
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _key(value: str) -> str:
    """A path as written; a SHA-256 digest in lower case."""
    value = value.strip()
    return value.lower() if _DIGEST.fullmatch(value.lower()) else value


def read_exclusions(path: str | os.PathLike) -> set[str]:
    """The SHA-256 digests and relative paths an exclusion list names."""
    lines = _lines(Path(path), "exclude")
    if lines and {"path", "sha256"} & set(next(csv.reader(lines[:1]))):
        return {_key(v) for row in csv.DictReader(lines) for v in (row.get("sha256"), row.get("path")) if v}
    return {_key(line) for line in lines}


def read_relabels(path: str | os.PathLike) -> dict[str, str]:
    """{SHA-256 or relative path: new label} from a CSV with `path` and/or `sha256`, and `new_label`."""
    lines = _lines(Path(path), "relabel")
    rows = list(csv.DictReader(lines))
    if not lines or "new_label" not in (rows[0] if rows else {}):
        raise DataError(f"relabel={path}: expected a CSV with columns path or sha256, and new_label "
                        f"(`catdog audit --relabel-out`)")
    changes = {}
    for row in rows:
        label = (row["new_label"] or "").strip().lower()
        if label not in LABELS:
            raise DataError(f"relabel={path}: new_label {row['new_label']!r} for {row.get('path')}: "
                            f"expected cat or dog")
        changes.update((_key(key), label) for key in (row.get("sha256"), row.get("path")) if key)
    return changes


def file_sha256(path: str | os.PathLike, key: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise DataError(f"{key}={path}: {error.strerror or error}") from None


class Corrections:
    """The lists given to `prepare`; `settings` names them (and their hashes) only when given, so the
    settings of every split made without them stay as they were."""

    def __init__(self, exclude: str | os.PathLike = "", relabel: str | os.PathLike = ""):
        self.lists = {key: Path(path) for key, path in (("exclude", exclude), ("relabel", relabel)) if path}
        self.settings = {}
        for key, path in self.lists.items():
            self.settings.update({key: str(path.resolve()), f"{key}_sha256": file_sha256(path, key)})

    def apply(self, seen: dict[str, tuple[str, str]]) -> tuple[list[tuple[str, str]], list[dict]]:
        """Drops the excluded pictures from `seen` and changes the relabelled ones' labels; returns
        (skipped files with their reason, [{"path", "label", "new_label"}])."""
        excluded = read_exclusions(self.lists["exclude"]) if "exclude" in self.lists else set()
        changes = read_relabels(self.lists["relabel"]) if "relabel" in self.lists else {}
        skipped, relabelled = [], []
        for digest, (rel, label) in list(seen.items()):
            if digest in excluded or rel in excluded:
                skipped.append((rel, f"excluded by {self.lists['exclude'].name}"))
                del seen[digest]
            elif (new := changes.get(digest, changes.get(rel))) and new != label:
                seen[digest] = (rel, new)
                relabelled.append(dict(path=rel, label=label, new_label=new))
        return skipped, relabelled
