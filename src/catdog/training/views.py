"""What fine-tuning trains on: pictures, or the backbone's frozen bottom cached for a few views of each.

Fine-tuning trains the top `fine_tune_layers` layers of the backbone (and the head); the layers
below give the same output for the same picture at every step. Two sources of batches, the
same interface (`train.py` holds either):

`Pictures`   the whole network runs at every step on freshly augmented pictures (`cached_views=0`).
`Views`      `cached_views=V`: the frozen bottom runs once on V views of every training picture
             (view 0 as it is, the others augmented, seeded by view and batch) and on every
             validation picture as it is; its output, the maps at the fine-tuning boundary, is kept
             in a file (EfficientNet-Lite0's top 42 layers start at 7x7x192: 18 KB a view in
             float16). Each epoch then trains the top alone, epoch e on view e mod V: augmentation
             varies by view rather than by step. The pictures are decoded once for all phases, and
             the head is fitted on view 0, the pictures as they are (as `Pictures` fits it).
             The bottom runs in LiteRT (`_litert_forward`: the same maps as Keras's, 2.2x as fast).

The views' files are in the run folder (`cache-views-train.f16`, with a `.json` saying what it
holds), read back row by row: memory does not grow with the number of pictures, and a resumed
run reads them instead of computing them again. `train` deletes them when the run ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog import console
from catdog.config import Config
from catdog.data.augmentation import build_augmentation, seeded_augmentation
from catdog.data.pipeline import Unreadable, epoch_order, make_dataset, steps_per_epoch
from catdog.data.prepare import Example
from catdog.data.rows import RowsFile
from catdog.models.builders import backbone_input, split_backbone

VIEW_DTYPE = np.float16  # the maps' range (|x| < 100 after BatchNorm) with 11 bits of precision


def features_and_labels(extractor: keras.Model, dataset, total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`extractor`'s output (pooled backbone features) and the labels over a dataset of (input, label)
    batches, in order (`make_dataset` has put another picture in an unreadable one's place)."""
    # A traced call, not predict(): the same under a distribution strategy's scope as without.
    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    feats, labels = [], []
    for x, y in console.progress_bar(dataset, total=total, unit="batch", desc="features", delay=2):
        feats.append(np.asarray(forward(x)))
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


