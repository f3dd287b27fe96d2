"""What training augmentation does to one picture: the draws `catdog augment-preview` shows in a grid."""

from __future__ import annotations

import os

import numpy as np

from catdog.config import Config
from catdog.console import quiet_stderr
from catdog.data.images import load_image


def augmented_views(image: str | os.PathLike, cfg: Config, count: int = 11,
                    seed: int = 0) -> tuple[list[tuple[np.ndarray, str]], str]:
    """([(pixels, caption)], the augmentations' names): the picture as the model sees it (resized),
    then `count` draws of the training augmentation.

    Uses the training pipeline's own layers (`augmentation.build_augmentation`), so it shows exactly
    what training does with `cfg`.
    """
    with quiet_stderr():  # TensorFlow's native log lines as it loads
        import keras

        from catdog.data.augmentation import build_augmentation, drawing_layers

    pixels = load_image(image, size=cfg.image_size)
    keras.utils.set_random_seed(seed)
    augment = build_augmentation(cfg)
    batch = np.repeat(pixels[None].astype("float32"), count, axis=0)
    # One image at a time: Keras draws one set of random factors per batch call for some layers.
    active = drawing_layers(augment) if cfg.augment else []  # augment=false: training sees the picture as is
    drawn = [np.asarray(augment(batch[i:i + 1], training=True))[0] for i in range(count)] if active else []
    items = [(pixels, "as the model sees it")]
    items += [(np.clip(d, 0, 255).astype(np.uint8), f"augmented #{i + 1}") for i, d in enumerate(drawn)]
    names = ", ".join(type(layer).__name__.removeprefix("Random").lower() for layer in active) or "off"
    return items, names
