"""The one pass of `catdog audit` over the pictures: each file read and hashed, decoded once to the
model's square, and from those pixels its pixel statistics, its perceptual hash and one forward
pass of the ImageNet view (pooled features, the 1000 logits, cat and dog mass per window, and the
fine-tuned classifier's dog logit per window).

    >>> looks = scan(["a.jpg", "b.jpg"], load_view(None))
    >>> looks.features.shape, looks.errors            # (2, 1280), [None, None]

What is seen of a picture is kept under its SHA-256 in `$CATDOG_HOME/audit/<model key>/`, written
in parts as the pass goes (an interrupted pass keeps what it saw), so a re-run looks only at new
or changed pictures: seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog.audit.view import audit_home
from catdog.console import progress_bar
from catdog.data.images import ImageError, load_image
from catdog.data.quality import STATS, pixel_stats
from catdog.data.similar import phash
from catdog.inference.predictor import chunked, decoded_ahead
from catdog.models.pet_classes import CAT_CLASSES, DOG_CLASSES

FIELDS = ("features", "logits", "regions", "tuned", "phash", "stats")  # what is kept of each picture
PART = 4096  # pictures per cache file


@dataclass
class Looks:
    """What the pass saw, one row per path; an unreadable file has its `errors` entry and zeros."""

    digests: list[str]  # SHA-256 of the bytes ("" where unreadable)
    errors: list[str | None]
    features: np.ndarray  # (N, C) float16, pooled ImageNet features
    logits: np.ndarray  # (N, 1000) float16, the ImageNet classifier's
    regions: np.ndarray  # (N, windows, 2) float16: cat mass and dog mass in each window
    tuned: np.ndarray  # (N, windows) float16: the fine-tuned classifier's dog logit in each window
    phash: np.ndarray  # (N,) uint64
    stats: np.ndarray  # (N, len(STATS)) float32: `catdog.data.quality.pixel_stats`


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - top).sum(axis=axis, keepdims=True)).squeeze(axis) + top.squeeze(axis)


def pet_masses(logits: np.ndarray, rows: int = 2**14) -> np.ndarray:
    """(..., 2): the softmax mass of the 5 ImageNet cats and of the 118 dogs, from (..., 1000) logits
    (`rows` at a time: the float32 copies of 500,000 pictures' logits would take 4 GB)."""
    logits = np.asarray(logits)
    masses = np.zeros((*logits.shape[:-1], 2), np.float32)
    for start in range(0, len(logits), rows):
        chunk = logits[start:start + rows].astype(np.float32)
        total = _logsumexp(chunk)
        masses[start:start + rows] = np.stack([np.exp(_logsumexp(chunk[..., list(classes)]) - total)
                                               for classes in (CAT_CLASSES, DOG_CLASSES)], axis=-1)
    return masses


class LookCache:
    """Looks kept by content hash in .npz parts; a part is written every `PART` new pictures."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index, self.parts, self.fresh = {}, [], []
        for part in sorted(folder.glob("part-*.npz")) if folder.is_dir() else ():
            with np.load(part) as stored:
                arrays = {name: stored[name] for name in ("digests", *FIELDS)}
            self.index.update((d, (len(self.parts), i)) for i, d in enumerate(arrays["digests"].astype(str)))
            self.parts.append(arrays)

    def get(self, digest: str) -> dict | None:
        where = self.index.get(digest)
        return None if where is None else {name: self.parts[where[0]][name][where[1]] for name in FIELDS}

    def add(self, digest: str, look: dict) -> None:
        self.fresh.append((digest, look))
        if len(self.fresh) >= PART:
            self.flush()

    def flush(self) -> None:
        if not self.fresh:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.stack([look[name] for _, look in self.fresh]) for name in FIELDS}
        arrays["digests"] = np.array([digest for digest, _ in self.fresh], "S64")
        name = f"part-{time.time_ns()}-{os.getpid()}"
        np.savez(self.folder / f"{name}.partial.npz", **arrays)
        (self.folder / f"{name}.partial.npz").rename(self.folder / f"{name}.npz")  # whole parts only
        self.index.update((digest, (len(self.parts), i)) for i, (digest, _) in enumerate(self.fresh))
        self.parts.append(arrays)
        self.fresh = []


def _read(path: str, size: int, cache: LookCache) -> tuple:
    """(digest, look or None, pixels or None, error or None) for one file; decoded only when not cached."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        look = cache.get(digest)
        if look is not None:
            return digest, look, None, None
        pixels = load_image(path, size=size)
    except ImageError as error:
        return "", None, None, error.reason
    except OSError as error:
        return "", None, None, error.strerror or str(error)
    stats = pixel_stats(pixels)
    return digest, dict(phash=np.uint64(phash(pixels)), stats=np.array([stats[k] for k in STATS], np.float32)), \
        pixels, None


def scan(paths: list[str], view, batch_size: int = 64, threads: int | None = None) -> Looks:
    """Looks at every file of `paths` once (or finds it in the cache); rows in the order of `paths`."""
    cache = LookCache(audit_home() / view.key)
    threads = threads or os.cpu_count() or 2
    looks, errors, digests = [], [], []
    bar = progress_bar(total=len(paths), unit="img", desc="audit", delay=2)
    for read in decoded_ahead(chunked(paths, batch_size), lambda p: _read(p, view.image_size, cache), threads):
        new = [r for r in read if r[2] is not None]
        if new:
            out = view.run(np.stack([r[2] for r in new]))
            regions = pet_masses(out["region_logits"]).astype(np.float16)
            for at, (digest, look, _, _) in enumerate(new):
                look.update(features=out["features"][at].astype(np.float16),
                            logits=out["imagenet_logits"][at].astype(np.float16), regions=regions[at],
                            tuned=np.asarray(out["tuned_region_logits"][at], np.float16))
                cache.add(digest, look)
        for digest, look, _, error in read:
            digests.append(digest)
            errors.append(error)
            looks.append(look)
        bar.update(len(read))
    cache.flush()
    bar.close()
    return _stacked(digests, errors, looks)


def _stacked(digests: list[str], errors: list, looks: list[dict | None]) -> Looks:
    template = next((look for look in looks if look is not None), None)
    arrays = {}
    for name in FIELDS:
        blank = np.zeros_like(template[name]) if template is not None else np.zeros(0, np.float32)
        arrays[name] = np.stack([blank if look is None else look[name] for look in looks]) if looks else \
            np.zeros((0, *blank.shape), blank.dtype)
    return Looks(digests, errors, **arrays)
