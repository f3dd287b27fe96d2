"""Near-duplicate pictures: perceptual hashes and neighbour search in chunks, never an N x N matrix.

    >>> hashes = np.array([phash(load_image(p, size=224)) for p in paths], np.uint64)
    >>> hash_pairs(hashes, max_bits=4)          # (i, j, bits apart) for every close pair, i < j
    >>> nearest(features, k=5)                  # each row's 5 most similar rows (cosine)
    >>> unusual(features)                       # 0..1: how unlike the rest of the set each row is

Both searches compare every row with every other, a chunk of rows at a time, so memory stays
at `CHUNK_BYTES` whatever the number of pictures (500,000 pictures fit), while time grows as
its square (22,500 pictures: about a second each on 2 cores). `unusual` compares every row with
a sample of at most `REFERENCE` rows, so its time grows linearly.
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
    """(i, j, bits apart) for every pair i < j of `hashes` (uint64) at most `max_bits` apart."""
    hashes = np.asarray(hashes, np.uint64)
    step = _rows_per_chunk(len(hashes), 8)
    for start in range(0, len(hashes), step):
        block = np.bitwise_count(hashes[start:start + step, None] ^ hashes[None, :])
        rows, cols = np.nonzero(block <= max_bits)
        for i, j in zip(rows + start, cols, strict=True):
            if i < j:
                yield int(i), int(j), int(block[i - start, j])


def nearest(features: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), each (N, k): every row's `k` nearest other rows by cosine similarity,
    most similar first. Rows are normalised here; a zero row is similar to nothing (0)."""
    unit = _unit(features)
    n, k = len(unit), min(k, max(len(unit) - 1, 0))
    indices, similarities = np.zeros((n, k), np.int64), np.zeros((n, k), np.float32)
    step = _rows_per_chunk(n, 4)
    for start in range(0, n, step):
        block = unit[start:start + step] @ unit.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # never itself
        top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k else np.zeros((len(block), 0), int)
        order = np.argsort(-np.take_along_axis(block, top, axis=1), axis=1)
        indices[start:start + step] = np.take_along_axis(top, order, axis=1)
        similarities[start:start + step] = np.take_along_axis(block, indices[start:start + step], axis=1)
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
