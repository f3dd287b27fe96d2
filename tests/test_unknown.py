import json
import shutil

import keras
import numpy as np
import pytest
from conftest import mobilenet_weights, module_workspace
from PIL import Image
from scipy.special import logsumexp

from catdog import config
from catdog.config import ConfigError
from catdog.data import run_data
from catdog.errors import ModelError
from catdog.inference.model_files import SHIPPED_MODEL
from catdog.inference.predictor import Predictor, Scored
from catdog.models.builders import build_model, unfreeze_top
from catdog.models.layers import CAT_CLASSES, DOG_CLASSES, PET_CLASSES
from catdog.models.pet_detector import attach_pet_detector
from catdog.training.calibrate import calibrate, fit_thresholds
from catdog.training.train import train


def test_pet_classes_are_the_imagenet_dogs_and_cats():
    assert len(PET_CLASSES) == 123 and PET_CLASSES[0] == 151 and PET_CLASSES[-1] == 285


def test_one_score_gives_up_the_budgeted_share():
    p_pet = np.random.default_rng(0).uniform(0, 1, 10000)
    threshold = fit_thresholds({"p_pet": p_pet}, budget=0.01)["p_pet"]
    assert abs(np.mean(p_pet < threshold) - 0.01) < 0.001


def test_a_larger_budget_gives_higher_thresholds():
    rng = np.random.default_rng(2)
    scores = {"a": rng.normal(size=5000), "b": rng.exponential(size=5000)}
    strict, loose = fit_thresholds(scores, 0.005), fit_thresholds(scores, 0.05)
    assert all(loose[name] > strict[name] for name in scores)


@pytest.mark.parametrize("correlation", [0.0, 0.9, 1.0])
def test_scores_share_the_budget(correlation):
    rng = np.random.default_rng(1)
    a = rng.normal(size=20000)
    b = correlation * a + np.sqrt(1 - correlation**2) * rng.normal(size=a.size)
    thresholds = fit_thresholds({"a": a, "b": b}, budget=0.01)
    given_up = np.mean((a < thresholds["a"]) | (b < thresholds["b"]))
    assert 0.0095 <= given_up <= 0.01
    # Independent scores split it in about two; identical ones each use all of it.
    expected_each = 0.01 if correlation == 1.0 else 0.005 if correlation == 0.0 else None
    if expected_each:
        assert abs(np.mean(a < thresholds["a"]) - expected_each) < 0.001


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

    reference = keras.applications.MobileNet(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    reference.load_weights(imagenet_weights / "mobilenet_1_0_224_tf.h5")
    logits = reference(pixels / 127.5 - 1.0).numpy().astype("float64")
    pet_energy = logsumexp(logits[:, list(PET_CLASSES)], axis=1)
    np.testing.assert_allclose(np.ravel(out["pet_energy"]), pet_energy, atol=0.15)  # bfloat16 weights
    np.testing.assert_allclose(np.ravel(out["p_pet"]), np.exp(pet_energy - logsumexp(logits, axis=1)),
                               rtol=0.15, atol=2e-3)
    dog_odds = logsumexp(logits[:, list(DOG_CLASSES)], axis=1) - logsumexp(logits[:, list(CAT_CLASSES)], axis=1)
    np.testing.assert_allclose(np.ravel(out["dog_odds"]), dog_odds, atol=0.3)

    detector.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    for name in ("p_pet", "pet_energy", "dog_odds"):
        np.testing.assert_allclose(loaded(pixels, training=False)[name], out[name], rtol=1e-5)
    assert (tmp_path / "d.keras").stat().st_size < 20 * 2**20  # the shipped model must stay small


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory):
    with module_workspace(tmp_path_factory, "unknown", per_class=20) as (root, tree):
        cfg = config.resolve("tiny", [f"data={tree}", f"runs_dir={root / 'runs'}", "name=m", "model=MobileNet",
                                      "image_size=224", "fine_tune_layers=0", "head_epochs=2"])
        mobilenet_weights()  # the ImageNet head is needed here
        return train(cfg)


def test_training_a_backbone_fits_the_unknown_thresholds(mobilenet_run, tmp_path):
    meta = json.loads((mobilenet_run / "model.json").read_text())
    thresholds = meta["unknown_thresholds"]
    assert 0.0 < thresholds["p_pet"] < 1.0 and np.isfinite(thresholds["pet_energy"])
    assert meta["unknown_budget"] == 0.005
    predictor = Predictor(mobilenet_run)
    assert predictor.unknown and predictor.has_detector
    high = {"p_pet": min(1.0, thresholds["p_pet"] * 2), "pet_energy": thresholds["pet_energy"] + 1}
    for low_one in thresholds:  # either score alone below its threshold makes it "unknown"
        low = {**high, low_one: thresholds[low_one] - (thresholds[low_one] / 2 if low_one == "p_pet" else 1)}
        assert predictor.record(Scored("a.jpg", 3.0, low))["label"] == "unknown"
    record = predictor.record(Scored("b.jpg", 3.0, high))
    assert record["label"] == "dog" and record["pet_energy"] == pytest.approx(high["pet_energy"], abs=1e-6)
    switched_off = Predictor(mobilenet_run, unknown=False)
    assert switched_off.record(Scored("a.jpg", 3.0, low)) == {"path": "a.jpg", "label": "dog", "p_dog": pytest.approx(
        1 / (1 + np.exp(-3.0 / meta["temperature"])), abs=1e-6)}
    assert "p_pet" not in next(switched_off.predict_paths([str(mobilenet_run / "../../data/train/cat.0.jpg")]))


def test_a_blend_in_model_json_weighs_in_the_imagenet_odds(mobilenet_run):
    meta = json.loads((mobilenet_run / "model.json").read_text())
    image = str(mobilenet_run / "../../data/train/dog.0.jpg")
    for unknown in (None, False):  # without the detector too: the answer still needs the odds
        plain = next(Predictor(mobilenet_run, meta=meta, unknown=unknown).score_paths([image]))
        assert plain.dog_odds is not None and np.isfinite(plain.dog_odds)
        blend = {"logit": 0.5, "dog_odds": 2.0, "bias": -1.0}
        blended = next(Predictor(mobilenet_run, meta={**meta, "blend": blend}, unknown=unknown).score_paths([image]))
        assert blended.logit == pytest.approx(0.5 * plain.logit + 2.0 * plain.dog_odds - 1.0, rel=1e-4, abs=1e-4)
    with pytest.raises(ModelError, match="blends"):
        Predictor(mobilenet_run, meta={**meta, "blend": {"logit": 1.0, "horse_odds": 1.0}})


def test_a_learned_pet_score_in_model_json_decides_unknown(mobilenet_run):
    meta = json.loads((mobilenet_run / "model.json").read_text())
    spec = {"pet_energy": 1.0, "log_p_pet": 2.0, "bias": -10.0}
    predictor = Predictor(mobilenet_run, meta={**meta, "pet_score": spec, "unknown_thresholds": {"pet_score": 0.0}})
    assert predictor.unknown and "pet_score" in predictor.detector_scores
    record = next(predictor.predict_paths([str(mobilenet_run / "../../data/train/dog.0.jpg")]))
    expected = record["pet_energy"] + 2.0 * np.log(record["p_pet"]) - 10.0
    assert record["pet_score"] == pytest.approx(expected, abs=1e-3)
    assert (record["label"] == "unknown") == (expected < 0.0)
    high, low = ({"p_pet": 0.5, "pet_energy": e} for e in (20.0, 5.0))
    assert predictor.record(Scored("a.jpg", 3.0, {**high, "pet_score": 1.0}))["label"] == "dog"
    assert predictor.record(Scored("a.jpg", 3.0, {**low, "pet_score": -1.0}))["label"] == "unknown"


def test_a_model_json_from_before_pet_energy_still_reads(mobilenet_run):
    meta = json.loads((mobilenet_run / "model.json").read_text())
    meta["unknown_threshold"] = meta.pop("unknown_thresholds")["p_pet"]
    predictor = Predictor(mobilenet_run, meta=meta)
    assert predictor.unknown_thresholds == {"p_pet": meta["unknown_threshold"]}
    very_low_energy = {"p_pet": 1.0, "pet_energy": -100.0}
    assert predictor.record(Scored("a.jpg", 3.0, very_low_energy))["label"] == "dog"


