import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import dtype_policies, write_kaggle_tree
from signals import TermAt

from catdog import config
from catdog.errors import DataError, Interrupted
from catdog.evaluation.evaluate import evaluate
from catdog.models.builders import save_float32
from catdog.training.train import train

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
    counts = json.loads((run_dir / "data.json").read_text())["counts"]
    assert meta["p_floor"] == 1 / (counts["val/cat"] + counts["val/dog"] + 2)
    metrics = evaluate(run_dir)
    assert metrics["n"] == 20
    assert metrics["accuracy"] >= 0.85, metrics  # chance is 0.5
    assert json.loads((run_dir / "metrics_test.json").read_text())["accuracy"] == metrics["accuracy"]


def test_a_run_folder_with_epochs_is_not_overwritten(tmp_path, kaggle_tree):
    cfg = config.resolve("tiny", [f"data={kaggle_tree}", f"runs_dir={tmp_path}", "name=same"])
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "state.json").write_text('{"status": "interrupted", "epochs_done": 3}')
    with pytest.raises(DataError, match="3 finished epoch.*--resume"):
        train(cfg)
    assert (tmp_path / "same" / "state.json").exists()


def test_a_run_folder_that_kept_nothing_is_replaced(tmp_path, kaggle_tree):
    """The folder a failed start of an older version left (config, data, manifest, no epoch)."""
    cfg = config.resolve("tiny", [f"data={kaggle_tree}", f"runs_dir={tmp_path}", "name=same"])
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "config.json").write_text("{}")
    assert train(cfg) == tmp_path / "same"
    assert json.loads((tmp_path / "same" / "state.json").read_text())["status"] == "finished"


