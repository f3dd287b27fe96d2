"""Every custom Keras layer in catdog models, registered under the package name "catdog".

A saved `.keras` file names these layers `catdog>ImageNetScaling`, `catdog>PetEvidence`,
`catdog>DogOdds` and `catdog>PetDensity`; importing this module is what lets Keras load it (`catdog.inference.keras_runtime`
does, before loading any model). The registered names never change, so models saved by any
earlier catdog, whatever module the layer lived in then, keep loading.
"""

from __future__ import annotations

import keras
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
class PetDensity(keras.layers.Layer):
    """Pooled features (N, C) -> (N, 1) float32: how typical of the training pets' features they are.

    -1/2 the squared Mahalanobis distance to the training pets' mean within their `components`
    principal directions: a Gaussian's log-density with its constant dropped (Lee et al., 2018).
    It needs no pictures of non-pets: a hog or a forest is far from every cat and dog however much
    ImageNet evidence it carries. `mean` (C,) and `whitening` (C, components), the principal
    directions over the square roots of their variances, are set by `calibrate` (`fit_pet_density`).
    """

    def __init__(self, features: int, components: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.features, self.components = features, components
        self.mean = self.add_weight(shape=(features,), initializer="zeros", trainable=False, name="mean")
        self.whitening = self.add_weight(shape=(features, components), initializer="zeros", trainable=False,
                                         name="whitening")

    def call(self, features):
        z = keras.ops.matmul(keras.ops.cast(features, "float32") - self.mean, self.whitening)
        return -0.5 * keras.ops.sum(z * z, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "features": self.features, "components": self.components}


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
