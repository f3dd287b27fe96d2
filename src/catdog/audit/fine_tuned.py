"""The slower label check, `catdog audit --fine-tune`: each picture's P(dog) from the model's original
ImageNet top blocks fine-tuned on the other folds' pictures.

    >>> bottom, blocks = imagenet_blocks(keras_file)
    >>> maps = trunk_maps(paths, digests, bottom, 240, folder)   # the frozen trunk, once per picture
    >>> p_dog = out_of_sample(maps, blocks, labels, readable, groups)

The quick check (`label_errors.out_of_sample`) reads the pooled ImageNet features with a linear
model: features made for 1000 classes, among them 118 dog breeds and 5 cats, on which a brindle
puppy can lie on the cats' side. Here the blocks that make those features learn cat against dog,
the way `catdog train` fine-tunes them, on cached maps: the trunk below them runs once per picture
(on LiteRT) and its maps are kept on disk (float16, `$CATDOG_HOME/audit/<model key>/maps-*`); for
each of the K folds, a copy of the top blocks, started from ImageNet's weights (never the
fine-tuned ones, which have seen these very labels), with a head first fitted alone on their
pooled features, trains for `epochs` on the other folds and answers for its own.

On train.zip it is slower (10.5 min more) and no better by eye than the quick check (README,
"Audit the data"): on cats and dogs, ImageNet's features already separate the classes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from catdog.audit import label_errors
from catdog.console import progress_bar, quiet_stderr
from catdog.data.images import ImageError, load_image
from catdog.data.rows import RowsFile
from catdog.inference.answers import probabilities
from catdog.inference.predictor import chunked, decoded_ahead

HEAD_EPOCHS, HEAD_STEPS = 20, 2000  # epochs of the head alone, and at least this many steps (a small set)
EPOCHS = 2
LEARNING_RATE = 1e-4  # the lite presets' fine-tuning rate, warmed up over a tenth of the steps
BATCH = 32


def imagenet_blocks(keras_file: Path) -> tuple[keras.Model, keras.Model]:
    """(bottom, blocks) of the model in `keras_file`, in float32 (`catdog.models.pet_detector.imagenet_blocks`)."""
    from catdog.export.converters import float32_copy
    from catdog.inference.keras_runtime import KerasRuntime
    from catdog.models.pet_detector import imagenet_blocks as split

    return split(float32_copy(KerasRuntime(keras_file).model))


def trunk_maps(paths: list[str], digests: list[str], bottom: keras.Model, size: int, folder: Path,
               batch_size: int = 64, runtime: str = "auto") -> RowsFile:
    """The bottom's maps of every picture (zeros where unreadable: no digest), made once for these
    contents in this order and kept in `folder` (named by the digests' hash; a `.json` beside it says
    the file is whole). The bottom runs on LiteRT ("auto": converted first; Lite0's ran 2.2x as fast) or
    Keras ("keras": no conversion, as the audit's `runtime` says)."""
    key = hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]
    rows_file, done = folder / f"maps-{key}.f16", folder / f"maps-{key}.json"
    shape = tuple(bottom.output.shape[1:])
    if done.exists() and json.loads(done.read_text()) == dict(shape=list(shape), rows=len(paths)):
        return RowsFile(rows_file, shape, np.float16, len(paths))
    folder.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    rows = RowsFile(rows_file, shape, np.float16, len(paths), create=True)
    forward = _litert(bottom, size) if runtime == "auto" else \
        (lambda pixels: np.asarray(bottom(pixels.astype(np.float32), training=False)))
    chosen = np.array([i for i, digest in enumerate(digests) if digest], np.int64)
    bar = progress_bar(total=len(chosen), unit="img", desc="maps", delay=2)
    written = 0
    for pixels in decoded_ahead(chunked(chosen, batch_size), lambda i: _pixels(paths[i], size),
                                 os.cpu_count() or 2):
        maps = forward(np.stack(pixels))
        for at, index in enumerate(chosen[written:written + len(pixels)]):
            rows.write(int(index), maps[at:at + 1])
        written += len(pixels)
        bar.update(len(pixels))
    bar.close()
    done.write_text(json.dumps(dict(shape=list(shape), rows=len(paths))) + "\n")
    return rows


def _pixels(path: str, size: int) -> np.ndarray:
    try:
        return load_image(path, size=size)
    except (ImageError, OSError):  # changed since the audit's pass read it: its maps stay zeros
        return np.zeros((size, size, 3), np.uint8)


def _litert(bottom: keras.Model, size: int):
    """`bottom` on LiteRT (float32 weights): pixels (N, size, size, 3) uint8 -> maps."""
    from catdog.export.converters import litert_copy
    from catdog.inference.runtime import LiteRTRuntime

    with tempfile.TemporaryDirectory() as tmp, quiet_stderr():
        flat = Path(tmp) / "bottom.tflite"
        flat.write_bytes(litert_copy(bottom, size, float16_weights=False))
        runtime = LiteRTRuntime(flat)
    (name,) = runtime.output_names
    return lambda pixels: runtime.run(pixels)[name]


class _Batches(keras.utils.PyDataset):
    """Batches of (maps, labels) from `rows` of a maps file; reshuffled every epoch when `shuffle`."""

    def __init__(self, maps: RowsFile, rows: np.ndarray, labels: np.ndarray, shuffle: bool = False, seed: int = 0):
        super().__init__()
        self.maps, self.rows, self.labels, self.shuffle = maps, rows, labels.astype(np.float32), shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(rows)) if shuffle else np.arange(len(rows))

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / BATCH)

    def __getitem__(self, i: int):
        at = self.order[i * BATCH:(i + 1) * BATCH]
        return self.maps.read(self.rows[at]).astype(np.float32), self.labels[at]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.rows))


