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

`with_pet_similarity` adds a third score, `pet_similarity`: how close the picture's pooled ImageNet
features come to the nearest of a few thousand prototypes of the training pets. It needs no
pictures of non-pets, and catches animals that the ImageNet classifier half mistakes for pets.
"""

from __future__ import annotations

import keras

from catdog.config import Config
from catdog.models.builders import backbone_input, load_backbone, split_backbone
from catdog.models.layers import DogOdds, PetEvidence, PetSimilarity


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


def with_pet_similarity(model: keras.Model, prototypes) -> keras.Model:
    """`model` (with the pet detector) with one more output, "pet_similarity" (`PetSimilarity`), from
    `prototypes` (count, C) in the space of the pooled ImageNet features; earlier prototypes are replaced.

    The same layers and weights: only the ImageNet top now also hands out its pooled features.
    """
    trunk, top = _detector_parts(model)
    if not isinstance(top.output, list):  # first time: the top gives its pooled features too
        top = keras.Model(top.input, [_pooling(top).output, top.output], name="imagenet_top")
    pixels = keras.Input((None, None, 3), name="pixels")
    shared = trunk(_scaled(model, pixels, trunk), training=False)
    logit = model.get_layer("head")(model.get_layer("tuned_top")(shared, training=False))
    features, imagenet_logits = top(shared, training=False)
    p_pet, pet_energy = model.get_layer("pet_evidence")(imagenet_logits)
    similarity = PetSimilarity(len(prototypes), name="pet_similarity")
    outputs = {"logit": logit, "p_pet": p_pet, "pet_energy": pet_energy,
               "dog_odds": model.get_layer("dog_odds")(imagenet_logits), "pet_similarity": similarity(features)}
    similarity.set_prototypes(prototypes)
    return keras.Model(pixels, outputs, name=model.name)


def _detector_parts(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The shared trunk and the ImageNet top of a model with the pet detector."""
    try:
        return model.get_layer("trunk"), model.get_layer("imagenet_top")
    except ValueError:
        raise ValueError(f"{model.name}: no ImageNet pet detector (a model on an ImageNet backbone, "
                         f"trained with unknown=true, has one)") from None


def _scaled(model: keras.Model, pixels, trunk: keras.Model):
    """`pixels` through the model's layers before `trunk` (resizing and scaling, as the model does them)."""
    x = pixels
    for layer in model.layers[1:]:
        if layer is trunk:
            return x
        x = layer(x)
    return x


def imagenet_view(model: keras.Model, tuned_windows: bool = True) -> keras.Model:
    """The ImageNet side of a model with the pet detector: what `catdog audit` looks with.

    Outputs, from one forward pass through the trunk and the *original* top (never the
    fine-tuned blocks, which have learned the very labels being audited):
    - "features": the pooled ImageNet features (N, C), where near-duplicates are neighbours
      and a linear model tells cats from dogs;
    - "imagenet_logits": the ImageNet classifier's 1000 logits (N, 1000);
    - "region_logits": the same classifier on 3 x 3 overlapping windows of the last feature map
      (N, 9, 1000). It is linear on pooled features, so on a window's pooled features it says
      what that part of the picture shows: a cat on the left and a dog on the right, which the
      whole picture's softmax blurs into one undecided answer.
    and one output from the fine-tuned side, for parts of the picture only:
    - "tuned_region_logits": the fine-tuned cat/dog logit on the same 9 windows of the tuned
      blocks' last feature map (N, 9). ImageNet calls much of a fluffy cat a dog breed; the tuned
      classifier does not, and on a window it answers for that part, not for the picture's label.
      Left out with `tuned_windows=False` (the fine-tuned blocks then do not run).
    """
    trunk, top = _detector_parts(model)
    pixels = keras.Input((None, None, 3), name="pixels")
    shared = trunk(_scaled(model, pixels, trunk), training=False)
    maps = _feature_map(top, "imagenet_feature_map")(shared, training=False)
    classifier = top.layers[-1]
    pooled = _pooling(top)(maps)
    outputs = {"features": pooled, "imagenet_logits": classifier(pooled),
               "region_logits": classifier(_windows(maps, "windows"))}
    if tuned_windows:
        tuned_maps = _feature_map(model.get_layer("tuned_top"), "tuned_feature_map")(shared, training=False)
        logit = next(layer for layer in model.get_layer("head").layers if isinstance(layer, keras.layers.Dense))
        outputs["tuned_region_logits"] = keras.layers.Reshape((-1,), name="tuned_windows_logits")(
            logit(_windows(tuned_maps, "tuned_windows")))
    return keras.Model(pixels, outputs, name="imagenet_view")


def imagenet_blocks(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) of a model with the pet detector, split where fine-tuning starts: `bottom` takes
    pixels to the shared trunk's maps (resizing and scaling included), `top` takes those maps through
    the *original* ImageNet top blocks to their pooled features. What `catdog audit --fine-tune` trains
    again, from ImageNet's weights, on each fold."""
    trunk, top = _detector_parts(model)
    pixels = keras.Input((None, None, 3), name="pixels")
    bottom = keras.Model(pixels, trunk(_scaled(model, pixels, trunk), training=False), name="bottom")
    return bottom, keras.Model(top.input, _pooling(top).output, name="imagenet_blocks")


def _pooling(top: keras.Model) -> keras.layers.Layer:
    return next(layer for layer in top.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))


def _feature_map(top: keras.Model, name: str) -> keras.Model:
    """`top` up to its global pooling: its last feature map (N, h, w, C)."""
    return keras.Model(top.input, _pooling(top).input, name=name)


def _windows(maps, name: str):
    """(N, 9, C): the feature map averaged over 3 x 3 overlapping windows (of 3 x 3 cells, every 2, at 7 x 7:
    about 96 px of a 224 px picture)."""
    side = maps.shape[1]
    window, stride = max(1, side // 2), max(1, (side - side // 2) // 2)
    windows = keras.layers.AveragePooling2D(window, strides=stride, name=name)(maps)
    return keras.layers.Reshape((-1, maps.shape[-1]), name=f"{name}_rows")(windows)
