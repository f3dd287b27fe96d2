"""Model builders: a CPU-sized CNN from scratch, or an ImageNet backbone with a new head.

Every model takes raw RGB pixels (0..255, any size) and returns one logit, the evidence for
"dog". Resizing and feature scaling live inside the model, so a saved or served model cannot
be fed wrongly scaled input.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from pathlib import Path

import keras

from catdog.config import BACKBONES, Config
from catdog.console import quiet_stderr
from catdog.models.layers import ImageNetScaling


def _scratch_features(x, cfg: Config):
    """A small ResNet-like CNN: a strided stem, then stages of two 3x3 convs with a shortcut.

    Plain 3x3 convolutions, not separable ones: on a CPU, oneDNN runs them at several times
    the FLOP rate, so the same time buys more accuracy (measured in benchmarks/).
    """
    x = keras.layers.Rescaling(1.0 / 255, name="scaling")(x)
    x = keras.layers.Conv2D(cfg.width, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    # momentum 0.9: moving statistics settle in a few hundred steps, so short runs evaluate well.
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.Activation("relu")(x)
    for stage in range(cfg.stages):
        filters = cfg.width * 2**stage
        # Average-pool then 1x1 conv (ResNet-D), not a strided 1x1 conv: besides skipping no
        # pixels, it avoids a oneDNN fault in TF 2.21 whose strided 1x1 conv gradient corrupts
        # the heap when the batch size changes (a last, smaller batch).
        shortcut = keras.layers.AveragePooling2D(2, padding="same")(x)
        shortcut = keras.layers.Conv2D(filters, 1, use_bias=False)(shortcut)
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
            x = keras.layers.Activation("relu")(x)
        # Down-sample, then add the shortcut so gradients reach early stages.
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = keras.layers.Add()([x, shortcut])
    return keras.layers.GlobalAveragePooling2D(name="features")(x)


def load_backbone(cfg: Config, include_top: bool = False) -> keras.Model:
    """`keras.applications.<cfg.model>` without its top and globally pooled, or with its top
    giving ImageNet logits (no softmax).

    `cfg.weights` is "imagenet" (from the Keras cache, `$KERAS_HOME/models`, downloaded when
    online), "none", or a path to a weights file.
    """
    if cfg.model not in BACKBONES:
        raise ValueError(f"unknown model {cfg.model!r}; choose 'scratch' or one of: {', '.join(BACKBONES)}")
    name = BACKBONES[cfg.model][0]
    module = importlib.import_module(name if "." in name else f"keras.applications.{name}")
    constructor = getattr(module, cfg.model)
    kwargs = dict(include_top=include_top, input_shape=(cfg.image_size, cfg.image_size, 3))
    if include_top:
        kwargs["classifier_activation"] = None
    else:
        kwargs["pooling"] = "avg"
    imagenet = cfg.weights == "imagenet"
    try:
        backbone = constructor(weights="imagenet" if imagenet else None, **kwargs)
    except Exception as error:
        if not imagenet or "fetch failure" not in str(error):
            raise
        url = re.search(r"https?://\S+?\.h5", str(error))
        file = url.group(0).rsplit("/", 1)[-1] if url else "the weights file"
        raise RuntimeError(
            f"cannot download ImageNet weights for {cfg.model} (offline?): place {file} in "
            f"{os.path.join(os.environ.get('KERAS_HOME', '~/.keras'), 'models')} or set weights=PATH ({error})"
        ) from None
    if not imagenet and cfg.weights.lower() != "none":
        backbone.load_weights(cfg.weights)
    return backbone


def build_model(cfg: Config) -> keras.Model:
    """The classifier: `head(features(pixels))`, two named sub-models.

    `features` resizes, scales and extracts pooled features (scratch CNN or backbone); `head`
    is dropout and one logit. Training fits the head alone on cached features first when the
    features come from a pretrained backbone.

        >>> model = build_model(resolve("tiny"))
        >>> model(np.zeros((2, 100, 80, 3))).shape
        TensorShape([2, 1])
    """
    pixels = keras.Input((None, None, 3), name="pixels")
    x = keras.layers.Resizing(cfg.image_size, cfg.image_size, name="resize")(pixels)
    if cfg.model == "scratch":
        pooled = _scratch_features(x, cfg)
    else:
        backbone = load_backbone(cfg)
        backbone.name = "backbone"
        mode = BACKBONES[cfg.model][1]
        if mode != "raw":
            x = ImageNetScaling(mode, name="scaling")(x)
        # training=False keeps BatchNorm in inference mode, also while fine-tuning.
        pooled = backbone(x, training=False)
    features = keras.Model(pixels, pooled, name="features")
    head_in = keras.Input(pooled.shape[1:], name="pooled")
    # float32 even under mixed precision: the logit feeds the loss, calibration and thresholds.
    head_out = keras.layers.Dense(1, name="logit", dtype="float32")(keras.layers.Dropout(cfg.dropout)(head_in))
    head = keras.Model(head_in, head_out, name="head")
    outer = keras.Input((None, None, 3), name="pixels")
    return keras.Model(outer, head(features(outer)), name=f"catdog_{cfg.model}")


@contextlib.contextmanager
def precision(name: str):
    """Layers built inside compute in `name`: "float32", or "bfloat16" (Keras' mixed_bfloat16:
    bfloat16 maths, float32 weights), or "auto" (`resolve_precision`). About 1.7x the training
    rate of float32 on CPUs with AVX512-BF16 or AMX for the scratch CNN (on an AMD EPYC), slower
    for EfficientNet-Lite0 even there (Sapphire Rapids); emulated, so slower, on others.
    Restores the previous policy on exit."""
    previous = keras.mixed_precision.global_policy()
    name = resolve_precision(name)[0]
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if name == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def resolve_precision(name: str) -> tuple[str, str]:
    """(the precision to train in, why): `name`, or for "auto" bfloat16 where this CPU computes it
    natively (AVX512-BF16 or AMX), else float32."""
    if name != "auto":
        return name, f"precision={name}"
    native = cpu_has_bfloat16()
    return ("bfloat16", "precision=auto: this CPU has AVX512-BF16 or AMX -> bfloat16") if native else \
        ("float32", "precision=auto: this CPU has no native bfloat16 -> float32")


def cpu_has_bfloat16() -> bool | None:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); None where unknown."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def load_model(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """The model in a `.keras` file (catdog's own layers registered). TensorFlow writes a oneDNN notice
    to fd 2 as it makes float16 weights on a CPU without AVX-512 (an AMD EPYC, for one); it is held
    back, as at import, so that `--quiet` stays quiet wherever a model is loaded."""
    with quiet_stderr(discard=(Exception,)):
        return keras.saving.load_model(path, compile=compile)


def save_float32(path: str | os.PathLike, cfg: Config) -> None:
    """Rewrites the model at `path` as float32 throughout (same weights), so a model trained in
    bfloat16 predicts, calibrates and exports at full precision on any CPU. A float32 run's
    model is left as it is."""
    if cfg.precision == "float32":
        return
    trained = load_model(path, compile=True)
    if not any(layer.dtype_policy.name.startswith("mixed") for layer in trained.get_layer("features").layers):
        return  # float32 already: a resumed run's, or one that calibrate has since extended
    with precision("float32"):
        model = build_model(cfg)
    model.set_weights(trained.get_weights())
    model.save(Path(path))


def backbone_input(features: keras.Model, pixels):
    """`pixels` through the layers of `features` before its backbone (resize and scaling, as trained)."""
    x = pixels
    for layer in features.layers[1:]:
        if layer is features.get_layer("backbone"):
            return x
        x = layer(x)
    raise ValueError(f"{features.name} has no backbone")


def split_backbone(backbone: keras.Model, top_layers: int) -> tuple[int, keras.Model, keras.Model]:
    """(cut, trunk, top): `backbone` as two models in a row, `top` with its top `top_layers`
    layers (those that fine-tuning trains), at least the pooling; sharing the backbone's layers.

    In a plain stack (MobileNet v1) the cut is where the top layers begin; in a residual network
    a shortcut may jump over that point, and the cut moves down to the start of its block.
    """
    pooling = next(i for i, layer in enumerate(backbone.layers) if "pool" in type(layer).__name__.lower())
    for cut in range(min(len(backbone.layers) - top_layers, pooling), 0, -1):
        try:
            top = keras.Model(backbone.layers[cut].input, backbone.output, name="tuned_top")
        except ValueError:  # a shortcut from below `cut` feeds a layer above it
            continue
        return cut, keras.Model(backbone.input, backbone.layers[cut - 1].output, name="trunk"), top
    raise ValueError(f"{backbone.name}: no layer splits the network in two")


def unfreeze_top(model: keras.Model, layers: int) -> None:
    """Makes the top `layers` layers of the backbone trainable; BatchNorm stays frozen."""
    backbone = model.get_layer("features").get_layer("backbone")
    backbone.trainable = True
    cut = len(backbone.layers) - layers
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
