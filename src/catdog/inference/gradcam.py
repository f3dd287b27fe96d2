"""Grad-CAM (Selvaraju et al., 2017): where in the picture the evidence for the answer lies.

    >>> explainer = Explainer("runs/NAME")        # or None for the shipped model, or a keras.Model
    >>> explainer.heatmap(pixels)                 # float (h, w) in [0, 1], the input's size
    >>> explainer.overlay(pixels)                 # uint8 RGB (h, w, 3): the photo under the heat map

The map is the ReLU of the last convolutional feature map weighted by the spatial mean of the
gradient of the *logit* (evidence for "dog"; its sign flipped when the answer is "cat", so the
map always shows the evidence for the answer given). The layer is found automatically: the
last layer with a 4-D output on the logit's path, inside nested sub-models too (the project's
backbones are nested `keras.Model`s); `layer="name"` picks another.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from catdog.data.images import load_image, thumbnail
from catdog.errors import ModelError
from catdog.inference import model_files

OVERLAY_SIDE = 768  # the longest side of the overlays `save_overlays` writes, in pixels


def _load_keras(model):
    """A keras.Model from a keras.Model, a run folder, a .keras path, an export beside one, or None."""
    from catdog.inference import keras_runtime  # imports TensorFlow and registers catdog's custom layers

    if isinstance(model, keras_runtime.keras.Model):
        return model
    path = model_files.keras_source(model_files.resolve(model, "keras"))
    return keras_runtime.load_model(path)


def _logit_model(model):
    """`model` reduced to the layers that feed its logit (drops the unknown detector's branch)."""
    import keras

    out = model.output
    if isinstance(out, dict):
        return keras.Model(model.inputs, out["logit"], name=f"{model.name}_logit")
    return model


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph")


def find_layer(model, name: str | None = None) -> list:
    """The path [sub-model, ..., layer] to the named layer, or to the last 4-D feature map."""
    found = None
    for layer in model.layers:
        if _is_model(layer):
            inner = find_layer(layer, name) if name is None or _contains(layer, name) else None
            if inner:
                found = [layer, *inner]
        elif (layer.name == name) if name else _is_feature_map(layer):
            found = [layer]
        if found and name:
            return found
    return found or []


def _contains(model, name: str) -> bool:
    return any(layer.name == name or (_is_model(layer) and _contains(layer, name)) for layer in model.layers)


def _is_feature_map(layer) -> bool:
    import keras

    if isinstance(layer, (keras.layers.InputLayer, keras.layers.Resizing, keras.layers.Rescaling)):
        return False
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # a layer called more than once has no single output
        return False
    return len(shape) == 4 and "float" in str(layer.output.dtype)


class Explainer:
    """Grad-CAM for a catdog model: `heatmap(pixels)` and `overlay(pixels)` for one uint8 RGB image.

    `model`: a run folder, a `.keras` file (an export's path finds the `.keras` it came from),
    None for the shipped model, or a `keras.Model` taking raw pixels of any size.
    """

    def __init__(self, model: str | os.PathLike | None = None, layer: str | None = None):
        self.model = _logit_model(_load_keras(model))  # first: it imports TensorFlow with its log lines held back
        import tensorflow as tf

        self.path = find_layer(self.model, layer)
        if not self.path:
            what = f"no layer named {layer!r}" if layer else "no convolutional feature map (4-D output)"
            raise ModelError(f"{getattr(model, 'name', model) or 'shipped model'}: {what}")
        self.layer_name = self.path[-1].name
        spec = tf.TensorSpec((1, None, None, 3), tf.float32)
        self._cam = tf.function(self._gradcam, input_signature=[spec], autograph=False)

    def _forward(self, model, x, depth: int, captured: list):
        """Runs `model` on `x` node by node, capturing (and watching) the target layer's output."""
        target = self.path[depth]

        def operation(op):
            if op is target and depth == len(self.path) - 1:
                def capture(*args, **kwargs):
                    out = op(*args, **kwargs)
                    captured[0].watch(out)
                    captured.append(out)
                    return out
                return capture
            if op is target:
                return lambda *args, **kwargs: self._forward(op, args[0], depth + 1, captured)
            return op

        return model._run_through_graph(x, operation_fn=operation)

    def _gradcam(self, pixels):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            captured = [tape]
            logit = tf.reshape(self._forward(self.model, pixels, 0, captured), [-1])[0]
            # The evidence for the answer given: "dog" when the logit is positive, else "cat".
            evidence = tf.where(logit >= 0, logit, -logit)
        features = captured[1]
        grads = tape.gradient(evidence, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0]
        return tf.cast(cam, tf.float32), logit

    def heatmap(self, pixels: np.ndarray) -> np.ndarray:
        """Float32 (h, w) in [0, 1] for uint8 RGB pixels (h, w, 3) of any size; 1 = strongest evidence."""
        from PIL import Image

        pixels = np.asarray(pixels)
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise ValueError(f"expected RGB pixels (h, w, 3), got shape {pixels.shape}")
        cam, _ = self._cam(pixels[None].astype(np.float32))
        cam = np.nan_to_num(cam.numpy().astype(np.float32))
        peak = cam.max()
        cam = cam / peak if peak > 0 else np.zeros_like(cam)
        h, w = pixels.shape[:2]
        resized = Image.fromarray(cam, mode="F").resize((w, h), Image.BILINEAR)
        return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)

    def overlay(self, pixels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """Uint8 RGB, the size of `pixels`: the photo with the heat map blended in where it is hot.

        Callers pass a `catdog.data.images.thumbnail` of a large photo: it is enough to see where
        the model looked (a 12-megapixel overlay helps nobody, and costs seconds).
        """
        heat = self.heatmap(pixels)
        return blend(np.asarray(pixels), heat, alpha)


def blend(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.5, colormap: str = "inferno") -> np.ndarray:
    """The photo (uint8 RGB) with `heat` (in [0, 1]) drawn over it in a colour-blind-safe colormap."""
    from matplotlib import colormaps

    colours = colormaps[colormap](heat)[..., :3] * 255.0
    # Cold regions keep more of the photo, so what the model ignored stays recognisable.
    weight = alpha * (0.35 + 0.65 * heat)[..., None]
    mixed = pixels.astype(np.float32) * (1 - weight) + colours * weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, overlay: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay).save(path)
    return path


def save_overlays(records: Iterable[dict], model, folder: str | os.PathLike,
                  side: int = OVERLAY_SIDE) -> Iterator[dict]:
    """Passes prediction `records` through, saving an overlay PNG of each answered picture into `folder`.

    Named after the picture (`cat.png`; `cat-2.png` for a second `cat.jpg` from another folder).
    `model` is the predictor's: an export finds the `.keras` it came from (LiteRT gives no gradients).
    """
    explainer = Explainer(model)
    used: set[str] = set()
    for record in records:
        if "error" not in record:
            stem, n = Path(record["path"]).stem, 1
            name = f"{stem}.png"
            while name in used:
                n += 1
                name = f"{stem}-{n}.png"
            used.add(name)
            save_overlay(Path(folder) / name, explainer.overlay(thumbnail(load_image(record["path"]), side)))
        yield record
