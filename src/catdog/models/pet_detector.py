"""'Neither cat nor dog': the backbone's own ImageNet classifier as a pet detector.

ImageNet's 1000 classes include 118 dog breeds and 5 domestic cats. The detector adds two
outputs to a trained backbone model, computed from the backbone's *original* top blocks and
ImageNet classifier (the fine-tuned blocks no longer feed that classifier well):

- `p_pet`, the softmax mass on those 123 classes: is a cat or dog the best explanation of
  the picture, compared with the other 877 classes?
- `pet_energy`, the log-sum-exp of their logits (the energy score of Liu et al., 2020,
  restricted to the pet classes): how much evidence for a cat or dog is there at all? A
  texture or a blank sky can spread its softmax mass so thinly that cats and dogs keep a
  share of it, yet with logits too low to be a real pet.

A picture is answered "unknown" when either score falls below its threshold, or when the score
that `calibrate` learns from both falls below its own (`catdog.inference.answers`). The trunk below
the fine-tuned blocks is shared, so for MobileNet the extra work is about 14% of a forward pass.
"""

from __future__ import annotations

import keras

from catdog.config import Config
from catdog.models.builders import backbone_input, load_backbone, split_backbone
from catdog.models.layers import DogOdds, PetEvidence


def attach_pet_detector(model: keras.Model, cfg: Config) -> keras.Model:
    """`model` (a trained backbone classifier) with outputs {"logit", "p_pet", "pet_energy", "dog_odds"}."""
    features = model.get_layer("features")
    backbone = features.get_layer("backbone")
    # The original weights with the ImageNet head, stored as bfloat16: this keeps the shipped
    # MobileNet model under 20 MB, and the scores need no more precision than that.
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16")
    try:
        reference = load_backbone(cfg, include_top=True)
    finally:
        keras.config.set_dtype_policy(policy)
    cut, trunk, tuned_top = split_backbone(backbone, cfg.fine_tune_layers)
    # Up to the pooling layer both models have the same layers in the same order.
    imagenet_top = keras.Model(reference.layers[cut].input, reference.output, name="imagenet_top")
    imagenet_top.trainable = False

    pixels = keras.Input((None, None, 3), name="pixels")
    shared = trunk(backbone_input(features, pixels), training=False)
    logit = model.get_layer("head")(tuned_top(shared, training=False))
    imagenet_logits = imagenet_top(shared, training=False)
    p_pet, pet_energy = PetEvidence(name="pet_evidence")(imagenet_logits)
    dog_odds = DogOdds(name="dog_odds")(imagenet_logits)
    return keras.Model(pixels, {"logit": logit, "p_pet": p_pet, "pet_energy": pet_energy, "dog_odds": dog_odds},
                       name=f"{model.name}_with_unknown")