def _outputs(model: keras.Model, maps: RowsFile, rows: np.ndarray) -> np.ndarray:
    """`model` on the maps of `rows`, in order: called batch by batch (`predict` would trace a function
    for every fold's new model, and TensorFlow warns of the retracing)."""
    batches = _Batches(maps, rows, np.zeros(len(rows)))
    return np.concatenate([np.asarray(model(batches[i][0], training=False)) for i in range(len(batches))])


def _fold_model(blocks: keras.Model, weights: list, head: tuple[np.ndarray, float]) -> keras.Model:
    """A fresh copy of `blocks` at `weights` (ImageNet's), BatchNorm frozen, and a logit head set to `head`."""
    copy = keras.models.clone_model(blocks)
    copy.set_weights(weights)
    for layer in copy.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    maps = keras.Input(blocks.input.shape[1:])
    dense = keras.layers.Dense(1, name="logit")
    model = keras.Model(maps, dense(keras.layers.Dropout(0.2)(copy(maps, training=False))))
    dense.set_weights([head[0].reshape(-1, 1).astype(np.float32), np.array([head[1]], np.float32)])
    return model


def _linear_head(pooled: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """The fold's head, first fitted alone on the blocks' pooled features (the lite presets' head phase):
    a logistic regression by Adam on the features as they are. (sklearn's on standardised features gave
    near-constant features large weights: held-out log loss 0.084 against 0.030 on one fold of train.zip.)"""
    head = keras.Sequential([keras.Input((pooled.shape[1],)), keras.layers.Dense(1, kernel_initializer="zeros")])
    head.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    repeats = math.ceil(HEAD_STEPS * 64 / (HEAD_EPOCHS * len(pooled)))  # a small set is gone over more often
    head.fit(np.tile(pooled, (repeats, 1)), np.tile(labels.astype(np.float32), repeats), batch_size=64,
             epochs=HEAD_EPOCHS, verbose=0)
    weights, bias = head.layers[-1].get_weights()
    return weights.reshape(-1), float(bias[0])


def out_of_sample(maps: RowsFile, blocks: keras.Model, labels: np.ndarray, readable: np.ndarray,
                  groups: np.ndarray, folds: int = label_errors.FOLDS, epochs: int = EPOCHS, seed: int = 0) -> np.ndarray:
    """(N,) P(label 1) for every readable row from `blocks` fine-tuned on the other folds (0.5 elsewhere);
    the folds are `label_errors.folds`' (a picture and its near-duplicates share one)."""
    p = np.full(len(labels), 0.5)
    rows = np.flatnonzero(readable)
    y = np.asarray(labels)[rows]
    splits = list(label_errors.folds(y, groups[rows], folds))
    if not splits:
        return p
    keras.utils.set_random_seed(seed)
    weights, pooled = blocks.get_weights(), _outputs(blocks, maps, rows)
    steps = sum(math.ceil(len(fit) / BATCH) for fit, _ in splits) * epochs
    bar = progress_bar(total=steps, unit="step", desc="fine-tune", delay=2)
    for k, (fit, held) in enumerate(splits):
        model = _fold_model(blocks, weights, _linear_head(pooled[fit], y[fit]))
        fold_steps = math.ceil(len(fit) / BATCH) * epochs
        schedule = keras.optimizers.schedules.CosineDecay(0.0, fold_steps, warmup_target=LEARNING_RATE,
                                                          warmup_steps=max(1, fold_steps // 10))
        model.compile(keras.optimizers.Adam(schedule), keras.losses.BinaryCrossentropy(from_logits=True))
        model.fit(_Batches(maps, rows[fit], y[fit], shuffle=True, seed=seed + k), epochs=epochs, verbose=0,
                  callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: bar.update(1))])
        logits = _outputs(model, maps, rows[held])
        p[rows[held]] = probabilities(logits)
    bar.close()
    return p
