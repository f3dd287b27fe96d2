"""Near-duplicate pictures: perceptual hashes and neighbour search in chunks, never an N x N matrix.

    >>> hashes = np.array([phash(load_image(p, size=224)) for p in paths], np.uint64)
    >>> hash_pairs(hashes, max_bits=4)          # (i, j, bits apart) for every close pair, i < j
    >>> nearest(features, k=5)                  # each row's 5 most similar rows (cosine)
    >>> unusual(features)                       # 0..1: how unlike the rest of the set each row is

`nearest` compares every row with every other, a chunk of rows at a time, so memory stays at
`CHUNK_BYTES` whatever the number of pictures (500,000 pictures fit), while time grows as its
square; `hash_pairs` compares only hashes that share a part (multi-index hashing), and `unusual`
compares every row with a sample of at most `REFERENCE` rows: both grow about linearly.
"""

from __future__ import annotations

from collections.abc import Iterator

import imagehash
import numpy as np
from PIL import Image

CHUNK_BYTES = 2**27  # the block of distances computed at once (128 MiB)
REFERENCE = 20_000  # rows `unusual` compares each row with (a seeded sample where there are more)
NEIGHBOUR_SHARE = 0.002  # `unusual`'s k: this share of the reference rows (45 of 22,500), at least 5


def phash(pixels: np.ndarray) -> int:
    """The 64-bit perceptual hash (imagehash's pHash: the signs of the lowest 8 x 8 DCT
    frequencies of a 32 x 32 grey copy) of (H, W, 3) uint8 pixels, as an unsigned integer.

    A recompressed, resized, slightly recoloured copy differs in a few bits; another picture in
    about 32.
    """
    bits = imagehash.phash(Image.fromarray(np.asarray(pixels))).hash.reshape(-1)
    return int(np.packbits(bits).view(">u8")[0])


def _rows_per_chunk(n: int, item_bytes: int) -> int:
    return max(1, min(n, CHUNK_BYTES // max(1, n * item_bytes)))


def hash_pairs(hashes: np.ndarray, max_bits: int) -> Iterator[tuple[int, int, int]]:
    """(i, j, bits apart) for every pair i < j of `hashes` (uint64) at most `max_bits` apart, in order.

    Multi-index hashing (Norouzi, Punjani & Fleet, 2012): the 64 bits are cut into `max_bits + 1`
    parts, and two hashes at most `max_bits` apart are equal in at least one part, so only hashes
    that share a part's value are compared: about N x (N / 2^13) comparisons for 4 bits, where all
    pairs were N^2 (500,000 random hashes: 19 s, a crowd of 2,500 equal ones included).
    """
    hashes = np.asarray(hashes, np.uint64)
    found: dict[tuple[int, int], int] = {}
    edges = np.linspace(0, 64, max_bits + 2).astype(int)
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        part = (hashes >> np.uint64(low)) & np.uint64((1 << int(high - low)) - 1)
        order = np.argsort(part, kind="stable")
        starts = np.flatnonzero(np.r_[True, part[order][1:] != part[order][:-1]])
        for first, end in zip(starts, np.r_[starts[1:], len(order)], strict=True):
            if end - first > 1:
                _close_within(np.sort(order[first:end]), hashes, max_bits, found)
    for (i, j), bits in sorted(found.items()):
        yield i, j, bits


def _close_within(members: np.ndarray, hashes: np.ndarray, max_bits: int, found: dict) -> None:
    """Adds to `found` every pair of `members` (ascending indices) at most `max_bits` apart, a chunk of
    rows at a time (a part shared by many pictures, blank ones, is a large group)."""
    step = _rows_per_chunk(len(members), 8)
    for start in range(0, len(members), step):
        rows = members[start:start + step]
        block = np.bitwise_count(hashes[rows, None] ^ hashes[None, members])
        for r, c in zip(*np.nonzero(block <= max_bits), strict=True):
            if rows[r] < members[c]:
                found[int(rows[r]), int(members[c])] = int(block[r, c])


def nearest(features: np.ndarray, k: int = 5, at_least: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), each (N, k): every row's `k` nearest other rows by cosine similarity,
    most similar first. Rows are normalised here; a zero row is similar to nothing (0).

    With `at_least`, only neighbours that similar are wanted: a row with none is not sorted (its
    entries are -1), which makes a search for near-duplicates, where few rows have any, several
    times faster on many pictures (sorting each row's similarities costs more than computing them)."""
    unit = _unit(features)
    n, k = len(unit), min(k, max(len(unit) - 1, 0))
    indices, similarities = np.full((n, k), -1, np.int64), np.full((n, k), -1.0, np.float32)
    step = _rows_per_chunk(n, 4)
    for start in range(0, n, step):
        block = unit[start:start + step] @ unit.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # never itself
        chosen = np.flatnonzero(block.max(axis=1) >= at_least) if k and np.isfinite(at_least) else \
            np.arange(len(block) if k else 0)
        if len(chosen) < len(block):  # else all rows: no copy of the block
            block = block[chosen]
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(block, top, axis=1), axis=1)
        found = np.take_along_axis(top, order, axis=1)
        indices[start + chosen] = found
        similarities[start + chosen] = np.take_along_axis(block, found, axis=1)
    return indices, similarities


def groups(n: int, pairs) -> np.ndarray:
    """A group number for each of `n` items, linking every (i, j, ...) of `pairs` (union-find):
    items chained by pairs share one, the smallest index in the group."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, *_ in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(n)])


def unusual(features: np.ndarray, copies: float = 0.95, seed: int = 0) -> np.ndarray:
    """(N,) in 0..1: how unlike the rest of the set each row is, as the share of rows less unusual.

    A row's closeness to the set is its cosine similarity to its k-th nearest row (k: NEIGHBOUR_SHARE
    of the rows compared with, at least 5), not counting itself nor its copies (rows at least
    `copies` alike), so a picture repeated a few times is not made ordinary by its own copies. Rows
    are compared with all rows, or with a seeded sample of REFERENCE of them where there are more.
    """
    features = np.asarray(features)
    n = len(features)
    if n < 2:
        return np.zeros(n)
    sample = np.sort(np.random.default_rng(seed).choice(n, REFERENCE, replace=False)) if n > REFERENCE else None
    reference = _unit(features if sample is None else features[sample])
    k = min(len(reference) - 1, max(5, round(NEIGHBOUR_SHARE * len(reference))))
    closeness = np.zeros(n, np.float32)
    step = _rows_per_chunk(len(reference), 4)
    for start in range(0, n, step):
        block = _unit(features[start:start + step]) @ reference.T
        block[block >= copies] = -np.inf  # itself (1.0) and its copies
        closeness[start:start + step] = -np.partition(-block, k - 1, axis=1)[:, k - 1]
    closeness[~np.isfinite(closeness)] = -1.0
    order = np.argsort(-closeness, kind="stable")  # the most ordinary first
    share = np.empty(n)
    share[order] = np.arange(n) / (n - 1)
    return share


def _unit(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)
