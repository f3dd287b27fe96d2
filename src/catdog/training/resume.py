"""What a resumed run needs back: the training state of its last finished epoch, or of the
step where SIGTERM stopped it.

Weights, optimizer (with the learning-rate schedule's step) and the layers' random seed states
(`EpochBackup`), early stopping's best and wait (replayed from history.csv). The data order and
augmentation's draws need nothing here: `pipeline.make_dataset(..., epochs=)` derives both
from the seed, the epoch and the step.

Ctrl-C (SIGINT) stops at the end of a batch and keeps the finished epochs. SIGTERM, what
Kubernetes and Slurm send before they evict or preempt, also backs up the epoch's steps done
so far: the resumed run starts at the next step, and loses none.
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
        self.epoch = saved.get("epoch", 0)
        if not saved:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.folder / saved["weights"])
        for variable, value in zip(self._seed_states(), saved["seeds"], strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.model._initial_epoch = saved["epoch"]  # as BackupAndRestore does: fit starts there

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def save(self, epoch: int, step: int = 0) -> None:
        """Backs up the state after `step` batches of `epoch` (0: the epoch has not begun)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch}-step-{step}.weights.h5"
        partial = self.folder / f"partial-{name}"
        self.model.save_weights(partial)
        os.replace(partial, self.folder / name)
        seeds = [np.asarray(v.numpy()).tolist() for v in self._seed_states()]
        state = self.folder / "backup.json"
        backup = {"epoch": epoch, "step": step, "weights": name, "seeds": seeds}
        state.with_suffix(".partial").write_text(json.dumps(backup))
        os.replace(state.with_suffix(".partial"), state)
        for old in self.folder.glob("*.weights.h5"):
            if old.name != name:
                old.unlink()


class Preempted(KeyboardInterrupt):
    """SIGTERM stopped training after `step` batches of `epoch`, backed up."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"stopped by SIGTERM after {step} step(s) of epoch {epoch + 1}")
        self.epoch, self.step = epoch, step


class _StopAtBatch(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the next batch's end once asked. After SIGTERM, with a
    `backup`, it first backs up the steps done (or lets validation finish, then the epoch's
    own backup counts) and raises Preempted."""

    def __init__(self, backup: EpochBackup | None = None, first_step: int = 0):
        super().__init__()
        self.requested = self.terminated = False
        self.backup, self.first_step, self.offset = backup, first_step, None

    def request(self, signum, frame):
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: at once
            raise KeyboardInterrupt
        self.requested = True
        self.terminated = self.terminated or (signum == signal.SIGTERM and self.backup is not None)

    def on_epoch_begin(self, epoch, logs=None):
        self.offset = self.first_step if self.offset is None else 0  # fit's first epoch may start mid-way

    def on_train_batch_end(self, batch, logs=None):
        if self.terminated:
            step = self.offset + batch + 1
            self.backup.save(self.backup.epoch, step)
            raise Preempted(self.backup.epoch, step)
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        if not self.terminated:  # validation is short: let it finish, and the epoch's backup count
            self.check()

    def on_epoch_end(self, epoch, logs=None):
        if self.terminated:
            raise Preempted(epoch + 1, 0)  # EpochBackup, earlier in the list, has saved the epoch
        self.check()

    def check(self, *args, **kwargs):
        if self.requested:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_at_batch(backup: EpochBackup | None = None, first_step: int = 0):
    """A callback for `fit` that turns Ctrl-C (SIGINT) into a KeyboardInterrupt at the next
    batch's end, raised from catdog's own code; a second Ctrl-C interrupts at once. With
    `backup`, SIGTERM backs up the steps of the epoch done so far (fit's first epoch starts at
    `first_step`) and raises Preempted there.

    The default handler raises wherever Python happens to be, and one raised inside a `__del__`
    or a TensorFlow callback is printed and ignored, so training went on as if never asked to
    stop. Outside the main thread (where no handler can be set) Ctrl-C acts as before, and
    an ignored SIGINT stays ignored (a shell's `cmd &` without job control, so that a Ctrl-C
    meant for the foreground job does not stop this one).
    """
    callback = _StopAtBatch(backup, first_step)
    if threading.current_thread() is not threading.main_thread():
        yield callback
        return
    handled = [signal.SIGTERM] if backup is not None else []
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        handled.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, callback.request) for signum in handled}
    try:
        yield callback
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def read_backup(folder: Path) -> dict:
    """The last complete backup's {"epoch", "step", "weights", "seeds"}, or {} when there is none."""
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
