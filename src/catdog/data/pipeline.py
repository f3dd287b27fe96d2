"""tf.data input pipeline: files -> decoded, resized uint8 -> cached -> (shuffled, augmented) batches."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog.config import Config
from catdog.data.images import ImageError, load_image
from catdog.data.prepare import Example


def build_augmentation(cfg: Config) -> keras.Sequential:
    """The random transforms applied to training batches, and only to them."""
    layers = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=cfg.seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=cfg.seed + 1))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode="reflect", seed=cfg.seed + 2))
    if cfg.translation:
        layers.append(keras.layers.RandomTranslation(
            cfg.translation, cfg.translation, fill_mode="reflect", seed=cfg.seed + 3))
    if cfg.contrast:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=cfg.seed + 4))
    if cfg.brightness:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=cfg.seed + 5))
    return keras.Sequential(layers, name="augmentation")


def _decoder(image_size: int):
    def decode(path: bytes) -> np.ndarray:
        try:
            return load_image(path.decode(), size=image_size)
        except ImageError as error:
            # prepare() dropped unreadable files; one that broke since must not end training.
            # A blank image keeps the dataset's length known, so progress bars have a total.
            warnings.warn(f"skipping unreadable image, fed as blank: {error}", stacklevel=1)
            return np.zeros((image_size, image_size, 3), np.uint8)

    def decode_tf(path: tf.Tensor) -> tf.Tensor:
        pixels = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        pixels.set_shape((image_size, image_size, 3))
        return pixels

    return decode_tf


def make_dataset(
    examples: Sequence[Example],
    cfg: Config,
    training: bool,
    cache_file: str | Path | None = None,
    epochs: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 pixels in 0..255, float32 label) for training or evaluation.

    Images are decoded by the project's one loader and cached after decoding, so only the
    first epoch reads JPEG. Shuffling and augmentation happen for `training` only; evaluation
    order is the order of `examples`.

    With `epochs=(first, end)` (training), the dataset holds epochs first..end-1 back to back,
    `steps_per_epoch(examples, cfg)` batches each, every epoch in an order that depends on
    `cfg.seed` and its number alone: a run resumed at epoch k sees the data an uninterrupted one
    would. Without it, the order is reshuffled every iteration from a seed (one pass per epoch).
    """
    paths = [str(e.path) for e in examples]
    labels = np.array([e.label for e in examples], dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    decode = _decoder(cfg.image_size)
    ds = ds.map(lambda p, y: (decode(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.cache == "memory":
        ds = ds.cache()
    elif cfg.cache == "disk":
        if cache_file is None:
            raise ValueError("cache='disk' needs a cache_file")
        ds = ds.cache(str(cache_file))
    # Training batches are all full: TF 2.21's oneDNN kernels have crashed on a smaller last
    # batch (strided 1x1 conv gradients), and a shuffled set loses no example for good.
    full_batches = training and len(paths) >= cfg.batch_size
    if training and epochs is not None:
        decoded = ds

        def epoch_of(epoch):
            seed = tf.constant(cfg.seed, tf.int64) * 1_000_003 + epoch
            shuffled = decoded.shuffle(len(paths), seed=seed, reshuffle_each_iteration=False)
            batches = shuffled.batch(cfg.batch_size, drop_remainder=full_batches)
            return batches.enumerate().map(lambda step, xy: ((epoch, step), xy))

        ds = tf.data.Dataset.range(*epochs).flat_map(epoch_of)
        ds = ds.map(lambda at, xy: (at, (tf.cast(xy[0], tf.float32), xy[1])), num_parallel_calls=tf.data.AUTOTUNE)
        if cfg.augment:
            ds = ds.map(_seeded_augmentation(build_augmentation(cfg)))  # sequential: one seed state
        return ds.map(lambda at, xy: xy).prefetch(tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(len(paths), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=full_batches)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and cfg.augment:
        augment = build_augmentation(cfg)
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    # Prefetch so decoding and augmentation of the next batch overlap the current step.
    return ds.prefetch(tf.data.AUTOTUNE)


def _seeded_augmentation(augment: keras.Sequential):
    """`augment` whose random draws depend only on (epoch, step): each batch first sets every
    layer's seed state from them, so a resumed run augments as an uninterrupted one would."""
    states = [layer.generator.state for layer in augment.layers]

    def apply(at, xy):
        epoch, step = at
        for i, state in enumerate(states):
            # Keras draws from [seed, counter]: the layer's own seed, a counter that names the batch.
            counter = tf.cast(epoch * 1_000_003 + step * 101 + i, state.dtype)
            state.assign(tf.stack([state[0], counter]))
        return at, (augment(xy[0], training=True), xy[1])

    return apply


def steps_per_epoch(examples: Sequence[Example], cfg: Config) -> int:
    """Training batches in one epoch (all full, unless the set is smaller than one batch)."""
    return max(1, len(examples) // cfg.batch_size)