class _StopAfter(keras.callbacks.Callback):
    """Ctrl-C at the end of epoch `epoch`, after its backup."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    """Weights, optimizer and schedule step, dropout's random state, early stopping's best and wait,
    the data order and augmentation's draws all carry over: same epochs, history and weights."""
    tree = write_kaggle_tree(tmp_path / "data", per_class=30)
    # At this learning rate validation loss jumps about, so early stopping ends the run early;
    # the interruption comes after an epoch with no improvement (wait > 0), which a resumed
    # run must remember to stop where the uninterrupted one did.
    common = ["max_images=0", "epochs=12", "patience=2", "learning_rate=0.1",
              f"data={tree}", f"runs_dir={tmp_path / 'runs'}"]
    straight = train(config.resolve("tiny", common + ["name=straight"]))
    a = list(csv.DictReader(open(straight / "history.csv")))
    losses = [float(r["val_loss"]) for r in a]
    assert len(a) < 12, losses  # stopped early
    waiting = [k for k in range(1, len(losses) - 1) if losses[k] >= min(losses[:k])]
    assert waiting, losses
    stop = waiting[0]
    with pytest.raises(Interrupted, match=f"keeps {stop + 1} finished epoch.*--resume"):
        train(config.resolve("tiny", common + ["name=resumed"]), callbacks=[_StopAfter(stop)])
    resumed = tmp_path / "runs" / "resumed"
    assert json.loads((resumed / "state.json").read_text())["status"] == "interrupted"
    train(resume=resumed)
    assert json.loads((resumed / "state.json").read_text())["status"] == "finished"
    b = list(csv.DictReader(open(resumed / "history.csv")))
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]  # stopped early at the same epoch
    for row_a, row_b in zip(a, b):
        assert float(row_a["val_loss"]) == pytest.approx(float(row_b["val_loss"]), rel=1e-4, abs=1e-5)
    weights = [keras.saving.load_model(run / "model.keras").get_weights() for run in (straight, resumed)]
    for wa, wb in zip(*weights, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


def _epochs(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


class _StopAtFirstBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt


def test_a_run_stopped_before_its_first_epoch_resumes(tmp_path):
    """history.csv is opened (empty) as fit begins; resume must read that as no epoch done."""
    tree = write_kaggle_tree(tmp_path / "data", per_class=10)
    cfg = config.resolve("tiny", ["max_images=0", "epochs=2", f"data={tree}", f"runs_dir={tmp_path / 'runs'}",
                                  "name=early"])
    with pytest.raises(Interrupted, match="keeps 0 finished epoch"):
        train(cfg, callbacks=[_StopAtFirstBatch()])
    run_dir = tmp_path / "runs" / "early"
    assert (run_dir / "history.csv").read_text() == ""
    train(resume=run_dir)
    assert _epochs(run_dir) == [0, 1]


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
    assert done.stdout == f"{tmp_path / 'runs' / 'odd'}\n" and _epochs(tmp_path / "runs" / "odd") == [0, 1]


def test_a_bfloat16_run_learns_and_saves_a_float32_model(tmp_path):
    tree = write_kaggle_tree(tmp_path / "data", per_class=100)
    cfg = config.resolve("tiny", LEARN + [f"data={tree}", f"runs_dir={tmp_path / 'runs'}", "name=bf16",
                                          "precision=bfloat16"])
    run_dir = train(cfg)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever runs next
    model = keras.saving.load_model(run_dir / "model.keras")
    policies = dtype_policies(model)
    assert policies == {"float32"}, policies
    assert evaluate(run_dir)["accuracy"] >= 0.85  # chance is 0.5
    saved = (run_dir / "model.keras").stat().st_mtime_ns
    save_float32(run_dir / "model.keras", cfg)  # as a resumed run would: float32 already, left alone
    assert (run_dir / "model.keras").stat().st_mtime_ns == saved


def test_ctrl_c_stops_fit_at_the_end_of_a_batch_and_the_handler_is_put_back():
    from catdog.training.resume import interrupt_at_batch

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    ended = []

    class CtrlCAtBatch2(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the default handler would raise right here

        def on_train_batch_end(self, batch, logs=None):
            ended.append(batch)

    # Python's own handler, as under a terminal (pytest started by `cmd &` inherits an ignored SIGINT).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_at_batch() as interrupt:
            model.fit(np.zeros((64, 2)), np.zeros(64), batch_size=4, epochs=3, verbose=0,
                      callbacks=[CtrlCAtBatch2(), interrupt])
        assert ended == [0, 1, 2]  # batch 2 ran to its end, then fit stopped
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        # An ignored SIGINT (a background job of a shell without job control) stays ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ended.clear()
        with interrupt_at_batch() as interrupt:
            model.fit(np.zeros((64, 2)), np.zeros(64), batch_size=4, epochs=1, verbose=0,
                      callbacks=[CtrlCAtBatch2(), interrupt])
        assert ended == list(range(16)) and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_sigterm_mid_epoch_backs_up_its_steps_and_the_resumed_run_redoes_none(tmp_path):
    tree = write_kaggle_tree(tmp_path / "data", per_class=30)
    common = ["max_images=0", "epochs=3", "batch_size=8", "patience=5", f"data={tree}",
              f"runs_dir={tmp_path / 'runs'}"]
    straight = train(config.resolve("tiny", common + ["name=straight"]))
    steps = 48 // 8  # 60 pictures: 48 train
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=r"SIGTERM: .* keeps 1 finished epoch\(s\) and 3 step\(s\) of the next"):
        train(config.resolve("tiny", common + ["name=term"]), callbacks=[TermAt(epoch=1, batch=2)])
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is fit's alone
    term = tmp_path / "runs" / "term"
    backup = json.loads((term / "backup" / "backup.json").read_text())
    assert (backup["epoch"], backup["step"]) == (1, 3)
    assert json.loads((term / "state.json").read_text())["status"] == "interrupted"
    counted = TermAt()
    train(resume=term, callbacks=[counted])
    assert counted.trained == (steps - 3) + steps  # the rest of epoch 2, then epoch 3: no step redone
    a, b = (list(csv.DictReader(open(run / "history.csv"))) for run in (straight, term))
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == ["0", "1", "2"]
    for row_a, row_b in zip(a, b):
        assert float(row_a["val_loss"]) == pytest.approx(float(row_b["val_loss"]), rel=1e-4, abs=1e-5)
    weights = [keras.saving.load_model(run / "model.keras").get_weights() for run in (straight, term)]
    for wa, wb in zip(*weights, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
