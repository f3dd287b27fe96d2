"""What `catdog audit` looks with: a model's ImageNet side (`catdog.models.pet_detector.imagenet_view`),
run by LiteRT like `catdog predict`, or by Keras.

    >>> view = load_view(None)                 # the shipped model's; converted once, then cached
    >>> view.run(pixels)                       # {"features": (N, 1280), "imagenet_logits": (N, 1000), ...}
    >>> view.key                               # names the model and this code: the cache of looks is kept under it

The LiteRT file is made the first time a model is audited (about a minute) and kept in
`$CATDOG_HOME/audit/`, named by the model's SHA-256, so a changed model gets a new one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from catdog.console import quiet_stderr
from catdog.errors import ModelError
from catdog.home import home
from catdog.inference import model_files
from catdog.inference.runtime import LiteRTRuntime

VERSION = 2  # of what a look holds: a change here makes every cached look stale (2: tuned_region_logits)
OUTPUTS = ("features", "imagenet_logits", "region_logits", "tuned_region_logits")


def audit_home() -> Path:
    return home() / "audit"


def model_key(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{path.stem}-{digest}-v{VERSION}"


class KerasView:
    """The view as a Keras model behind a traced function (no conversion: what tests use)."""

    def __init__(self, model):
        import numpy as np
        import tensorflow as tf

        from catdog.inference import keras_runtime

        self.model, self._np = model, np
        self.image_size = keras_runtime.resize_height(model)
        spec = tf.TensorSpec((None, None, None, 3), tf.float32)
        self._forward = tf.function(lambda pixels: model(pixels, training=False), input_signature=[spec],
                                    autograph=False)

    def run(self, pixels):
        return {name: value.numpy() for name, value in self._forward(self._np.asarray(pixels, "float32")).items()}


def _view_of(keras_file: Path, float32: bool = False):
    """The view of the model in `keras_file` (in float32 throughout, for LiteRT), or a ModelError."""
    from catdog.inference import keras_runtime
    from catdog.models.pet_detector import imagenet_view

    model = keras_runtime.KerasRuntime(keras_file).model
    if float32:
        from catdog.export.converters import float32_copy

        model = float32_copy(model)
    try:
        return imagenet_view(model)
    except ValueError as error:
        raise ModelError(f"{keras_file}: {error}; `catdog audit` looks with it") from None


def _convert(view, out: Path) -> None:
    """Writes `view` as a float LiteRT file (float16 weights, as `catdog export` does)."""
    from catdog.export.converters import litert_copy
    from catdog.inference.keras_runtime import resize_height

    flatbuffer = litert_copy(view, resize_height(view))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_bytes(flatbuffer)
    partial.rename(out)  # never a half-written file under the final name


def load_view(model: str | os.PathLike | None = None, runtime: str = "auto", threads: int | None = None):
    """The view of `model` (a run folder or .keras file with the pet detector; None: the shipped model).

    "auto" runs it on LiteRT (converted on first use), "keras" on Keras. The object has `run(pixels)`,
    `image_size` and `key` (the model's hash and `VERSION`).
    """
    if runtime not in ("auto", "keras"):
        raise ValueError(f"unknown runtime {runtime!r}: choose auto or keras")
    keras_file = model_files.resolve(model, "keras")
    key = model_key(keras_file)
    converted = audit_home() / f"{key}.tflite"
    if runtime == "keras":
        view = KerasView(_view_of(keras_file))
    else:
        if not converted.exists():
            with quiet_stderr(discard=(ModelError,)):
                _convert(_view_of(keras_file, float32=True), converted)
        view = LiteRTRuntime(converted, threads=threads)
    view.key = key
    return view
