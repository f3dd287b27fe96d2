"""Slow tests on a slice of the real Kaggle train.zip in ../shared (they run in CI)."""

import json

import pytest
from conftest import KAGGLE_ZIP, require_data

from catdog import config
from catdog.data import prepare as data
from catdog.evaluation.evaluate import evaluate
from catdog.inference.predictor import Predictor
from catdog.training.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    require_data(KAGGLE_ZIP.exists(), f"real data not found at {KAGGLE_ZIP}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CATDOG_HOME", str(tmp_path_factory.mktemp("home")))
        work = data.prepare(KAGGLE_ZIP)
        yield work, json.loads((work / "report.json").read_text())


def test_prepare_the_real_zip(prepared):
    work, report = prepared
    assert report["images"] + report["skipped"] == 22500
    assert report["counts"]["test/cat"] == report["counts"]["test/dog"] == 1125
    again = data.load_split(work / "manifest.csv", report["root"], "test")
    assert len(again) == 2250 and all(e.path.exists() for e in again[:50])


def test_frozen_mobilenet_on_a_slice_beats_90_percent(prepared, imagenet_weights, tmp_path, monkeypatch):
    work, _ = prepared
    monkeypatch.setenv("CATDOG_HOME", str(work.parents[1]))
    cfg = config.resolve("mobilenet", [f"data={KAGGLE_ZIP}", "max_images=300", "fine_tune_layers=0",
                                       "head_epochs=15", f"runs_dir={tmp_path}", "name=slice"])
    metrics = evaluate(train(cfg))
    assert metrics["n"] == 300
    assert metrics["accuracy"] >= 0.9, metrics  # ImageNet features separate cats from dogs


def test_shipped_model_on_held_out_test_images(prepared):
    work, report = prepared
    examples = data.load_split(work / "manifest.csv", report["root"], "test", max_images=300, seed=7)
    predictor = Predictor()
    records = list(predictor.predict_paths([str(e.path) for e in examples]))
    correct = sum(r["label"] == data.CLASS_NAMES[e.label] for r, e in zip(records, examples, strict=True))
    assert correct / len(examples) >= 0.97
    assert sum(r["label"] == "unknown" for r in records) <= 6  # about 0.3% of real pets; 2% at most
