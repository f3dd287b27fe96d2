"""tf.data input pipeline: references to files -> (shuffled) -> decoded, resized uint8 -> batches.

Training shuffles *references* (a path and a label each) and decodes after, in parallel, so
its memory is a few batches in flight, whatever the number of pictures. Where the pixels are
kept between epochs is `cfg.cache`:

    memory  every decoded picture in RAM: decoded once, the fastest epochs
    disk    a file of decoded pixels in the run folder, read back row by row
    none    decoded again every epoch (JPEG decoding is a small share of a training step)
    auto    memory where the decoded pixels take at most MEMORY_SHARE of this machine's RAM,
            else none (`resolve_cache` says which, and why)

A picture that cannot be decoded is dropped and recorded in `Unreadable` (never fed as a blank
image with a real label); the epoch still has `steps_per_epoch` batches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from catdog.config import Config
from catdog.data.augmentation import build_augmentation, seeded_augmentation
from catdog.data.images import ImageError, load_image
from catdog.data.prepare import Example
from catdog.data.rows import RowsFile
from catdog.data.shards import ShardSet

MEMORY_SHARE = 0.25  # cache=auto keeps decoded pixels in RAM up to this share of it


def physical_memory() -> int:
    """This machine's RAM in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def resolve_cache(cfg: Config, images: int) -> tuple[str, str]:
    """(the cache mode to use, why): `cfg.cache`, or for "auto" memory or none by the pixels' size."""
    if cfg.cache != "auto":
        return cfg.cache, f"cache={cfg.cache}"
    pixels, ram = images * cfg.image_size**2 * 3, physical_memory()
    share = pixels / ram if ram else 1.0
    fits = share <= MEMORY_SHARE
    why = (f"cache=auto: {images:,} decoded pictures take {pixels / 2**30:.1f} GiB, {share:.0%} of RAM "
           f"({'at most' if fits else 'over'} {MEMORY_SHARE:.0%})")
    return ("memory" if fits else "none"), why + f" -> {'memory' if fits else 'none (streamed)'}"


class Unreadable:
    """The pictures training could not decode, with the reason: dropped, counted, reported.

    `prepare` checked every file, so these are files that broke or went missing since.
    Shared by the decoding threads; `write` puts them in the run folder (`unreadable.json`).
    """

    def __init__(self):
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            first = path not in self._reasons
            self._reasons[path] = reason
        if first:
            warnings.warn(f"dropped an unreadable training picture: {reason}", stacklevel=2)

    def __len__(self) -> int:
        return len(self._reasons)

    def write(self, path: str | os.PathLike) -> None:
        with self._lock:
            items = [{"path": p, "reason": r} for p, r in sorted(self._reasons.items())]
        Path(path).write_text(json.dumps({"dropped": len(items), "files": items}, indent=2) + "\n")


def _decoder(image_size: int, unreadable: Unreadable | None):
    """A tf.data map function: path -> (uint8 pixels, readable?)."""

    def decode(path: bytes):
        try:
            return load_image(path.decode(), size=image_size), True
        except ImageError as error:
            if unreadable is not None:
                unreadable.add(path.decode(), str(error))
            return np.zeros((image_size, image_size, 3), np.uint8), False

    def decode_tf(path: tf.Tensor, label: tf.Tensor):
        pixels, ok = tf.numpy_function(decode, [path], (tf.uint8, tf.bool), stateful=False)
        pixels.set_shape((image_size, image_size, 3))
        ok.set_shape(())
        return pixels, label, ok

    return decode_tf


def _readable(pixels, label, ok):
    return ok


def _pixels_and_label(pixels, label, ok):
    return pixels, label


