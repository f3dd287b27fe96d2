"""The benchmark scripts' own logic (their figures come from real runs, not from tests)."""

import json
import subprocess
import sys
from pathlib import Path

from catdog.evaluation.evaluate import write_predictions

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import accuracy  # noqa: E402 - a benchmark that does not import is a failure, not a skip


def test_the_error_list_puts_confident_mistakes_first_then_pets_given_up(tmp_path):
    rows = [
        {"path": "right.jpg", "label": "dog", "logit": 3.0, "p_dog": 0.95, "answer": "dog"},
        {"path": "unsure.jpg", "label": "dog", "logit": -0.2, "p_dog": 0.45, "answer": "cat", "dog_odds": 4.0},
        {"path": "sure.jpg", "label": "cat", "logit": 4.0, "p_dog": 0.98, "answer": "dog"},
        {"path": "gave-up.jpg", "label": "cat", "logit": -5.0, "p_dog": 0.01, "answer": "unknown", "p_pet": 0.001},
        {"path": "broken.jpg", "label": "cat", "error": "cannot read"},
    ]
    write_predictions(tmp_path / "predictions_test.csv", rows)
    listed = accuracy.mistakes(tmp_path, tta=False)
    assert [e["path"] for e in listed] == ["sure.jpg", "unsure.jpg", "gave-up.jpg"]
    assert listed[1]["dog_odds"] == 4.0 and listed[2]["p_pet"] == 0.001 and "p_pet" not in listed[0]


def test_train_speed_runs_both_recipes_and_writes_the_ratio(tmp_path, kaggle_tree):
    """benchmarks/train_speed.py end to end, on tiny synthetic runs (the figures mean nothing here)."""
    out = tmp_path / "speed.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--data", str(kaggle_tree), "--out", str(out),
         "--runs-dir", str(tmp_path / "runs"), "weights=none", "image_size=32", "max_images=16", "batch_size=8",
         "head_epochs=1", "unknown=false"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["recipe"] for r in result["runs"]] == ["old", "new"]
    old, new = result["runs"]
    assert (old["cached_views"], new["cached_views"]) == (0, 2) and old["overrides"][:2] == ["cached_views=0", "epochs=5"]
    for run in result["runs"]:
        assert {"prepare", "features", "head", "fine_tune", "calibrate"} <= set(run["phase_seconds"]), run
        assert 0 <= run["accuracy"] <= 1 and run["test_images"] == 8  # 10% of 80 pictures
    assert result["speedup"] == round(old["wall_seconds"] / new["wall_seconds"], 2)
    assert "faster" in done.stdout and str(out) in done.stdout


def test_scale_measures_streaming_and_shards_in_fresh_processes(tmp_path):
    """benchmarks/scale.py end to end on 200 pictures: a row per mode, shards written and trained from."""
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--sizes", "200", "--caches",
                           "none,shards", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["cache"], r["chosen"]) for r in rows] == [("none", "none"), ("shards", "shards")]
    assert all(r["peak_rss_mb"] > 100 and r["images_per_s"] > 0 and len(r["epoch_seconds"]) == 2 for r in rows)