def test_thresholds_for_scores_the_model_lacks_are_an_error(mobilenet_run):
    with pytest.raises(ModelError, match="thresholds for"):
        Predictor(mobilenet_run, meta={"unknown_thresholds": {"p_horse": 0.5}})


def test_scratch_models_have_no_detector(tmp_path, kaggle_tree):
    run_dir = train(config.resolve("tiny", [f"data={kaggle_tree}", f"runs_dir={tmp_path}", "name=s"]))
    assert "unknown_thresholds" not in json.loads((run_dir / "model.json").read_text())
    assert not Predictor(run_dir).unknown
    with pytest.raises(ModelError, match="no fitted unknown detector"):
        Predictor(run_dir, unknown=True)


def test_recalibrating_with_another_budget(mobilenet_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mobilenet_run, run)
    # 4 validation pictures are too few for a budget to tell (any share of them is 0 or >= 25%):
    # the copy's training pictures join its validation split, capped by max_images as calibrate caps it.
    manifest = (run / "manifest.csv").read_text().replace(",train\n", ",val\n")
    (run / "manifest.csv").write_text(manifest)
    cfg = config.load(run / "config.json")
    pets = [str(e.path) for e in run_data.split(run, "val", cfg.max_images, cfg.seed)]
    assert len(pets) == 32

    def given_up() -> int:
        return sum(r["label"] == "unknown" for r in Predictor(run).predict_paths(pets))

    before = calibrate(run)
    assert before["unknown_budget"] == 0.005 and given_up() == 0  # 0.5% of 32 pets: none
    after = calibrate(run, unknown_budget=0.2)
    assert after["unknown_budget"] == 0.2 and json.loads((run / "model.json").read_text()) == after
    assert all(after["unknown_thresholds"][k] > before["unknown_thresholds"][k] for k in ("p_pet", "pet_energy"))
    # At most 20% of them (6.4 pets), and more than that less the two (one per score) that the
    # next quantile step up would add: the budget is used, not only kept.
    assert 6.4 - 2 < given_up() <= 6.4
    # The run folder keeps the setting: a plain recalibration repeats it instead of going back to 0.5%.
    assert config.load(run / "config.json").unknown_budget == 0.2
    assert calibrate(run)["unknown_thresholds"] == after["unknown_thresholds"]
    with pytest.raises(ConfigError, match="unknown_budget"):
        calibrate(run, unknown_budget=1.5)
    assert json.loads((run / "model.json").read_text()) == after  # a refused budget changes nothing
    assert config.load(run / "config.json").unknown_budget == 0.2


def test_the_shipped_model_answers_unknown_for_a_blank_page_and_noise(tmp_path):
    Image.new("RGB", (300, 200), "white").save(tmp_path / "blank.png")
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    predictor = Predictor()
    records = list(predictor.predict_paths([tmp_path / "blank.png", tmp_path / "noise.png"]))
    assert [r["label"] for r in records] == ["unknown", "unknown"], records
    # A blank page leaves cats and dogs a share of a flat softmax; the learned score, which
    # weighs their logits (pet_energy) most, gives it away.
    assert records[0]["pet_score"] < predictor.unknown_thresholds["pet_score"]


def test_the_imagenet_view_is_the_detectors_own_imagenet_side(tmp_path):
    """`imagenet_view` (what `catdog audit` looks with) gives the logits the detector's scores come from,
    the pooled features they are a linear function of, and the same classifier on 9 windows."""
    from catdog.models.pet_detector import imagenet_view

    model = keras.saving.load_model(SHIPPED_MODEL, compile=False)
    view = imagenet_view(model)
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)
    pixels[0] = 255  # a blank page among noise
    seen, full = view(pixels), model(pixels)
    logits = np.asarray(seen["imagenet_logits"], np.float64)
    pets = logsumexp(logits[:, list(PET_CLASSES)], axis=1)
    np.testing.assert_allclose(pets, np.ravel(full["pet_energy"]), atol=0.05)
    np.testing.assert_allclose(np.exp(pets - logsumexp(logits, axis=1)), np.ravel(full["p_pet"]), atol=0.01)
    classifier = model.get_layer("imagenet_top").layers[-1]
    weights, bias = (np.asarray(w, np.float64) for w in classifier.get_weights())
    np.testing.assert_allclose(np.asarray(seen["features"], np.float64) @ weights + bias, logits, atol=0.1)
    windows = np.asarray(seen["region_logits"], np.float64)
    assert windows.shape == (3, 9, 1000) and np.isfinite(windows).all()
    # The classifier is linear on pooled features, so its windows average to nearly the whole picture's
    # answer (not exactly: overlapping windows count the middle cells twice).
    assert np.corrcoef(windows.mean(axis=1).ravel(), logits.ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="no ImageNet pet detector"):
        imagenet_view(build_model(config.resolve("tiny")))


