"""The TensorFlow side of `catdog.inference.runtime`: a `.keras` model, or a SavedModel export.

Kept apart so that importing `catdog.inference.runtime` (and running LiteRT) never imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from catdog.console import quiet_stderr
from catdog.errors import ModelError
from catdog.inference.answers import ANSWER_OUTPUTS

with quiet_stderr():  # TensorFlow writes oneDNN notices to fd 2 as it loads
    import keras
    import tensorflow as tf

    from catdog.models import layers as _registers_custom_layers  # noqa: F401  (Keras finds them by name)
    from catdog.models.builders import load_model


def resize_height(model: keras.Model) -> int:
    """The side of the model's own Resizing layer (0 if it has none)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Resizing):
            return layer.height
        if isinstance(layer, keras.Model) and (height := resize_height(layer)):
            return height
    return 0


class KerasRuntime:
    """A `.keras` model behind a traced function; `detector=False` skips the unknown detector's work."""

    name = "keras"

    def __init__(self, path: str | os.PathLike, detector: bool = True):
        self.path = Path(path)
        try:
            self.model = load_model(self.path)
        except Exception as error:  # a truncated, corrupt or foreign file: Keras raises many kinds
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            raise ModelError(f"{self.path}: not a loadable Keras model ({reason})") from None
        self.image_size = resize_height(self.model)
        outputs = self.model.output
        self.output_names = sorted(outputs) if isinstance(outputs, dict) else ["logit"]
        self.detector = detector
        spec = tf.TensorSpec((None, None, None, 3), tf.float32)
        # autograph=False: the function is plain Python, nothing to convert.
        self._forward = tf.function(self._outputs, input_signature=[spec], autograph=False)

    def _outputs(self, pixels):
        out = self.model(pixels, training=False)
        if not isinstance(out, dict):
            return {"logit": out}
        # Without the detector, still the ImageNet evidence that the answer may blend in.
        return out if self.detector else {k: v for k, v in out.items() if k in ANSWER_OUTPUTS}

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Named outputs, each (N,), for pixels (N, H, W, 3) in 0..255 (uint8 or float)."""
        out = self._forward(tf.convert_to_tensor(np.asarray(pixels, np.float32)))
        return {name: value.numpy().reshape(-1) for name, value in out.items()}


class SavedModelRuntime:
    """A `catdog export --format savedmodel` folder, through its `serve` endpoint."""

    name = "savedmodel"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.loaded = tf.saved_model.load(str(self.path))
        self._serve = self.loaded.signatures["serving_default"]
        spec = self._serve.structured_input_signature[1]["pixels"]
        self.image_size = int(spec.shape[1] or 0)  # 0: any size, the model resizes
        self.output_names = sorted(self._serve.structured_outputs)

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Named outputs, each (N,), for uint8 pixels (N, H, W, 3)."""
        pixels = tf.constant(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
        return {name: value.numpy().reshape(-1) for name, value in self._serve(pixels=pixels).items()}
