"""Predictor: load a model once, then classify files or pixel arrays in batches.

    >>> predictor = Predictor("runs/mobilenet")          # or None for the shipped model
    >>> for record in predictor.predict_paths(["a.jpg", "photos/"]):
    ...     print(record)   # {"path": "a.jpg", "label": "dog", "p_dog": 0.993}

The CLI, evaluation and the web server all hold one `Predictor`.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog import model as _registers_custom_layers  # noqa: F401  (ImageNetScaling)
from catdog.calibrate import probabilities
from catdog.images import ImageError, is_image_name, load_image

SHIPPED_MODEL = Path(__file__).parent / "assets" / "model.keras"


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """A `.keras` file from a run folder, a file path, or None for the shipped model."""
    path = Path(model) if model else SHIPPED_MODEL
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        hint = "" if model else " (no shipped model in this install: pass --model RUN_OR_FILE)"
        raise FileNotFoundError(f"model {path} not found{hint}")
    return path


def expand_paths(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given, folders as their image files (recursively, sorted), globs expanded.

    A path that does not exist is kept, so that it is reported as an error, not dropped.
    """
    paths = []
    for item in map(str, inputs):
        if os.path.isdir(item):
            paths += sorted(str(p) for p in Path(item).rglob("*") if p.is_file() and is_image_name(p))
        elif not os.path.exists(item) and glob.has_magic(item):
            matches = sorted(m for m in glob.glob(item, recursive=True) if os.path.isfile(m))
            paths += matches or [item]
        else:
            paths.append(item)
    return paths


class Predictor:
    """A loaded model with its calibration, ready to classify images in batches."""

    def __init__(self, model: str | os.PathLike | None = None, batch_size: int = 64, tta: bool = False):
        self.path = resolve_model(model)
        self.model = keras.saving.load_model(self.path, compile=False)
        meta_path = self.path.with_suffix(".json")
        self.meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.image_size = int(self.meta.get("image_size") or self.model.get_layer("features").get_layer("resize").height)
        self.temperature = float(self.meta.get("temperature", 1.0))
        self.class_names = list(self.meta.get("class_names", ("cat", "dog")))
        self.batch_size, self.tta = batch_size, tta
        spec = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.float32)
        self._forward = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Uncalibrated logits for a batch of (N, size, size, 3) pixels; TTA averages a mirror."""
        x = tf.convert_to_tensor(pixels, tf.float32)
        logits = self._forward(x).numpy().ravel()
        if self.tta:
            logits = (logits + self._forward(tf.reverse(x, axis=[2])).numpy().ravel()) / 2
        return logits

    def p_dog(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated probabilities that each image shows a dog."""
        return probabilities(self.logits(pixels), self.temperature)

    def load(self, path: str | bytes, name: str | None = None) -> np.ndarray:
        return load_image(path, size=self.image_size, name=name)

    def iter_logits(self, paths: Iterable[str]) -> Iterator[tuple[str, float | None, str | None]]:
        """(path, logit, None) per readable image and (path, None, error) per unreadable one."""

        def decode(path):
            try:
                return path, self.load(path), None
            except ImageError as error:
                return path, None, str(error)

        paths = list(paths)
        chunks = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            # Decode the next chunk while the model runs on this one.
            pending = [pool.submit(decode, p) for p in chunks[0]] if chunks else []
            for i in range(len(chunks)):
                decoded = [future.result() for future in pending]
                pending = [pool.submit(decode, p) for p in chunks[i + 1]] if i + 1 < len(chunks) else []
                good = [d for d in decoded if d[2] is None]
                logits = iter(self.logits(np.stack([d[1] for d in good])) if good else [])
                for path, pixels, error in decoded:
                    yield (path, None, error) if error else (path, float(next(logits)), None)

    def record(self, path: str, logit: float | None, error: str | None) -> dict:
        if error:
            return {"path": path, "error": error}
        p_dog = float(probabilities([logit], self.temperature)[0])
        return {"path": path, "label": self.class_names[int(p_dog >= 0.5)], "p_dog": round(p_dog, 6)}

    def predict_paths(self, paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
        """One record per path (files, folders, globs), in order, errors included."""
        for scored in self.iter_logits(expand_paths(paths)):
            yield self.record(*scored)
