import keras
import numpy as np
import pytest

from catdog import config
from catdog.models.builders import ImageNetScaling, build_model, load_backbone, unfreeze_top


def test_scratch_model_takes_any_size_raw_pixels():
    model = build_model(config.resolve("tiny"))
    out = model(np.random.default_rng(0).uniform(0, 255, (3, 57, 91, 3)).astype("float32"))
    assert out.shape == (3, 1)
    assert [layer.name for layer in model.layers[1:]] == ["features", "head"]
    names = [layer.name for layer in model.get_layer("features").layers]
    assert names[1:3] == ["resize", "scaling"]  # resizing and scaling live in the model


def test_save_load_same_output(tmp_path):
    model = build_model(config.resolve("tiny"))
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # safe_mode stays on
    np.testing.assert_allclose(model(x, training=False), loaded(x, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode, expected", [("tf", [-1.0, 1.0]), ("torch", None), ("caffe", None)])
def test_imagenet_scaling_round_trips(tmp_path, mode, expected):
    x = keras.Input((2, 2, 3))
    model = keras.Model(x, ImageNetScaling(mode)(x))
    pixels = np.array([[[[0, 0, 0], [255, 255, 255]], [[10, 20, 30], [40, 50, 60]]]], "float32")
    model.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(model(pixels), loaded(pixels))
    if expected:
        np.testing.assert_allclose(np.asarray(loaded(pixels))[0, 0, :, 0], expected)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'ResNet9000'"):
        build_model(config.resolve("tiny", ["model=ResNet9000"]))


def test_offline_missing_weights_name_the_file():
    cfg = config.resolve("tiny", ["model=MobileNet", "image_size=128"])  # only 224 is cached
    with pytest.raises(RuntimeError, match="mobilenet_1_0_128_tf_no_top.h5"):
        load_backbone(cfg)


def test_mobilenet_from_offline_imagenet_weights(imagenet_weights, tmp_path):
    cfg = config.resolve("tiny", ["model=MobileNet", "image_size=224"])
    model = build_model(cfg)
    backbone = model.get_layer("features").get_layer("backbone")
    reference = keras.applications.MobileNet(weights=None, include_top=False, input_shape=(224, 224, 3))
    reference.load_weights(imagenet_weights / "mobilenet_1_0_224_tf_no_top.h5")
    np.testing.assert_array_equal(backbone.get_layer("conv1").kernel, reference.get_layer("conv1").kernel)
    unfreeze_top(model, 14)
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable == ["conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"]  # BatchNorm stays frozen


def test_weights_from_a_path(tmp_path):
    cfg = config.resolve("tiny", ["model=MobileNet", "image_size=64", "weights=none"])
    source = build_model(cfg).get_layer("features").get_layer("backbone")
    source.save_weights(tmp_path / "b.weights.h5")
    loaded = build_model(config.override(cfg, {"weights": str(tmp_path / "b.weights.h5")}))
    np.testing.assert_array_equal(
        loaded.get_layer("features").get_layer("backbone").get_layer("conv1").kernel,
        source.get_layer("conv1").kernel)
