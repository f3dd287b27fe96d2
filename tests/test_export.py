"""export -> load -> same answers, for every format; the parity check, and that it can fail."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import synthetic_image, write_kaggle_tree

from catdog.export import converters
from catdog.export.exporter import ParityError, export
from catdog.inference.runtime import load_runtime
from catdog.models.pet_detector import PetEvidence

SIZE = 32


def detector_model() -> keras.Model:
    """A small stand-in for the shipped model: resizing and scaling inside, the same three outputs."""
    keras.utils.set_random_seed(0)
    pixels = keras.Input((None, None, 3), name="pixels")
    x = keras.layers.Resizing(SIZE, SIZE, name="resize")(pixels)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # A bias well above the spread: the answer ("dog") does not hinge on int8 rounding.
    logit = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(4.0), name="logit")(x)
    p_pet, pet_energy = PetEvidence(name="pet_evidence")(keras.layers.Dense(1000, name="imagenet")(x))
    return keras.Model(pixels, {"logit": logit, "p_pet": p_pet, "pet_energy": pet_energy})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model folder as `catdog export` finds one (model.keras + model.json) and labelled pictures."""
    root = tmp_path_factory.mktemp("export")
    folder = root / "model"
    folder.mkdir()
    detector_model().save(folder / "model.keras")
    meta = dict(class_names=["cat", "dog"], image_size=SIZE, temperature=1.5,
                unknown_thresholds={"p_pet": 1e-9, "pet_energy": -100.0})
    (folder / "model.json").write_text(json.dumps(meta))
    write_kaggle_tree(root / "data", per_class=40)  # test split: 4 + 4
    return folder, root / "data"


def pixels(n=6):
    return np.random.default_rng(1).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


# TFLite float stores its weights as float16: a few parts in 10^3 of each output.
@pytest.mark.parametrize("fmt, atol", [("savedmodel", 1e-4), ("tflite", 1e-2), ("tflite-int8", None)])
def test_round_trip(model_dir, tmp_path, fmt, atol):
    folder, data = model_dir
    out = tmp_path / ("exported" if fmt == "savedmodel" else "exported.tflite")
    meta = export(folder / "model.keras", fmt, out=out, data=data, check_images=6)
    expected = load_runtime(folder / "model.keras").run(pixels())
    exported = load_runtime(out)
    assert exported.image_size == (0 if fmt == "savedmodel" else SIZE)  # a SavedModel takes any size
    assert exported.output_names == ["logit", "p_pet", "pet_energy"]
    got = exported.run(pixels())
    assert set(got) == set(expected) and all(v.shape == (6,) for v in got.values())
    for name in expected:  # int8: within a few quantisation steps of each output's range
        tolerance = atol or 0.05 * (np.ptp(expected[name]) + abs(expected[name]).max())
        np.testing.assert_allclose(got[name], expected[name], atol=tolerance, rtol=5e-3, err_msg=name)
    written = json.loads(out.with_suffix(".json").read_text())
    assert written == meta and written["temperature"] == 1.5 and written["image_size"] == SIZE
    assert written["output_names"] == ["logit", "p_pet", "pet_energy"]
    assert written["parity"]["images"] == 6 and written["parity"]["passed"] is True
    assert written["parity"]["agreement"] == 1.0
    assert ("accuracy_drop" in written["parity"]["required"]) == (fmt == "tflite-int8")


def test_parity_check_fails_on_a_wrong_export(model_dir, tmp_path, monkeypatch):
    folder, data = model_dir
    real_copy = converters.float32_copy

    def flipped(model):  # the logit's sign reversed: every answer changes
        copy = real_copy(model)
        layer = copy.get_layer("logit")
        layer.set_weights([-w for w in layer.get_weights()])
        return copy

    monkeypatch.setattr(converters, "float32_copy", flipped)
    out = tmp_path / "wrong.tflite"
    with pytest.raises(ParityError, match="parity check failed.*agree on 0.00%"):
        export(folder / "model.keras", "tflite", out=out, data=data, check_images=10)
    assert out.exists() and json.loads(out.with_suffix(".json").read_text())["parity"]["passed"] is False


def test_export_needs_labelled_pictures(model_dir, tmp_path):
    folder, _ = model_dir
    with pytest.raises(FileNotFoundError, match="parity check and int8 calibration need labelled pictures"):
        export(folder / "model.keras", "tflite", out=tmp_path / "m.tflite")


def catdog(*args, code="from catdog.cli import main; sys.exit(main(sys.argv[1:]))"):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    return subprocess.run([sys.executable, "-c", f"import sys; {code}", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env)


def test_cli_export_then_predict_on_litert_without_tensorflow(model_dir, tmp_path):
    folder, data = model_dir
    out = catdog("export", folder / "model.keras", "--format", "tflite", "--data", data, "--check-images", "6",
                 "--out", tmp_path / "m.tflite")
    assert out.returncode == 0, out.stderr
    assert "parity on 6 images: answers agree 100.00%" in out.stdout and out.stdout.rstrip().endswith("passed")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        synthetic_image(i % 2, np.random.default_rng(i)).save(images / f"{i}.jpg")
    check = "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(code)"
    out = catdog("predict", images, "--model", tmp_path / "m.tflite",
                 code=f"from catdog.cli import main; code = main(sys.argv[1:]); {check}")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no TensorFlow / LiteRT log lines without --verbose
    records = [json.loads(line) for line in out.stdout.splitlines()]
    keras_records = [json.loads(line) for line in catdog("predict", images, "--model", folder,
                                                         "--runtime", "keras").stdout.splitlines()]
    assert [r["path"] for r in records] == sorted(str(p) for p in images.iterdir())
    for got, expected in zip(records, keras_records, strict=True):
        assert got["label"] == expected["label"] == "dog"
        assert got["p_dog"] == pytest.approx(expected["p_dog"], abs=1e-3)
        assert got["pet_energy"] == pytest.approx(expected["pet_energy"], rel=5e-3)


def test_version_and_quiet_keras_predict(model_dir, tmp_path):
    out = catdog("--version")
    assert out.returncode == 0 and out.stdout.startswith("catdog 0.")
    folder, _ = model_dir
    synthetic_image(0, np.random.default_rng(0)).save(tmp_path / "one.jpg")
    out = catdog("predict", tmp_path / "one.jpg", "--model", folder, "--runtime", "keras")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    out = catdog("predict", tmp_path / "one.jpg", "--model", folder, "--runtime", "tflite")
    assert out.returncode == 2 and f"{folder} has no model_float.tflite: run `catdog export" in out.stderr
