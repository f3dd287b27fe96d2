"""What a resumed run needs back beyond Keras's BackupAndRestore (weights, optimizer, epoch).

Early stopping's best and wait (replayed from history.csv), the layers' random seed states
(Dropout's), and the epoch the backup holds. The data order and augmentation's draws need
nothing here: `pipeline.make_dataset(..., epochs=)` derives both from the seed and the epoch.
"""

from __future__ import annotations

import csv
import json
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


class SeedBackup(keras.callbacks.Callback):
    """Keeps the layers' random seed states (Dropout's) beside BackupAndRestore's weights and
    optimizer, which leave them out; a resumed run then draws the same dropout masks."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def _states(self):
        return [v for v in self.model.non_trainable_variables if v.path.endswith("seed_generator_state")]

    def on_train_begin(self, logs=None):
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved["epoch"] == self.model._initial_epoch:  # the epoch the weights were restored at
                for variable, value in zip(self._states(), saved["states"], strict=True):
                    variable.assign(np.asarray(value, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        states = [np.asarray(v.numpy()).tolist() for v in self._states()]
        self.path.write_text(json.dumps({"epoch": epoch + 1, "states": states}))


def history_rows(run_dir: Path, before: int) -> list[dict]:
    """history.csv cut to the epochs before `before` (an interrupted epoch is redone, not doubled)."""
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, fields = [r for r in reader if int(r["epoch"]) < before], reader.fieldnames
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def backed_up_epoch(backup: Path) -> int:
    meta = backup / "training_metadata.json"
    return int(json.loads(meta.read_text())["epoch"]) if meta.exists() else 0
