"""train(cfg) -> a run folder holding everything needed to use, evaluate or reproduce the run.

    runs/<name>/
      config.json      the resolved config          manifest.csv   the exact split used
      data.json        source and split counts       history.csv    one row per epoch
      history_head.csv the head phase's epochs (backbone runs)
      model.keras      best checkpoint (val loss)    model.json     temperature, classes, timing
      tensorboard/     TensorBoard logs              backup/        resume state (while training)

Backbone runs go in two phases: the head is fitted on backbone features computed once, then
the top of the backbone is fine-tuned with a low learning rate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from catdog import config as config_lib
from catdog import data
from catdog import model as model_lib
from catdog.calibrate import calibrate
from catdog.config import Config
from catdog.pipeline import make_dataset


def _new_run_dir(cfg: Config) -> Path:
    name = cfg.name or f"{cfg.model.lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.runs_dir) / name
    if run_dir.exists():
        raise FileExistsError(f"run folder {run_dir} exists: resume it with --resume {run_dir}, or pick another name=")
    run_dir.mkdir(parents=True)
    return run_dir


def make_optimizer(cfg: Config, lr: float, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """AdamW on a linear warm-up to `lr`, then cosine decay to zero over `epochs`."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(cfg.warmup_epochs * steps_per_epoch))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else lr, decay_steps=total - warmup, warmup_target=lr if warmup else None,
        warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)


def make_loss(cfg: Config, reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing,
                                           reduction=reduction)


def _compile(model: keras.Model, cfg: Config, lr: float, steps_per_epoch: int, epochs: int) -> None:
    model.compile(
        optimizer=make_optimizer(cfg, lr, steps_per_epoch, epochs),
        loss=make_loss(cfg),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                 keras.metrics.AUC(name="auc", from_logits=True)],
    )


def _fit_head(model: keras.Model, cfg: Config, run_dir: Path, train_ex, val_ex) -> float:
    """Fits the head on backbone features computed once; returns the best validation loss."""
    extractor, head = model.get_layer("features"), model.get_layer("head")
    # One pass each, so nothing to cache.
    plain = [make_dataset(ex, dataclasses.replace(cfg, cache="none"), training=False) for ex in (train_ex, val_ex)]
    x_train, x_val = (extractor.predict(ds.map(lambda x, y: x), verbose=1) for ds in plain)
    y_train, y_val = (np.array([e.label for e in ex], np.float32) for ex in (train_ex, val_ex))
    _compile(head, cfg, cfg.head_learning_rate, math.ceil(len(x_train) / cfg.batch_size), cfg.head_epochs)
    stop = keras.callbacks.EarlyStopping(patience=max(cfg.patience, 5), restore_best_weights=True)
    # Its own file: history.csv is the image phase's (resume reads it), the report draws both.
    log = keras.callbacks.CSVLogger(run_dir / "history_head.csv")
    history = head.fit(x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.head_epochs,
                       validation_data=(x_val, y_val), callbacks=[stop, log], verbose=2)
    return float(min(history.history["val_loss"]))


def _best_val_loss(run_dir: Path, fallback: float | None) -> float | None:
    history = run_dir / "history.csv"
    if history.exists():
        rows = np.genfromtxt(history, delimiter=",", names=True, ndmin=1)
        if rows.size:
            return float(min(rows["val_loss"].min(), fallback or np.inf))
    return fallback


def _open_run(cfg: Config | None, resume: str | Path | None) -> tuple[Path, Config, dict]:
    """A new run folder with its config, or an interrupted one with its config and state."""
    if resume:
        run_dir = Path(resume)
        state_path = run_dir / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        return run_dir, config_lib.load(run_dir / "config.json"), state
    cfg = cfg or Config()
    run_dir = _new_run_dir(cfg)
    config_lib.save(cfg, run_dir / "config.json")
    return run_dir, cfg, {}


def _record_data(run_dir: Path, cfg: Config) -> tuple[list[data.Example], list[data.Example]]:
    """Prepares the data and copies its split and summary into the run folder."""
    work = data.prepare(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    shutil.copy(work / "manifest.csv", run_dir / "manifest.csv")
    report = json.loads((work / "report.json").read_text())
    summary = {k: report[k] for k in ("settings", "root", "images", "counts", "skipped_by_reason")}
    (run_dir / "data.json").write_text(json.dumps(summary, indent=2) + "\n")
    return tuple(data.load_split(run_dir / "manifest.csv", report["root"], split, cfg.max_images, cfg.seed)
                 for split in ("train", "val"))


def _fit_images(model, cfg: Config, run_dir: Path, state: dict, save_state, train_ex, val_ex) -> None:
    """Trains the whole model (or its unfrozen part) on image batches, resumable per epoch."""
    train_ds = make_dataset(train_ex, cfg, training=True, cache_file=run_dir / "cache-train")
    val_ds = make_dataset(val_ex, cfg, training=False, cache_file=run_dir / "cache-val")
    _compile(model, cfg, cfg.learning_rate, int(train_ds.cardinality()), cfg.epochs)
    best = _best_val_loss(run_dir, state.get("head_val_loss"))
    callbacks = [
        # First, so an epoch is safe on disk before anything else can be interrupted.
        keras.callbacks.BackupAndRestore(run_dir / "backup"),
        keras.callbacks.ModelCheckpoint(run_dir / "model.keras", save_best_only=True, initial_value_threshold=best),
        keras.callbacks.EarlyStopping(patience=cfg.patience),
        keras.callbacks.CSVLogger(run_dir / "history.csv", append=True),
        keras.callbacks.TensorBoard(run_dir / "tensorboard"),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: save_state()),
    ]
    # shuffle=False: the dataset reshuffles itself every epoch.
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, shuffle=False)


def train(cfg: Config | None = None, resume: str | Path | None = None) -> Path:
    """Trains a model and returns its run folder; `resume` continues an interrupted run.

        >>> run_dir = train(config.resolve("tiny", ["data=train.zip"]))
    """
    run_dir, cfg, state = _open_run(cfg, resume)
    started = time.time() - state.get("seconds", 0.0)  # wall time adds up across resumes

    def save_state():
        state["seconds"] = round(time.time() - started, 1)
        (run_dir / "state.json").write_text(json.dumps(state) + "\n")

    keras.utils.set_random_seed(cfg.seed)
    train_ex, val_ex = _record_data(run_dir, cfg)
    transfer = cfg.model != "scratch"
    if transfer and "head_val_loss" in state:
        model = keras.saving.load_model(run_dir / "model.keras")
    else:
        model = model_lib.build_model(cfg)
    if transfer and "head_val_loss" not in state:
        state["head_val_loss"] = _fit_head(model, cfg, run_dir, train_ex, val_ex)
        model.save(run_dir / "model.keras")
        save_state()
    if not transfer or cfg.fine_tune_layers > 0:
        if transfer:
            model_lib.unfreeze_top(model, cfg.fine_tune_layers)
        _fit_images(model, cfg, run_dir, state, save_state, train_ex, val_ex)
    for cache in run_dir.glob("cache-*"):
        cache.unlink()
    save_state()
    calibrate(run_dir)
    return run_dir
