import json

import keras
import numpy as np
import pytest
from conftest import write_kaggle_tree

from catdog import config
from catdog.errors import ModelError
from catdog.model import build_model, unfreeze_top
from catdog.predict import Predictor, Scored
from catdog.train import train
from catdog.unknown import PET_CLASSES, attach_pet_detector, fit_threshold


def test_pet_classes_are_the_imagenet_dogs_and_cats():
    assert len(PET_CLASSES) == 123 and PET_CLASSES[0] == 151 and PET_CLASSES[-1] == 285


def test_threshold_gives_up_the_budgeted_share():
    p_pet = np.random.default_rng(0).uniform(0, 1, 10000)
    threshold = fit_threshold(p_pet, budget=0.01)
    assert abs(np.mean(p_pet < threshold) - 0.01) < 0.001


def test_detector_uses_the_original_top_and_round_trips(imagenet_weights, tmp_path):
    cfg = config.resolve("tiny", ["model=MobileNet", "image_size=224", "fine_tune_layers=14"])
    model = build_model(cfg)
    unfreeze_top(model, cfg.fine_tune_layers)
    tuned = model.get_layer("features").get_layer("backbone").get_layer("conv_pw_13")
    tuned.kernel.assign(tuned.kernel * 0.0)  # "fine-tuning" that wrecks the ImageNet features
    detector = attach_pet_detector(model, cfg)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    out = detector(pixels, training=False)
    np.testing.assert_allclose(out["logit"], model(pixels, training=False), rtol=1e-5, atol=1e-5)

    reference = keras.applications.MobileNet(weights=None, input_shape=(224, 224, 3))
    reference.load_weights(imagenet_weights / "mobilenet_1_0_224_tf.h5")
    expected = reference(pixels / 127.5 - 1.0).numpy()[:, list(PET_CLASSES)].sum(axis=1)
    np.testing.assert_allclose(np.ravel(out["p_pet"]), expected, rtol=0.1, atol=2e-3)  # bfloat16 weights

    detector.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(loaded(pixels, training=False)["p_pet"], out["p_pet"], rtol=1e-5)
    assert (tmp_path / "d.keras").stat().st_size < 20 * 2**20  # the shipped model must stay small


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("unknown")
    tree = write_kaggle_tree(root / "data", per_class=20)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CATDOG_HOME", str(root / "home"))
        cfg = config.resolve("tiny", [f"data={tree}", f"runs_dir={root / 'runs'}", "name=m", "model=MobileNet",
                                      "image_size=224", "fine_tune_layers=0", "head_epochs=2"])
        try:
            return train(cfg)
        except RuntimeError as error:  # no offline weights: the ImageNet head is needed here
            pytest.skip(str(error))


def test_training_a_backbone_fits_the_unknown_threshold(mobilenet_run, tmp_path):
    meta = json.loads((mobilenet_run / "model.json").read_text())
    assert 0.0 < meta["unknown_threshold"] < 1.0 and meta["unknown_budget"] == 0.005
    predictor = Predictor(mobilenet_run)
    assert predictor.unknown and predictor.has_detector
    low, high = meta["unknown_threshold"] / 2, min(1.0, meta["unknown_threshold"] * 2)
    assert predictor.record(Scored("a.jpg", 3.0, low))["label"] == "unknown"
    assert predictor.record(Scored("b.jpg", 3.0, high))["label"] == "dog"
    switched_off = Predictor(mobilenet_run, unknown=False)
    assert switched_off.record(Scored("a.jpg", 3.0, low)) == {"path": "a.jpg", "label": "dog", "p_dog": pytest.approx(
        1 / (1 + np.exp(-3.0 / meta["temperature"])), abs=1e-6)}
    assert "p_pet" not in next(switched_off.predict_paths([str(mobilenet_run / "../../data/train/cat.0.jpg")]))


def test_scratch_models_have_no_detector(tmp_path, kaggle_tree):
    run_dir = train(config.resolve("tiny", [f"data={kaggle_tree}", f"runs_dir={tmp_path}", "name=s"]))
    assert "unknown_threshold" not in json.loads((run_dir / "model.json").read_text())
    assert not Predictor(run_dir).unknown
    with pytest.raises(ModelError, match="no fitted unknown detector"):
        Predictor(run_dir, unknown=True)
