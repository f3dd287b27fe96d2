"""The unknown detector's third score: how close a picture comes to the pets the model was trained on.

`add_prototypes` (called by `calibrate` where `unknown_prototypes` > 0) passes the run's training
pets through the ImageNet side (`imagenet_view`), groups their pooled features into that many
k-means centres, and stores them in the model as its `pet_similarity` output
(`catdog.models.pet_detector.with_pet_similarity`). A picture far from every centre (a hog, a
goat, a forest) scores low whatever the ImageNet classifier thinks; no pictures of non-pets are
needed to fit it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from catdog.data.images import ImageError, load_image
from catdog.inference.predictor import chunked, decoded_ahead
from catdog.models.layers import PetSimilarity
from catdog.models.pet_detector import imagenet_view, with_pet_similarity


def pet_features(model: keras.Model, paths: Sequence[str], image_size: int, batch_size: int = 64) -> np.ndarray:
    """(N, C) float32: the pooled ImageNet features of the readable pictures among `paths`, in order."""
    import tensorflow as tf

    view = imagenet_view(model, tuned_windows=False)
    forward = tf.function(lambda pixels: view(pixels, training=False)["features"], autograph=False)

    def decode(path):
        try:
            return load_image(path, size=image_size)
        except ImageError:
            return None  # an unreadable training picture is simply not a prototype's member

    features = []
    for batch in decoded_ahead(chunked(paths, batch_size), decode, threads=2):
        pixels = [p for p in batch if p is not None]
        if pixels:
            pooled = np.asarray(forward(tf.constant(np.stack(pixels), tf.float32)), np.float32)
            features.append(pooled.reshape(len(pixels), -1))  # MobileNet pools to (N, 1, 1, C)
    return np.concatenate(features) if features else np.zeros((0, 0), np.float32)


def fit_prototypes(features: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """(min(count, N), C): k-means centres of the features made unit length, so that nearness is cosine similarity."""
    from sklearn.cluster import KMeans

    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    return KMeans(min(count, len(unit)), n_init=1, random_state=seed).fit(unit).cluster_centers_.astype(np.float32)


def prototype_count(model: keras.Model) -> int:
    """How many prototypes the model's `pet_similarity` has (0: none)."""
    try:
        layer = model.get_layer("pet_similarity")
    except ValueError:
        return 0
    return layer.count if isinstance(layer, PetSimilarity) else 0


def add_prototypes(model: keras.Model, train_paths: Sequence[str], count: int, image_size: int,
                   seed: int = 0) -> keras.Model:
    """`model` with `pet_similarity` against `count` prototypes of the pictures in `train_paths`."""
    return with_pet_similarity(model, fit_prototypes(pet_features(model, train_paths, image_size), count, seed))