def test_pet_similarity_is_the_nearest_prototypes_cosine_and_leaves_the_rest_alone(tmp_path):
    """`with_pet_similarity` gives the shipped model new prototypes; the other outputs do not move, and it round-trips.
    (The first time, on a model without them, is `test_calibrating_with_prototypes_...`.)"""
    from catdog.models.pet_detector import imagenet_view, with_pet_similarity

    model = keras.saving.load_model(SHIPPED_MODEL, compile=False)
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)
    pixels[0] = 255
    features = np.asarray(imagenet_view(model)(pixels)["features"], np.float64)
    prototypes = np.random.default_rng(1).normal(size=(16, features.shape[1]))
    prototypes[3] = features[1] * 2.0  # picture 1 lies on a prototype (length does not matter)
    extended = with_pet_similarity(model, prototypes)
    before, after = model(pixels), extended(pixels)
    for name in set(before) - {"pet_similarity"}:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6, atol=1e-6)
    unit = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)
    expected = np.max(features / np.linalg.norm(features, axis=1, keepdims=True) @ unit.T, axis=1)
    np.testing.assert_allclose(np.ravel(after["pet_similarity"]), expected, atol=2e-3)  # float16 prototypes
    assert float(np.ravel(after["pet_similarity"])[1]) == pytest.approx(1.0, abs=2e-3)

    extended.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(pixels)["pet_similarity"], after["pet_similarity"], rtol=1e-6)
    assert imagenet_view(loaded)(pixels)["features"].shape == features.shape  # the audit's view still finds its parts
    again = with_pet_similarity(loaded, prototypes[:4])  # recalibrating replaces the prototypes
    assert again.get_layer("pet_similarity").count == 4 and set(again(pixels)) == set(after)


def test_calibrating_with_prototypes_adds_pet_similarity_and_its_threshold(mobilenet_run, tmp_path):
    from catdog.training.prototypes import prototype_count

    run = tmp_path / "run"
    shutil.copytree(mobilenet_run, run)
    old = json.loads((run / "model.json").read_text())
    meta = calibrate(run, unknown_prototypes=4)
    thresholds = meta["unknown_thresholds"]
    assert set(thresholds) == {"p_pet", "pet_energy", "pet_similarity"} and -1.0 < thresholds["pet_similarity"] < 1.0
    assert prototype_count(keras.saving.load_model(run / "model.keras")) == 4
    predictor = Predictor(run)
    assert "pet_similarity" in predictor.detector_scores
    # Pet-like to the ImageNet classifier, far from every training pet: only the new score catches it.
    pet_like = {"p_pet": 1.0, "pet_energy": thresholds["pet_energy"] + 10.0}
    far, near = ({**pet_like, "pet_similarity": thresholds["pet_similarity"] + d} for d in (-0.05, 0.05))
    assert predictor.record(Scored("far.jpg", 3.0, far))["label"] == "unknown"
    assert predictor.record(Scored("near.jpg", 3.0, near))["label"] == "dog"
    assert Predictor(run, meta=old).record(Scored("far.jpg", 3.0, far))["label"] == "dog"  # the old model.json
    record = next(predictor.predict_paths([str(mobilenet_run / "../../data/train/dog.0.jpg")]))
    assert -1.0 <= record["pet_similarity"] <= 1.0
    # Switched off again: the layer stays in the model, unused.
    assert set(calibrate(run, unknown_prototypes=0)["unknown_thresholds"]) == {"p_pet", "pet_energy"}
    assert Predictor(run).record(Scored("far.jpg", 3.0, far))["label"] == "dog"
