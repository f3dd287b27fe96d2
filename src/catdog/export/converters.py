"""The TensorFlow calls behind `catdog.export.exporter`: a float32 copy, a uint8 SavedModel, TFLite conversion."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` with every layer in float32: the unknown detector's ImageNet top is stored as bfloat16,
    which TFLite kernels (and XNNPACK) do not run."""
    config = json.loads(json.dumps(model.get_config()).replace('"bfloat16"', '"float32"'))
    copy = model.__class__.from_config(config)
    copy.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    return copy


def write_savedmodel(model: keras.Model, out: Path, size: int | None, flat: bool = True) -> None:
    """A SavedModel whose `serve` endpoint takes uint8 pixels (N, size, size, 3) and returns each output
    as (N,), or as the model gives it with `flat=False` (features, all the ImageNet logits)."""
    names = sorted(model.output) if isinstance(model.output, dict) else ["logit"]

    def serve(pixels):
        outputs = model(tf.cast(pixels, tf.float32), training=False)
        outputs = outputs if isinstance(outputs, dict) else {"logit": outputs}
        return {name: tf.reshape(outputs[name], [-1]) if flat else outputs[name] for name in names}

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None, size, size, 3), tf.uint8, name="pixels")
    archive.add_endpoint("serve", tf.function(serve, autograph=False), input_signature=[spec])
    archive.write_out(str(out), verbose=False)


# Ops of the unknown detector's evidence (log-sum-exp over ImageNet logits): in int8 their
# outputs keep 256 levels, coarser than the p_pet threshold (~0.01) they are compared with.
# RESHAPE: every output ends in one (`write_savedmodel`'s flattening); in int8 it would clip the
# output again to the range the representative pictures gave it.
FLOAT_OPS = ["EXP", "LOG", "SUM", "REDUCE_MAX", "GATHER", "SELECT_V2", "RESHAPE"]
# Layers kept float whatever their measured error: pet_similarity's cosine (unit vectors of 1,280
# numbers near 0.03 each, a maximum over 2,048 dot products) flattened to one value in int8.
FLOAT_LAYERS = ("pet_similarity",)
INT8_ERROR_LIMIT = 1.5  # RMS error of a layer's int8 output, in quantisation steps, above which it stays float
DEBUG_IMAGES = 16


def litert_copy(model: keras.Model, size: int | None, float16_weights: bool = True) -> bytes:
    """A float TFLite flatbuffer of `model` (float32 layers) for uint8 pixels (N, size, size, 3),
    its outputs kept as the model gives them: weights stored as float16 (`convert`), or as float32
    for LiteRT to run a part of a network exactly, within float rounding (`catdog.training.views`)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_savedmodel(model, Path(tmp) / "saved", size, flat=False)
        if float16_weights:
            return convert(Path(tmp) / "saved")
        return tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "saved")).convert()


def convert(saved_model: Path, int8_data: Iterable[np.ndarray] | None = None) -> bytes:
    """The TFLite flatbuffer of a SavedModel.

    Float: float32 arithmetic, weights stored as float16 (half the file; XNNPACK widens them once
    at load, so it runs exactly as fast; answers matched float32 weights on all of 1,000 test
    images, logits within 0.11). With `int8_data` (batches of one uint8 image): post-training
    quantisation calibrated on them, int8 everywhere except where int8 is measured to be too
    coarse (`int8_float_layers`).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8_data is None:
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    images = list(int8_data)
    if not images:
        raise ValueError("int8 quantisation needs representative images; none were given")
    converter.representative_dataset = lambda: ({"pixels": image} for image in images)
    keep = int8_float_layers(converter, images[:DEBUG_IMAGES])
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=FLOAT_OPS, denylisted_nodes=keep)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([image] for image in images[:1]), debug_options=options)
    return debugger.get_nondebug_quantized_model()


def int8_float_layers(converter, images: list[np.ndarray]) -> list[str]:
    """Output tensors whose int8 error, measured on `images` against float, exceeds INT8_ERROR_LIMIT steps,
    and those of FLOAT_LAYERS.

    For the shipped MobileNet: the ImageNet logits of the unknown detector (23 steps: 1,000
    classes in 256 levels), the first two layers (2.5) and the last pointwise convolutions (1.5-2.2).
    Full int8 lost 0.3 point of accuracy and changed 0.8% of the test split's answers; with these
    five layers in float, 0.3% change and the accuracy is Keras's (TensorFlow's quantisation
    debugger workflow: measure each layer's error, keep the worst in float).
    """
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([image] for image in images))
    debugger.run()
    table = io.StringIO()
    debugger.layer_statistics_dump(table)  # one row per quantised output: error metrics, scale, name
    table.seek(0)
    rows = csv.DictReader(table)
    return [row["tensor_name"] for row in rows
            if any(f"/{layer}" in row["tensor_name"] for layer in FLOAT_LAYERS)
            or float(row["scale"]) > 0
            and np.sqrt(float(row["mean_squared_error"])) / float(row["scale"]) > INT8_ERROR_LIMIT]