class _DiskCache:
    """Decoded pixels of `paths` in one file of fixed-size rows (`RowsFile`), written once in
    parallel, read row by row.

    `<file>.u8` holds the rows, `<file>.json` the paths' digest, the image size and the rows
    that could not be decoded; a file made for other pictures or another size is made again.
    """

    def __init__(self, file: str | os.PathLike, paths: Sequence[str], image_size: int, unreadable: Unreadable | None):
        file = Path(file)
        rows_file, meta_file = file.with_name(file.name + ".u8"), file.with_name(file.name + ".json")
        self.shape = (image_size, image_size, 3)
        key = {"paths": hashlib.sha256("\n".join(paths).encode()).hexdigest(), "shape": [len(paths), *self.shape]}
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if {k: meta.get(k) for k in key} != key or not rows_file.exists():
            meta_file.unlink(missing_ok=True)  # written last: its presence says the rows are whole
            meta = {**key, "bad": self._fill(RowsFile(rows_file, self.shape, np.uint8, len(paths), create=True),
                                             paths, image_size)}
            meta_file.write_text(json.dumps(meta) + "\n")
        for i in meta["bad"]:
            if unreadable is not None:
                unreadable.add(paths[i], f"{paths[i]}: could not be decoded when the disk cache was made")
        self.good = np.setdiff1d(np.arange(len(paths)), meta["bad"]).astype(np.int64)
        self.rows = RowsFile(rows_file, self.shape, np.uint8, len(paths))

    @staticmethod
    def _fill(rows: RowsFile, paths: Sequence[str], image_size: int) -> list[int]:
        def write(i: int) -> int | None:
            try:
                rows.write(i, load_image(paths[i], size=image_size)[None])
                return None
            except ImageError:
                return i

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return sorted(i for i in pool.map(write, range(len(paths))) if i is not None)

    def read(self, index: tf.Tensor, label: tf.Tensor):
        pixels = tf.numpy_function(self.rows.row, [index], tf.uint8, stateful=False)
        pixels.set_shape(self.shape)
        return pixels, label, tf.constant(True)


