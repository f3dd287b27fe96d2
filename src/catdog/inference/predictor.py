"""Predictor: load a model once, then classify files or pixel arrays in batches.

    >>> predictor = Predictor("runs/mobilenet")          # or None for the shipped model
    >>> for record in predictor.predict_paths(["a.jpg", "photos/"]):
    ...     print(record)   # {"path": "a.jpg", "label": "dog", "p_dog": 0.993}

The CLI, evaluation and the web server all hold one `Predictor`.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from catdog.data import remote
from catdog.data.images import ImageError, is_image_name, load_image
from catdog.errors import ModelError
from catdog.inference.answers import ANSWER_OUTPUTS, blend_logits, bounded_logits, is_unknown, pet_score, probabilities
from catdog.inference.runtime import load_runtime


def shown_probability(p: float) -> float:
    """`p` rounded to 6 decimals, or more near 0 and 1: 6 significant digits of min(p, 1 - p).

    A confident 7.5e-08 stays 7.5e-08 rather than 0.0, which would make a log loss computed
    from the output infinite.
    """
    tail = min(p, 1.0 - p)
    return round(p, 15 if tail <= 0 else 6 + max(0, math.floor(-math.log10(tail))))


def expand_paths(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given, folders as their image files (recursively, sorted), globs expanded.

    A path that does not exist, or a folder without images, is kept so that it is reported as
    an error, not dropped. URIs (`s3://bucket/photos/`, `file:///...`) are expanded the same
    way through fsspec (`catdog.data.remote`).
    """
    paths = []
    for item in map(str, inputs):
        if remote.is_uri(item):
            found = remote.list_files(item)
            paths += [item] if found is None else [p for p in found if is_image_name(p)] or [item]
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.is_file() and is_image_name(p))
            paths += found or [item]  # a folder with no images is reported, not silently dropped
        elif not os.path.exists(item) and glob.has_magic(item):
            matches = sorted(m for m in glob.glob(item, recursive=True) if os.path.isfile(m))
            paths += matches or [item]
        else:
            paths.append(item)
    return paths


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """`items` in lists of `size` (the last one shorter), read lazily."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def decoded_ahead(chunks: Iterable[Sequence], decode: Callable, threads: int) -> Iterator[list]:
    """`[decode(item) for item in chunk]` for each chunk, in order, on `threads` threads: the next
    chunk is decoded while the caller works on this one (the model runs while JPEGs decode)."""
    chunks = iter(chunks)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = [pool.submit(decode, item) for item in next(chunks, ())]
        while pending:
            decoded = [future.result() for future in pending]
            pending = [pool.submit(decode, item) for item in next(chunks, ())]
            yield decoded


class Scored(NamedTuple):
    path: str
    logit: float | None = None  # uncalibrated evidence for "dog" (blended, where model.json says so)
    pet: dict[str, float] | None = None  # the unknown detector's scores, where the model has one
    error: str | None = None
    dog_odds: float | None = None  # the ImageNet head's dog-versus-cat log-odds, where the model has them


class Predictor:
    """A loaded model with its calibration, ready to classify images in batches.

    `unknown` (default: on where the model has the pet detector and fitted thresholds)
    answers "unknown" for pictures that show neither a cat nor a dog (`catdog.models.pet_detector`).
    `meta` replaces the `model.json` beside the model file. `threads` (default: every core) is how
    many images are decoded at once and, on LiteRT, how many threads run the model: one engine
    worker among several on a machine takes its share.
    """

    def __init__(self, model: str | os.PathLike | None = None, batch_size: int = 64, tta: bool = False,
                 unknown: bool | None = None, meta: dict | None = None, runtime: str = "keras",
                 threads: int | None = None):
        self.threads = threads or os.cpu_count() or 2
        self.runtime = load_runtime(model, runtime, detector=unknown is not False, threads=self.threads)
        self.path = self.runtime.path
        meta_path = self.path.with_suffix(".json")
        if meta is None:  # calibration and image size; {} for raw, uncalibrated scores
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.meta = meta
        self.image_size = int(self.meta.get("image_size") or self.runtime.image_size)
        if not self.image_size:
            raise ModelError(f"{self.path}: no Resizing layer, and no model.json to give the image size")
        self.temperature = float(self.meta.get("temperature", 1.0))
        # The fine-tuned logit weighed with the ImageNet head's dog-versus-cat log-odds (`calibrate`).
        self.blend = self.meta.get("blend")
        if self.blend and not set(self.blend) - {"bias"} <= set(self.runtime.output_names):
            raise ModelError(f"{self.path}: model.json blends {sorted(set(self.blend) - {'bias'})}, the model "
                             f"gives {self.runtime.output_names} (run `catdog calibrate`)")
        # No answer surer than the validation set can vouch for (`catdog.training.calibrate.confidence_floor`).
        self.p_floor = float(self.meta.get("p_floor", 0.0))
        self.class_names = list(self.meta.get("class_names", ("cat", "dog")))
        self.detector_scores = [name for name in self.runtime.output_names if name not in ANSWER_OUTPUTS]
        # The detector's scores weighed into one, learned against pictures of neither (`calibrate`).
        self.pet_score = self.meta.get("pet_score")
        if self.pet_score and {"p_pet", "pet_energy"} <= set(self.detector_scores):
            self.detector_scores.append("pet_score")
        self.has_detector = bool(self.detector_scores)
        self.unknown_thresholds = self.meta.get("unknown_thresholds")
        if "unknown_threshold" in self.meta:  # written before pet_energy existed: p_pet alone
            self.unknown_thresholds = {"p_pet": self.meta["unknown_threshold"]}
        if self.unknown_thresholds and not set(self.unknown_thresholds) <= set(self.detector_scores):
            raise ModelError(f"{self.path}: model.json has thresholds for {sorted(self.unknown_thresholds)}, "
                             f"the model gives {self.detector_scores} (run `catdog calibrate`)")
        if unknown and not self.unknown_thresholds:
            raise ModelError(f"{self.path}: this model has no fitted unknown detector (run `catdog calibrate`)")
        self.unknown = bool(self.unknown_thresholds) if unknown is None else unknown
        self.batch_size, self.tta = batch_size, tta

    @property
    def model(self):
        """The keras.Model, for the Keras runtime (`predictor.runtime.model`)."""
        if not hasattr(self.runtime, "model"):
            raise ModelError(f"{self.path}: the {type(self.runtime).__name__} has no keras.Model")
        return self.runtime.model

    def scores(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """{"logit", "p_pet", "pet_energy"} arrays for a batch of (N, size, size, 3) pixels; TTA adds a mirror.

        "logit" is the model's own, or its blend with the ImageNet evidence where model.json has one,
        bounded where it has a `p_floor`;
        "pet_score" is added where model.json has a learned one.
        """
        views = [pixels, np.asarray(pixels)[:, :, ::-1]] if self.tta else [pixels]
        outs = [self.runtime.run(view) for view in views]
        scores = {k: np.mean([o[k] for o in outs], axis=0) for k in outs[0]}
        if self.blend:
            scores["logit"] = blend_logits(scores, self.blend)
        if self.p_floor:
            scores["logit"] = bounded_logits(scores["logit"], self.temperature, self.p_floor)
        if "pet_score" in self.detector_scores and "p_pet" in scores:
            scores["pet_score"] = pet_score(scores, self.pet_score)
        return scores

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Uncalibrated logits for a batch of pixels."""
        return self.scores(pixels)["logit"]

    def p_dog(self, pixels: np.ndarray) -> np.ndarray:
        """Calibrated probabilities that each image shows a dog."""
        return probabilities(self.logits(pixels), self.temperature)

    def load(self, path: str | bytes, name: str | None = None) -> np.ndarray:
        return load_image(path, size=self.image_size, name=name)

    def score_paths(self, paths: Iterable[str]) -> Iterator[Scored]:
        """One `Scored` per path, in order; unreadable files carry their error.

        `paths` is read as it is needed, `batch_size` at a time: a list of a million paths, or a
        generator over one, costs the memory of two batches.
        """
        for scored in self.score_chunks(chunked(paths, self.batch_size)):
            yield from scored

    def score_chunks(self, chunks: Iterable[Sequence[str]]) -> Iterator[list[Scored]]:
        """A list of `Scored` per chunk of paths, in order, each chunk's readable images one forward pass.

        `score_paths` cuts its paths into chunks of `batch_size`; an engine that hands out such
        chunks itself (`catdog.inference.ray_engine`) gets the very same batches, so the same answers.
        """

        def decode(path):
            try:
                return path, self.load(path), None
            except ImageError as error:
                return path, None, str(error)

        for decoded in decoded_ahead(chunks, decode, self.threads):
            good = [d for d in decoded if d[2] is None]
            scores = self.scores(np.stack([d[1] for d in good])) if good else {}
            yield list(self._scored(decoded, scores))

    def _scored(self, decoded: list[tuple], scores: dict[str, np.ndarray]) -> Iterator[Scored]:
        at = 0
        for path, _, error in decoded:
            if error:
                yield Scored(path, error=error)
                continue
            pet = {name: float(scores[name][at]) for name in self.detector_scores if name in scores}
            odds = float(scores["dog_odds"][at]) if "dog_odds" in scores else None
            yield Scored(path, float(scores["logit"][at]), pet or None, dog_odds=odds)
            at += 1

    def record(self, scored: Scored) -> dict:
        """The answer for one image: {"path", "label", "p_dog"[, "p_pet", "pet_energy"]} or {"path", "error"}."""
        if scored.error:
            return {"path": scored.path, "error": scored.error}
        p_dog = float(probabilities(scored.logit, self.temperature)[0])
        label = self.class_names[int(p_dog >= 0.5)]
        record = {"path": scored.path, "label": label, "p_dog": shown_probability(p_dog)}
        if self.unknown and scored.pet:
            record.update((name, round(value, 6)) for name, value in scored.pet.items())
            if is_unknown(scored.pet, self.unknown_thresholds):
                record["label"] = "unknown"
        return record

    def predict_paths(self, paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
        """One record per path (files, folders, globs), in order, errors included."""
        for scored in self.score_paths(expand_paths(paths)):
            yield self.record(scored)
