"""Which labelled pictures are the same, and which split each goes to.

    >>> seen, skipped, conflicts, split_of = split_pictures(labelled, checks, "catdog-v1", 0.1, 0.1)

The first copy of each picture (by SHA-256) is kept; a later copy under the same label is a
duplicate, under the other label a conflict naming both files. Each class is then cut into
test / val / train by a salted hash of the pictures' content, so the split is the same on every
machine and in any folder; near-duplicates can be kept in one split (`near_duplicate_bits`).
`prepare` writes the result; `catdog audit` computes it to judge leaks.
"""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np

from catdog.data.similar import groups as linked_groups
from catdog.data.similar import hash_pairs


def assign_splits(groups: dict[str, list[str]], seed: str, val: float, test: float,
          together: list[list[str]] = ()) -> dict[str, str]:
    """Per class, orders files by a salted hash of their content and cuts test/val/train.

    Depends only on the bytes of the files, so it is the same on every machine, in any folder,
    and exact copies of one picture always land in the same split. Each list of digests in
    `together` (near-duplicates) then goes whole into the split of its first member in that order.
    """
    def key(digest: str) -> str:
        return hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()

    split_of = {}
    for digests in groups.values():
        ordered = sorted(digests, key=key)
        n_test, n_val = round(len(ordered) * test), round(len(ordered) * val)
        for i, digest in enumerate(ordered):
            split_of[digest] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    for members in together:
        chosen = split_of[min(members, key=key)]
        split_of.update((digest, chosen) for digest in members)
    return split_of


def deduplicate(labelled: list[tuple[Path, str]], checks: list[tuple]) -> tuple[dict, list, list]:
    """(the first usable copy of each picture: {digest: (path, label)}, skipped files with reasons,
    conflicts). A copy under the other label is a conflict: both files are named, and the first keeps
    its place (so a split made before stays as it was) until an exclusion list settles it."""
    seen, skipped, conflicts = {}, [], []
    for (rel, label), (digest, reason, *_) in zip(labelled, checks, strict=True):
        if reason:
            skipped.append((str(rel), reason))
        elif digest in seen and seen[digest][1] != label:
            first, first_label = seen[digest]
            skipped.append((str(rel), f"conflict with {first}: the same picture, labelled {first_label} there "
                                      f"and {label} here"))
            conflicts.append(dict(paths=[first, str(rel)], labels=[first_label, label]))
        elif digest in seen:
            skipped.append((str(rel), f"duplicate of {seen[digest][0]}"))
        else:
            seen[digest] = (str(rel), label)
    return seen, skipped, conflicts


def near_duplicate_groups(hashes: dict[str, int], max_bits: int) -> list[list[str]]:
    """Digests whose perceptual hashes are chained within `max_bits` of each other, in groups of two or more."""
    digests = sorted(hashes)
    found = linked_groups(len(digests), hash_pairs(np.array([hashes[d] for d in digests], np.uint64), max_bits))
    members = collections.defaultdict(list)
    for digest, group in zip(digests, found, strict=True):
        members[group].append(digest)
    return [m for m in members.values() if len(m) > 1]


def split_pictures(labelled: list[tuple[Path, str]], checks: list[tuple], seed: str, val: float, test: float,
                   near_duplicate_bits: int = 0) -> tuple[dict, list, list, dict[str, str]]:
    """`deduplicate`'s (first copies, skipped, conflicts), then each first copy's split: {digest: split}.

    `checks` are (digest, reason, perceptual hash) per labelled file; the hashes are read only
    with `near_duplicate_bits` > 0, to keep near-duplicates in one split.
    """
    seen, skipped, conflicts = deduplicate(labelled, checks)
    by_label = collections.defaultdict(list)
    for digest, (_, label) in seen.items():
        by_label[label].append(digest)
    together = []
    if near_duplicate_bits:
        hashes = {check[0]: check[2] for check in checks if check[0] in seen}
        together = near_duplicate_groups(hashes, near_duplicate_bits)
    return seen, skipped, conflicts, assign_splits(by_label, seed, val, test, together)
