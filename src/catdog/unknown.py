"""'Neither cat nor dog': the backbone's own ImageNet classifier as a pet detector.

ImageNet's 1000 classes include 118 dog breeds and 5 domestic cats. The detector adds a
second output to a trained backbone model, `p_pet`: the ImageNet softmax mass on those 123
classes, computed from the backbone's *original* top blocks (the fine-tuned ones no longer
feed the ImageNet classifier well). The trunk below the fine-tuned blocks is shared, so for
MobileNet the extra work is about 14% of a forward pass. A picture whose `p_pet` is below a
threshold is answered "unknown"; the threshold is the `budget` quantile of `p_pet` over the
validation cats and dogs, so about that share of real pets is given up.
"""

from __future__ import annotations

import keras
import numpy as np

from catdog.config import Config
from catdog.model import load_backbone

# ImageNet-1k indices: 151-268 are dog breeds, 281-285 tabby, tiger cat, Persian, Siamese, Egyptian cat.
PET_CLASSES = tuple(range(151, 269)) + tuple(range(281, 286))


def attach_pet_detector(model: keras.Model, cfg: Config) -> keras.Model:
    """`model` (a trained backbone classifier) with outputs {"logit", "p_pet"}."""
    features = model.get_layer("features")
    backbone = features.get_layer("backbone")
    # The original weights with the ImageNet head, stored as bfloat16: this keeps the shipped
    # MobileNet model under 20 MB, and p_pet needs no more precision than that.
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16")
    try:
        reference = load_backbone(cfg, include_top=True)
    finally:
        keras.config.set_dtype_policy(policy)
    pooling = next(i for i, layer in enumerate(backbone.layers) if "pool" in type(layer).__name__.lower())
    cut = min(len(backbone.layers) - cfg.fine_tune_layers, pooling)
    # Up to the pooling layer both models have the same layers in the same order.
    trunk = keras.Model(backbone.input, backbone.layers[cut - 1].output, name="trunk")
    tuned_top = keras.Model(backbone.layers[cut].input, backbone.output, name="tuned_top")
    imagenet_top = keras.Model(reference.layers[cut].input, reference.output, name="imagenet_top")
    imagenet_top.trainable = False

    pixels = keras.Input((None, None, 3), name="pixels")
    x = pixels
    for layer in features.layers[1:]:
        if layer is backbone:
            break
        x = layer(x)  # resize and scaling, as trained
    shared = trunk(x, training=False)
    logit = model.get_layer("head")(tuned_top(shared, training=False))
    pet_mass = keras.layers.Dense(1, use_bias=False, trainable=False, name="p_pet")
    p_pet = pet_mass(imagenet_top(shared, training=False))
    indicator = np.zeros((1000, 1), np.float32)
    indicator[list(PET_CLASSES)] = 1.0
    pet_mass.set_weights([indicator])
    return keras.Model(pixels, {"logit": logit, "p_pet": p_pet}, name=f"{model.name}_with_unknown")


def fit_threshold(p_pet_of_pets, budget: float) -> float:
    """The `p_pet` below which only `budget` of these (validation) cats and dogs fall."""
    return float(np.quantile(np.asarray(p_pet_of_pets, dtype=np.float64), budget))
