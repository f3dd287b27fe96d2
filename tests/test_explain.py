"""Grad-CAM: the heat map finds where the class evidence is, on any model catdog builds."""

from __future__ import annotations

import numpy as np
import pytest

from catdog import config
from catdog.errors import ModelError
from catdog.inference import model_files

SIDE = 64


def quadrant_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise; "dog" images (label 1) also have a bright square somewhere in the top-left quadrant."""
    images = rng.integers(0, 120, (n, SIDE, SIDE, 3)).astype(np.uint8)
    labels = np.arange(n) % 2
    for image, label in zip(images, labels):
        if label:
            y, x = rng.integers(2, SIDE // 2 - 14, 2)
            image[y:y + 12, x:x + 12] = rng.integers(200, 256, 3)
    return images, labels


@pytest.fixture(scope="module")
def quadrant_model():
    """A tiny scratch CNN taught that the top-left square means "dog" (a few seconds on CPU)."""
    import keras

    from catdog.models.builders import build_model

    keras.utils.set_random_seed(0)
    cfg = config.resolve("tiny", ["image_size=64", "width=8", "stages=2", "dropout=0"])
    model = build_model(cfg)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
    x, y = quadrant_images(256, np.random.default_rng(0))
    model.fit(x.astype("float32"), y.astype("float32"), epochs=8, batch_size=32, verbose=0)
    x_test, y_test = quadrant_images(40, np.random.default_rng(1))
    accuracy = model.evaluate(x_test.astype("float32"), y_test.astype("float32"), verbose=0)[1]
    assert accuracy >= 0.95, f"the quadrant model did not learn (accuracy {accuracy:.2f})"
    return model


def test_heat_peaks_in_the_quadrant_holding_the_evidence(quadrant_model):
    from catdog.inference.gradcam import Explainer

    explainer = Explainer(quadrant_model)
    images, labels = quadrant_images(20, np.random.default_rng(2))
    h = SIDE // 2
    in_quadrant = 0
    for image in images[labels == 1]:
        heat = explainer.heatmap(image)
        assert heat.shape == (SIDE, SIDE) and heat.dtype == np.float32
        assert 0.0 <= heat.min() and heat.max() <= 1.0 and heat.max() > 0.5
        quadrants = [heat[:h, :h].mean(), heat[:h, h:].mean(), heat[h:, :h].mean(), heat[h:, h:].mean()]
        peak_y, peak_x = np.unravel_index(np.argmax(heat), heat.shape)
        in_quadrant += int(np.argmax(quadrants) == 0 and peak_y < h and peak_x < h)
    assert in_quadrant >= 9, f"heat peaked in the top-left quadrant for only {in_quadrant} of 10 dogs"


def test_any_size_in_same_size_out_and_layer_override(quadrant_model):
    from catdog.inference.gradcam import Explainer

    explainer = Explainer(quadrant_model)
    assert explainer.layer_name.startswith("add")  # the scratch CNN's last stage output
    for shape in ((64, 64, 3), (90, 150, 3), (301, 17, 3)):
        pixels = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
        overlay = explainer.overlay(pixels)
        assert overlay.shape == shape and overlay.dtype == np.uint8
        assert explainer.heatmap(pixels).shape == shape[:2]
    assert Explainer(quadrant_model, layer="stem").layer_name == "stem"
    with pytest.raises(ModelError, match="no layer named 'nope'"):
        Explainer(quadrant_model, layer="nope")
    with pytest.raises(ValueError, match="RGB"):
        explainer.heatmap(np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize("backbone, expected", [("MobileNet", ["features", "backbone", "conv_pw_13_relu"]),
                                                ("EfficientNetLite0", ["features", "backbone", "top_relu6"])])
def test_finds_the_last_feature_map_inside_nested_backbones(backbone, expected):
    from catdog.inference.gradcam import Explainer
    from catdog.models.builders import build_model

    model = build_model(config.resolve("tiny", [f"model={backbone}", "weights=none", "image_size=96"]))
    explainer = Explainer(model)
    assert [layer.name for layer in explainer.path] == expected
    heat = explainer.heatmap(np.random.default_rng(0).integers(0, 256, (120, 80, 3), np.uint8))
    assert heat.shape == (120, 80) and np.isfinite(heat).all()


def test_shipped_model_skips_the_detector_branch_and_exports_map_to_keras(tmp_path):
    from catdog.inference.gradcam import Explainer

    explainer = Explainer()  # the shipped model: outputs a dict, the trunk shared with the detector
    assert [layer.name for layer in explainer.path] == ["tuned_top", "top_relu6"]  # EfficientNet-Lite0's last conv
    assert explainer.overlay(np.full((50, 70, 3), 128, np.uint8)).shape == (50, 70, 3)
    assert model_files.keras_source(model_files.SHIPPED_MODEL.parent / "model_float.tflite") == model_files.SHIPPED_MODEL
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").touch()
    assert model_files.keras_source(run / "model_int8.tflite") == run / "model.keras"
    with pytest.raises(ModelError, match="no model.keras"):
        model_files.keras_source(tmp_path / "lonely.tflite")
