"""The runtime seam: which file each runtime runs, and LiteRT batches of any size."""

import os
import subprocess
import sys

import numpy as np
import pytest
from test_export import SIZE, detector_model

from catdog.export import converters
from catdog.export.exporter import export
from catdog.inference import model_files, runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run-like folder: model.keras, model.json and its float32 TFLite export (parity on its own data)."""
    from conftest import write_kaggle_tree

    root = tmp_path_factory.mktemp("runtime")
    folder = root / "model"
    folder.mkdir()
    detector_model().save(folder / "model.keras")
    (folder / "model.json").write_text('{"image_size": %d}' % SIZE)
    export(folder / "model.keras", "tflite", out=folder / "model_float.tflite",
           data=write_kaggle_tree(root / "data", per_class=10))
    return folder


def test_resolve(exported):
    keras_file, tflite = exported / "model.keras", exported / "model_float.tflite"
    assert model_files.resolve(exported) == keras_file  # "keras" is the Python API's default
    assert model_files.resolve(exported, "tflite") == tflite
    assert model_files.resolve(tflite, "keras") == tflite  # a .tflite file is always LiteRT's
    assert model_files.resolve(exported, "auto") == tflite
    stale = tflite.stat().st_mtime - 60
    os.utime(tflite, (stale, stale))  # the model was retrained or recalibrated since the export
    try:
        assert model_files.resolve(exported, "auto") == keras_file
    finally:
        os.utime(tflite)
    with pytest.raises(ValueError, match="unknown runtime 'onnx'"):
        model_files.resolve(exported, "onnx")


def test_litert_batches_of_any_size_match_one_by_one(exported):
    lite = runtime.load_runtime(exported, "tflite")
    assert isinstance(lite, runtime.LiteRTRuntime) and lite.image_size == SIZE and lite.name == "tflite"
    pixels = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    batched = lite.run(pixels)
    for i in range(5):
        one = lite.run(pixels[i:i + 1])
        for name in lite.output_names:
            np.testing.assert_allclose(one[name], batched[name][i:i + 1], rtol=1e-5, atol=1e-5)
    as_float = lite.run(pixels.astype(np.float32))  # float pixels in 0..255 are accepted too
    np.testing.assert_allclose(as_float["logit"], batched["logit"], rtol=1e-6)


def test_keras_runtime_can_skip_the_detector(exported):
    full = runtime.load_runtime(exported, "keras")
    assert full.name == "keras"
    logit_only = runtime.load_runtime(exported, "keras", detector=False)
    pixels = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    assert set(full.run(pixels)) == {"logit", "p_pet", "pet_energy"}
    assert set(logit_only.run(pixels)) == {"logit"} and logit_only.output_names == full.output_names
    np.testing.assert_allclose(logit_only.run(pixels)["logit"], full.run(pixels)["logit"], rtol=1e-6)


def test_float32_copy_drops_bfloat16():
    import keras

    keras.config.set_dtype_policy("bfloat16")
    try:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    finally:
        keras.config.set_dtype_policy("float32")
    copy = converters.float32_copy(model)
    assert model.layers[0].compute_dtype == "bfloat16" and copy.layers[0].compute_dtype == "float32"
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(copy(x), model(x).numpy().astype(np.float32), rtol=1e-2)


def test_importing_the_seam_and_litert_leaves_tensorflow_out(exported):
    code = ("import sys, numpy as np; from catdog.inference.predictor import Predictor; "
            f"p = Predictor({str(exported)!r}, runtime='tflite'); p.scores(np.zeros((1, {SIZE}, {SIZE}, 3), np.uint8)); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_shipped_model_exports_in_the_package_or_catdog_home(exported, tmp_path, monkeypatch, catdog_home):
    import shutil

    shipped = tmp_path / "assets" / "model.keras"
    shipped.parent.mkdir()
    shutil.copy(exported / "model.keras", shipped)
    monkeypatch.setattr(model_files, "SHIPPED_MODEL", shipped)
    assert model_files.resolve(None, "auto") == shipped  # no export anywhere: Keras
    with pytest.raises(FileNotFoundError, match="run `catdog export --format tflite-int8`"):
        model_files.resolve(None, "tflite-int8")
    cached = catdog_home / "exports" / "model_float.tflite"
    cached.parent.mkdir(parents=True)
    shutil.copy(exported / "model_float.tflite", cached)
    assert model_files.resolve(None, "auto") == model_files.resolve(None, "tflite") == cached
    shutil.copy(exported / "model_float.tflite", shipped.parent / "model_float.tflite")
    assert model_files.resolve(None, "tflite") == shipped.parent / "model_float.tflite"  # shipped beats cached


def test_the_package_ships_a_checked_litert_export():
    """`catdog predict` with no --model runs LiteRT float32 out of the box (scripts/ship_model.py)."""
    import json

    assert model_files.resolve(None, "auto") == model_files.SHIPPED_MODEL.parent / "model_float.tflite"
    meta = json.loads(model_files.SHIPPED_MODEL.with_name("model_float.json").read_text())
    keras_meta = json.loads(model_files.SHIPPED_MODEL.with_suffix(".json").read_text())
    assert meta["parity"]["passed"] and meta["parity"]["images"] >= 2000
    assert meta["temperature"] == keras_meta["temperature"]  # the same calibration as the Keras model
    assert meta["unknown_thresholds"] == keras_meta["unknown_thresholds"]