class _Files:
    """Pictures decoded by the project's loader from their files (or the disk cache's rows):
    `in_order`, or `shuffled` by a seeded shuffle of the references, decoded after."""

    def __init__(self, references: tf.data.Dataset, load, count: int):
        self.references, self.load, self.count = references, load, count

    def in_order(self) -> tf.data.Dataset:
        return self._decoded(self.references)

    def shuffled(self, seed, reshuffle: bool) -> tf.data.Dataset:
        return self._decoded(self.references.shuffle(self.count, seed=seed, reshuffle_each_iteration=reshuffle))

    def _decoded(self, references: tf.data.Dataset) -> tf.data.Dataset:
        # deterministic: the order stays the references' (a seeded shuffle's, or the examples')
        ds = references.map(self.load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.filter(_readable).map(_pixels_and_label)


class _InMemory:
    """Another source's pictures decoded once and kept in RAM; a full-size shuffle of them gives
    the order a shuffle of the files' references does for the same seed."""

    def __init__(self, source, count: int):
        self.pixels, self.count = source.in_order().cache(), count

    def in_order(self) -> tf.data.Dataset:
        return self.pixels

    def shuffled(self, seed, reshuffle: bool) -> tf.data.Dataset:
        return self.pixels.shuffle(self.count, seed=seed, reshuffle_each_iteration=reshuffle)


def _source(examples: Sequence[Example], cfg: Config, mode: str, cache_file, unreadable: Unreadable | None):
    """Where the pictures come from (`cfg.shards`, the disk cache, or the files) and, for
    cache=memory, kept."""
    paths = [str(e.path) for e in examples]
    labels = np.array([e.label for e in examples], dtype=np.float32)
    if cfg.shards:
        source = ShardSet.locate(cfg.shards, examples)
    elif mode == "disk":
        if cache_file is None:
            raise ValueError("cache='disk' needs a cache_file")
        disk = _DiskCache(cache_file, paths, cfg.image_size, unreadable)
        source = _Files(tf.data.Dataset.from_tensor_slices((disk.good, labels[disk.good])), disk.read, len(paths))
    else:
        source = _Files(tf.data.Dataset.from_tensor_slices((paths, labels)), _decoder(cfg.image_size, unreadable),
                        len(paths))
    return _InMemory(source, len(paths)) if mode == "memory" else source


def make_dataset(
    examples: Sequence[Example],
    cfg: Config,
    training: bool,
    cache_file: str | Path | None = None,
    epochs: tuple[int, int] | None = None,
    unreadable: Unreadable | None = None,
    steps: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 pixels in 0..255, float32 label) for training or evaluation.

    Images are decoded by the project's one loader, or read from `cfg.shards` (`catdog.data.shards`);
    `cfg.cache` (module docstring) says where they are kept between epochs ("disk" needs
    `cache_file`; shards are streamed or kept in memory). Shuffling and augmentation happen for
    `training` only; evaluation order is the order of `examples`, less unreadable pictures.

    With `epochs=(first, end)` (training), the dataset holds epochs first..end-1 back to back,
    `steps` batches each (default `steps_per_epoch(examples, cfg)`; multi-worker shares of
    different sizes need one count), every epoch in an order that depends on `cfg.seed` and its
    number alone (the same in every cache mode of files; shards streamed mix in a bounded
    buffer, so their order is another): a run resumed at epoch k sees the data an
    uninterrupted one would. Without it, the order is reshuffled every iteration from a seed
    (one pass per epoch).

    Unreadable pictures are dropped and recorded in `unreadable`, and the set keeps its length
    all the same, wrapping around to its start: a training epoch has `steps_per_epoch` batches,
    an evaluation pass as many pictures as `examples` (Keras and multi-worker steps rely on a
    known count). A blank picture is never fed.
    """
    count = len(examples)
    mode, _ = resolve_cache(cfg, count)
    source = _source(examples, cfg, mode, cache_file, unreadable)

    # Training batches are all full: TF 2.21's oneDNN kernels have crashed on a smaller last
    # batch (strided 1x1 conv gradients), and a shuffled set loses no example for good.
    full_batches = training and count >= cfg.batch_size
    steps = steps or steps_per_epoch(examples, cfg)
    if training and epochs is not None:
        def epoch_of(epoch: int) -> tf.data.Dataset:
            one_pass = source.shuffled(epoch_seed(cfg, epoch), reshuffle=False)
            # Dropped pictures would leave the epoch short of `steps`: wrap around to its start.
            batches = (one_pass.repeat() if full_batches else one_pass).batch(cfg.batch_size, full_batches)
            return batches.take(steps).enumerate().map(lambda step, xy: ((tf.constant(epoch, tf.int64), step), xy))

        ds = functools.reduce(tf.data.Dataset.concatenate, map(epoch_of, range(*epochs)))
        ds = ds.map(lambda at, xy: (at, (tf.cast(xy[0], tf.float32), xy[1])), num_parallel_calls=tf.data.AUTOTUNE)
        if cfg.augment:
            ds = ds.map(seeded_augmentation(build_augmentation(cfg)))  # sequential: one seed state
        return ds.map(lambda at, xy: xy).prefetch(tf.data.AUTOTUNE)
    if training:
        ds = source.shuffled(cfg.seed, reshuffle=True)
        ds = (ds.repeat() if full_batches else ds).batch(cfg.batch_size, full_batches).take(steps)
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))  # a known length: progress bars have a total
    else:
        # repeat() ends at once on an empty pass, so a set with no readable picture gives nothing.
        ds = source.in_order().repeat().take(count).batch(cfg.batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-count // cfg.batch_size)))
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and cfg.augment:
        augment = build_augmentation(cfg)
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    # Prefetch so decoding and augmentation of the next batch overlap the current step.
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_seed(cfg: Config, epoch: int) -> int:
    """The seed of training epoch `epoch`'s order. A Python int: a tensor one fails in TF's seed
    arithmetic when the global seed is 0."""
    return (cfg.seed * 1_000_003 + epoch) % 2**63


def epoch_order(n: int, cfg: Config, epoch: int) -> np.ndarray:
    """The order in which training epoch `epoch` shows `n` items: `make_dataset`'s, as indices
    (a seeded shuffle's permutation depends on its seed and length, not on what it shuffles)."""
    ds = tf.data.Dataset.range(n).shuffle(max(n, 1), seed=epoch_seed(cfg, epoch), reshuffle_each_iteration=False)
    return np.fromiter(ds.as_numpy_iterator(), np.int64, count=n)


def steps_per_epoch(examples: Sequence[Example], cfg: Config) -> int:
    """Training batches in one epoch (all full, unless the set is smaller than one batch)."""
    return max(1, len(examples) // cfg.batch_size)