class Pictures:
    """Batches of pictures: the model as it is, decoded and augmented pictures at every step."""

    def __init__(self, model: keras.Model, cfg: Config, run_dir: Path, train_ex: Sequence[Example],
                 val_ex: Sequence[Example], unreadable: Unreadable):
        self.model, self.cfg, self.run_dir, self.unreadable = model, cfg, run_dir, unreadable
        self.train_ex, self.val_ex = train_ex, val_ex

    @property
    def trained(self) -> keras.Model:
        """The model that `fit` trains: here the whole classifier."""
        return self.model

    def head_features(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """(features, labels) of the training and validation pictures, as they are (one pass each)."""
        plain = dataclasses.replace(self.cfg, cache="none")  # one pass each, so nothing to cache
        return tuple(
            features_and_labels(self.model.get_layer("features"),
                            make_dataset(ex, plain, training=False, unreadable=self.unreadable),
                            total=math.ceil(len(ex) / self.cfg.batch_size))
            for ex in (self.train_ex, self.val_ex))

    def train_batches(self, first: int, end: int) -> tf.data.Dataset:
        return make_dataset(self.train_ex, self.cfg, training=True, cache_file=self.run_dir / "cache-train",
                            epochs=(first, end), unreadable=self.unreadable)

    def val_batches(self) -> tf.data.Dataset:
        return make_dataset(self.val_ex, self.cfg, training=False, cache_file=self.run_dir / "cache-val",
                            unreadable=self.unreadable)


class Views(Pictures):
    """Batches of cached maps at the fine-tuning boundary (module docstring); `trained` is the top."""

    def __init__(self, model: keras.Model, cfg: Config, run_dir: Path, train_ex: Sequence[Example],
                 val_ex: Sequence[Example], unreadable: Unreadable):
        super().__init__(model, cfg, run_dir, train_ex, val_ex, unreadable)
        features = model.get_layer("features")
        _, trunk, self.tuned_top = split_backbone(features.get_layer("backbone"), cfg.fine_tune_layers)
        pixels = keras.Input((None, None, 3), name="pixels")
        self.bottom = keras.Model(pixels, trunk(backbone_input(features, pixels), training=False), name="bottom")
        # Frozen for good (its layers are the classifier's): BatchNorm keeps its statistics.
        self.bottom.trainable = False
        maps = keras.Input(self.bottom.output.shape[1:], name="maps")
        # The same layers as the classifier's: training the top trains the classifier.
        self.top = keras.Model(maps, model.get_layer("head")(self.tuned_top(maps, training=False)), name="top")

    @property
    def trained(self) -> keras.Model:
        return self.top

    @functools.cached_property
    def train_views(self) -> ViewFile:
        return ViewFile(self.run_dir / "cache-views-train", self.bottom, self.train_ex, self.cfg,
                        self.cfg.cached_views, self.unreadable)

    @functools.cached_property
    def val_views(self) -> ViewFile:
        return ViewFile(self.run_dir / "cache-views-val", self.bottom, self.val_ex, self.cfg, 1, self.unreadable)

    def head_features(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        return tuple(features_and_labels(self.tuned_top, views.in_order(self.cfg.batch_size),
                                     total=math.ceil(views.n / self.cfg.batch_size))
                     for views in (self.train_views, self.val_views))

    def train_batches(self, first: int, end: int) -> tf.data.Dataset:
        return self.train_views.epochs(self.cfg, first, end)

    def val_batches(self) -> tf.data.Dataset:
        return self.val_views.in_order(self.cfg.batch_size)


def cached(cfg: Config) -> bool:
    """Whether `cfg` fine-tunes on cached views: a backbone, with layers to fine-tune and `cached_views`."""
    return cfg.model != "scratch" and cfg.cached_views > 0 and cfg.fine_tune_layers > 0


def source(model: keras.Model, cfg: Config, run_dir: Path, train_ex, val_ex, unreadable: Unreadable) -> Pictures:
    """What this run fine-tunes on: `Views` where `cached(cfg)`, else `Pictures`."""
    return (Views if cached(cfg) else Pictures)(model, cfg, run_dir, train_ex, val_ex, unreadable)


@contextlib.contextmanager
def _litert_forward(bottom: keras.Model, size: int):
    """`bottom` in inference mode as LiteRT runs it: pixels (N, size, size, 3) -> maps.

    LiteRT's XNNPACK kernels run Lite0's bottom 2.2x as fast as Keras here (285 against 130
    pictures/s, batch 32, inference mode), after a conversion of 6 s; the maps agree with
    Keras's within 5e-5 (float16 keeps them to 0.008). Its input is uint8: augmented pixels are
    rounded to whole numbers, as a saved picture's are."""
    from catdog.export.converters import float32_copy, litert_copy
    from catdog.inference.runtime import LiteRTRuntime

    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "bottom.tflite"
        with console.quiet_stderr():  # the converter's and LiteRT's native log lines
            flat.write_bytes(litert_copy(float32_copy(bottom), size, float16_weights=False))
            runtime = LiteRTRuntime(flat)
        (name,) = runtime.output_names
        yield lambda pixels: runtime.run(pixels)[name]


class ViewFile:
    """`count` views of every example through `bottom`, in `<file>.f16` (row v*n + i: view v of
    example i) and `<file>.json` (what they were made from, and the labels); made once.

    View 0 is the picture as it is. Views 1.. are augmented as a fine-tuning step's pictures are
    (where `cfg.augment`; seeded by the view and the batch, as training's draws are by the epoch
    and the step). Every view goes through the bottom in inference mode: a backbone's own
    dropout there (EfficientNet's drop-connect) is not part of a view (measured: no loss of
    accuracy, README "Train in minutes")."""

    def __init__(self, file: Path, bottom: keras.Model, examples: Sequence[Example], cfg: Config, count: int,
                 unreadable: Unreadable):
        rows_file, meta_file = file.with_name(file.name + ".f16"), file.with_name(file.name + ".json")
        self.n, self.count, self.shape = len(examples), count, tuple(bottom.output.shape[1:])
        augmentation = {k: getattr(cfg, k) for k in ("augment", "flip", "rotation", "zoom", "translation",
                                                     "contrast", "brightness", "seed", "image_size")}
        key = {"paths": hashlib.sha256("\n".join(str(e.path) for e in examples).encode()).hexdigest(),
               "views": count, "shape": [self.n, *self.shape], "augmentation": augmentation,
               "bottom": "inference mode"}  # earlier files held training-mode views
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if {k: meta.get(k) for k in key} != key or not rows_file.exists():
            meta_file.unlink(missing_ok=True)  # written last: its presence says the rows are whole
            rows = RowsFile(rows_file, self.shape, VIEW_DTYPE, count * self.n, create=True)
            console.note(f"cached_views: the frozen layers run once on {count} view(s) of {self.n:,} pictures "
                         f"({count * self.n * rows.row_bytes / 2**30:.2f} GiB in {rows_file})")
            meta = {**key, "labels": self._fill(rows, bottom, examples, cfg, unreadable)}
            meta_file.write_text(json.dumps(meta) + "\n")
        self.rows = RowsFile(rows_file, self.shape, VIEW_DTYPE, count * self.n)
        self.labels = np.asarray(meta["labels"], np.float32)

    def _fill(self, rows: RowsFile, bottom: keras.Model, examples, cfg: Config, unreadable: Unreadable) -> list:
        """Computes and writes every view; returns the labels, in order (an unreadable picture's
        place is taken by the next readable one, with its label: `make_dataset`)."""
        pictures = make_dataset(examples, dataclasses.replace(cfg, cache="none"), training=False,
                                unreadable=unreadable)
        count = self.count
        if cfg.augment and count > 1:
            augment = seeded_augmentation(build_augmentation(cfg))

            def shown(step, xy):
                # (view, step) seeds the draws as (epoch, step) does in training: a remade file is the same.
                return (xy[0], *(augment((tf.constant(v, tf.int64), step), xy)[1][0] for v in range(1, count))), xy[1]

            # Augmented in the input pipeline's thread, while the bottom runs on the batch before
            # (sequentially: the layers keep one seed state).
            pictures = pictures.enumerate().map(shown).prefetch(1)
        else:  # every view is the picture as it is: computed once, written `count` times
            pictures = pictures.map(lambda x, y: ((x,), y))
        # One thread decodes and augments: LiteRT's two take the cores, and more threads fighting
        # them halved the fill's speed (49.6 -> 97.6 pictures/s for 2 views, measured here).
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        pictures = pictures.with_options(options)
        labels, first = [], 0
        batches = math.ceil(self.n / cfg.batch_size)
        with _litert_forward(bottom, cfg.image_size) as forward:
            for views, y in console.progress_bar(pictures, total=batches, unit="batch", desc=f"{count} view(s)",
                                                 delay=2):
                maps = [forward(np.asarray(x)).astype(VIEW_DTYPE) for x in views]
                for view in range(count):
                    rows.write(view * self.n + first, maps[min(view, len(maps) - 1)])
                labels.extend(np.asarray(y).ravel().astype(int).tolist())
                first += len(y)
        return labels

    def _batches(self, rows: np.ndarray, labels: np.ndarray, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
        def read(indices):
            return self.rows.read(indices).astype(np.float32)

        def load(indices, y):
            maps = tf.numpy_function(read, [indices], tf.float32, stateful=False)
            maps.set_shape((None, *self.shape))
            return maps, y

        return (tf.data.Dataset.from_tensor_slices((rows, labels)).batch(batch_size, drop_remainder)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE))

    def in_order(self, batch_size: int) -> tf.data.Dataset:
        """View 0 of every example, in order, with its label."""
        return self._batches(np.arange(self.n), self.labels, batch_size, False).prefetch(tf.data.AUTOTUNE)

    def epochs(self, cfg: Config, first: int, end: int) -> tf.data.Dataset:
        """Epochs first..end-1 back to back, `steps_per_epoch` full batches each, as `make_dataset`
        gives pictures: epoch e shows view e mod `count`, in the order pictures have that epoch (it
        depends on `cfg.seed` and e alone), so a run resumed at epoch e (or at a step of it) sees
        what an uninterrupted one would."""
        steps = steps_per_epoch(range(self.n), cfg)
        full = self.n >= cfg.batch_size

        def epoch_of(epoch: int) -> tf.data.Dataset:
            order = epoch_order(self.n, cfg, epoch)  # the order `Pictures` shows that epoch in
            if full:  # `steps` full batches; the last few pictures wait for another epoch's order (as pictures do)
                order = order[:steps * cfg.batch_size]
            return self._batches((epoch % self.count) * self.n + order, self.labels[order], cfg.batch_size, full)

        ds = functools.reduce(tf.data.Dataset.concatenate, map(epoch_of, range(first, end)))
        return ds.prefetch(tf.data.AUTOTUNE)
