import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_kaggle_tree

from catdog import config
from catdog.evaluate import evaluate
from catdog.train import train

LEARN = ["image_size=32", "max_images=0", "epochs=8", "batch_size=16", "learning_rate=0.003",
         "rotation=0", "zoom=0", "translation=0", "patience=8"]


def test_training_learns_and_writes_a_complete_run_folder(tmp_path):
    tree = write_kaggle_tree(tmp_path / "data", per_class=100)
    cfg = config.resolve("tiny", LEARN + [f"data={tree}", f"runs_dir={tmp_path / 'runs'}", "name=learn"])
    run_dir = train(cfg)
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.json", "data.json", "manifest.csv", "history.csv", "model.keras", "model.json", "tensorboard"}
    assert config.load(run_dir / "config.json") == cfg
    assert not list(run_dir.glob("backup*")) and not list(run_dir.glob("cache-*"))  # cleaned up
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["temperature"] > 0 and meta["image_size"] == 32
    metrics = evaluate(run_dir)
    assert metrics["n"] == 20
    assert metrics["accuracy"] >= 0.85, metrics  # chance is 0.5
    assert json.loads((run_dir / "metrics_test.json").read_text())["accuracy"] == metrics["accuracy"]


def test_existing_run_folder_is_not_overwritten(tmp_path, kaggle_tree):
    cfg = config.resolve("tiny", [f"data={kaggle_tree}", f"runs_dir={tmp_path}", "name=same"])
    (tmp_path / "same").mkdir()
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)


def _epochs(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_resume_after_kill_9_keeps_finished_epochs(tmp_path, kaggle_tree):
    run_dir = tmp_path / "runs" / "killed"
    args = [sys.executable, "-m", "catdog.cli", "train", "--preset", "tiny", f"data={kaggle_tree}",
            f"runs_dir={tmp_path / 'runs'}", "name=killed", "epochs=40", "patience=40", "max_images=0"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "history.csv").exists() or len(_epochs(run_dir)) < 2:
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = _epochs(run_dir)
    assert 2 <= len(done) < 40 and (run_dir / "backup").exists()

    resumed = subprocess.run([sys.executable, "-m", "catdog.cli", "train", "--resume", str(run_dir)],
                             capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = _epochs(run_dir)
    assert epochs[: len(done)] == done
    assert sorted(set(epochs)) == list(range(40))  # continued where it stopped, not from 0
    assert epochs.count(done[-1] + 1) <= 2  # at most the interrupted epoch runs twice
    assert (run_dir / "model.json").exists() and not (run_dir / "backup").exists()


def test_a_set_not_divisible_by_the_batch_trains(tmp_path):
    """A regression guard: TF 2.21's oneDNN strided 1x1 conv gradient corrupted the heap on a
    smaller last batch (18 images, batches of 17). In a subprocess, so that a crash fails this
    test, not the whole run."""
    tree = write_kaggle_tree(tmp_path / "data", per_class=11)  # 9 + 9 train images
    args = [sys.executable, "-m", "catdog.cli", "train", "--preset", "tiny", f"data={tree}", "max_images=0",
            "batch_size=17", "epochs=2", f"runs_dir={tmp_path / 'runs'}", "name=odd"]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
