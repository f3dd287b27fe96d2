"""Every custom Keras layer in catdog models, registered under the package name "catdog".

A saved `.keras` file names these layers `catdog>ImageNetScaling`, `catdog>PetEvidence`,
`catdog>DogOdds` and `catdog>PetSimilarity`; importing this module is what lets Keras load it (`catdog.inference.keras_runtime`
does, before loading any model). The registered names never change, so models saved by any
earlier catdog, whatever module the layer lived in then, keep loading.
"""

from __future__ import annotations

import keras
import numpy as np
from keras.applications import imagenet_utils

from catdog.models.pet_classes import CAT_CLASSES, DOG_CLASSES, PET_CLASSES


@keras.saving.register_keras_serializable(package="catdog")
class PetEvidence(keras.layers.Layer):
    """ImageNet logits -> (p_pet, pet_energy), each (N, 1) in float32; higher means more pet-like."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, logits):
        logits = keras.ops.cast(logits, "float32")
        energy = keras.ops.logsumexp(keras.ops.take(logits, PET_CLASSES, axis=-1), axis=-1, keepdims=True)
        p_pet = keras.ops.exp(energy - keras.ops.logsumexp(logits, axis=-1, keepdims=True))
        return p_pet, energy

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1), (input_shape[0], 1)


@keras.saving.register_keras_serializable(package="catdog")
class DogOdds(keras.layers.Layer):
    """ImageNet logits -> (N, 1) float32: the log-odds of its 118 dog breeds against its 5 domestic cats.

    The ImageNet classifier's own answer to "cat or dog?", learned from far more varied photos
    than Kaggle's; `calibrate` weighs it against the fine-tuned logit (`fit_blend`).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, logits):
        logits = keras.ops.cast(logits, "float32")
        dogs, cats = (keras.ops.logsumexp(keras.ops.take(logits, classes, axis=-1), axis=-1, keepdims=True)
                      for classes in (DOG_CLASSES, CAT_CLASSES))
        return dogs - cats

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)


@keras.saving.register_keras_serializable(package="catdog")
class PetSimilarity(keras.layers.Layer):
    """Pooled ImageNet features (N, C) -> (N, 1) float32: the cosine similarity to the nearest of `count`
    prototypes of training cats and dogs; low means unlike any pet the model was trained on.

    The prototypes are k-means centres of the training pets' features, unit length, fitted by
    `catdog calibrate` (`unknown_prototypes`) and set with `set_prototypes`. They are stored as
    float16: 2,048 of 1,280 numbers are 5 MB, and the similarity needs no more than that.
    """

    def __init__(self, count: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.count = int(count)

    def build(self, input_shape):
        self.prototypes = self.add_weight(shape=(self.count, input_shape[-1]), initializer="zeros",
                                          dtype="float16", trainable=False, name="prototypes")

    def set_prototypes(self, prototypes) -> None:
        """(count, C) centres, made unit length here."""
        prototypes = np.asarray(prototypes, np.float32)
        self.prototypes.assign(prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True))

    def call(self, features):
        # (N, C), or (N, 1, 1, C) where the backbone pools with keepdims (MobileNet)
        features = keras.ops.reshape(keras.ops.cast(features, "float32"), (-1, self.prototypes.shape[-1]))
        unit = features / keras.ops.maximum(keras.ops.norm(features, axis=-1, keepdims=True), 1e-12)
        similarity = keras.ops.matmul(unit, keras.ops.transpose(keras.ops.cast(self.prototypes, "float32")))
        return keras.ops.max(similarity, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "count": self.count}


@keras.saving.register_keras_serializable(package="catdog")
class ImageNetScaling(keras.layers.Layer):
    """A backbone's own ImageNet input normalisation, as a layer that saves and loads safely."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, pixels):
        return imagenet_utils.preprocess_input(pixels, data_format="channels_last", mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
