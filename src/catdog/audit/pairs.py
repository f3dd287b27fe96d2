"""Pictures that are (nearly) the same: duplicates, conflicts (their labels differ) and leaks (their
splits differ), from the same bytes, perceptual hashes a few bits apart, or ImageNet features
nearly alike. Every search runs in chunks (`catdog.data.similar`): no N x N matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catdog.audit.checks import Flag
from catdog.data.similar import hash_pairs, nearest

PHASH_BITS = 4  # perceptual hashes at most this many bits apart (of 64): a resized or recompressed copy
FEATURE_SIMILARITY = 0.95  # cosine of the reduced ImageNet features above which two pictures are one scene
NEIGHBOURS = 5  # feature neighbours looked at for each picture
_LATER = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Pair:
    first: int
    second: int  # first < second
    closeness: float  # 0..1: 1 for the same bytes
    how: str  # "the same bytes", "perceptual hashes 2 bits apart", "features 97% alike"


def near_pairs(digests: list[str], hashes: np.ndarray, unit: np.ndarray, readable: np.ndarray) -> list[Pair]:
    """Every pair of readable pictures that are the same file, or nearly the same picture."""
    rows = np.flatnonzero(readable)
    found: dict[tuple[int, int], Pair] = {}

    def keep(i: int, j: int, closeness: float, how: str) -> None:
        i, j = sorted((int(i), int(j)))
        if (i, j) not in found or found[i, j].closeness < closeness:
            found[i, j] = Pair(i, j, closeness, how)

    first_of: dict[str, int] = {}
    for i in rows:
        if digests[i] in first_of:
            keep(first_of[digests[i]], i, 1.0, "the same bytes")
        else:
            first_of[digests[i]] = i
    for a, b, bits in hash_pairs(hashes[rows], PHASH_BITS):
        if digests[rows[a]] != digests[rows[b]]:
            keep(rows[a], rows[b], 1 - bits / 64, f"perceptual hashes {bits} bits apart")
    if len(rows) > 1:
        indices, similarities = nearest(unit[rows], NEIGHBOURS, at_least=FEATURE_SIMILARITY)
        for a, b in zip(*np.nonzero(similarities >= FEATURE_SIMILARITY), strict=True):
            i, j = rows[a], rows[indices[a, b]]
            if digests[i] != digests[j]:
                keep(i, j, float(similarities[a, b]), f"ImageNet features {similarities[a, b]:.1%} alike")
    return sorted(found.values(), key=lambda p: (p.first, p.second))


def pair_flags(pairs: list[Pair], paths: list[str], labels: list[str], splits: list[str | None]) -> list[Flag]:
    """conflict (both pictures) where labels differ; else duplicate (the second copy); leak (the copy in
    the later split) where the split `prepare` makes puts them apart."""
    flags = []
    for pair in pairs:
        i, j = pair.first, pair.second
        if labels[i] != labels[j]:
            for one, other in ((i, j), (j, i)):
                flags.append(Flag(one, "conflict", 0.9 + 0.1 * pair.closeness,
                                  f"the same picture as {paths[other]} ({pair.how}), labelled {labels[other]} "
                                  f"there", other))
        else:
            flags.append(Flag(j, "duplicate", 0.3 + 0.2 * pair.closeness, f"a copy of {paths[i]} ({pair.how})", i))
        if splits[i] and splits[j] and splits[i] != splits[j]:
            later, earlier = (i, j) if _LATER[splits[i]] > _LATER[splits[j]] else (j, i)
            flags.append(Flag(later, "leak", 0.5 + 0.2 * pair.closeness,
                              f"in {splits[later]}, nearly the same picture as {paths[earlier]} in "
                              f"{splits[earlier]} ({pair.how})", earlier))
    return flags
