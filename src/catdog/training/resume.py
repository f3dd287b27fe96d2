"""What a resumed run needs back: the training state of its last finished epoch.

Weights, optimizer (with the learning-rate schedule's step) and the layers' random seed states
(`EpochBackup`), early stopping's best and wait (replayed from history.csv). The data order and
augmentation's draws need nothing here: `pipeline.make_dataset(..., epochs=)` derives both
from the seed, the epoch and the step.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import threading
from pathlib import Path

import keras
import numpy as np


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from the validation losses of the epochs a resumed run kept."""

    def __init__(self, past_losses: list[float], **kwargs):
        super().__init__(**kwargs)
        self.past_losses = past_losses

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for epoch, loss in enumerate(self.past_losses):  # replayed as on_epoch_end saw them
            self.wait += 1
            if self.best is None or loss < self.best:
                self.best, self.best_epoch, self.wait = loss, epoch, 0


class EpochBackup(keras.callbacks.Callback):
    """After every epoch, the training state: weights and optimizer (so the schedule's step),
    the layers' random seed states (Dropout's) and the epoch; restored when training begins.

    Keras's BackupAndRestore leaves the seed states out and writes its files in place, so a
    kill -9 mid-write leaves a backup that cannot be read. Here each epoch's weights go to a
    file of their own, renamed into place, and `backup.json` (renamed into place too) names
    the complete one: a kill at any moment leaves the previous backup whole.
    """

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)

    def _seed_states(self):
        return [v for v in self.model.non_trainable_variables if v.path.endswith("seed_generator_state")]

    def on_train_begin(self, logs=None):
        saved = read_backup(self.folder)
        if not saved:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.folder / saved["weights"])
        for variable, value in zip(self._seed_states(), saved["seeds"], strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.model._initial_epoch = saved["epoch"]  # as BackupAndRestore does: fit starts there

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        partial = self.folder / f"partial-{name}"
        self.model.save_weights(partial)
        os.replace(partial, self.folder / name)
        seeds = [np.asarray(v.numpy()).tolist() for v in self._seed_states()]
        state = self.folder / "backup.json"
        state.with_suffix(".partial").write_text(json.dumps({"epoch": epoch + 1, "weights": name, "seeds": seeds}))
        os.replace(state.with_suffix(".partial"), state)
        for old in self.folder.glob("*.weights.h5"):
            if old.name != name:
                old.unlink()


class _StopAtBatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.requested = False

    def request(self, signum, frame):
        if self.requested:  # a second Ctrl-C: at once
            raise KeyboardInterrupt
        self.requested = True

    def check(self, *args, **kwargs):
        if self.requested:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = check


@contextlib.contextmanager
def interrupt_at_batch():
    """A callback for `fit` that turns Ctrl-C (SIGINT) into a KeyboardInterrupt at the next
    batch's end, raised from catdog's own code; a second Ctrl-C interrupts at once.

    The default handler raises wherever Python happens to be, and one raised inside a `__del__`
    or a TensorFlow callback is printed and ignored, so training went on as if never asked to
    stop. Outside the main thread (where no handler can be set) Ctrl-C acts as before, and
    an ignored SIGINT stays ignored (a shell's `cmd &` without job control, so that a Ctrl-C
    meant for the foreground job does not stop this one).
    """
    callback = _StopAtBatch()
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored or threading.current_thread() is not threading.main_thread():
        yield callback
        return
    previous = signal.signal(signal.SIGINT, callback.request)
    try:
        yield callback
    finally:
        signal.signal(signal.SIGINT, previous)


def read_backup(folder: Path) -> dict:
    """The last complete backup's {"epoch", "weights", "seeds"}, or {} when there is none."""
    path = Path(folder) / "backup.json"
    return json.loads(path.read_text()) if path.exists() else {}


def history_rows(path: Path, before: int) -> list[dict]:
    """A history CSV cut, in place, to the epochs before `before` (an interrupted epoch is redone, not doubled)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, fields = [r for r in reader if int(r["epoch"]) < before], reader.fieldnames
    if fields is None:  # opened by the logger, then killed before its first row: nothing to cut
        return []
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows
