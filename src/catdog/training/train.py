"""train(cfg) -> a run folder holding everything needed to use, evaluate or reproduce the run.

    runs/<name>/
      config.json      the resolved config          manifest.csv   the exact split used
      data.json        source and split counts       history.csv    one row per epoch
      history_head.csv the head phase's epochs (backbone runs)
      model.keras      best checkpoint (val loss)    model.json     temperature, classes, timing
      tensorboard/     TensorBoard logs              backup/        resume state (while training)
      state.json       running / failed / interrupted / finished, epochs done

Everything that can be checked is checked before the folder is made (config, weights offline,
the data and its split, the model), so a start that fails leaves nothing behind. A run that
fails or is interrupted later says so in state.json and resumes (`train(resume=run_dir)`) with
all of its state: weights, optimizer and schedule step, early stopping, the data order.

Backbone runs go in two phases: the head is fitted on backbone features computed once, then
the top of the backbone is fine-tuned with a low learning rate, on pictures or, with
`cached_views`, on the frozen bottom's output computed once per view (`catdog.training.views`).
state.json records the seconds each phase took (`phase_seconds`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog import config as config_lib
from catdog import console, runs
from catdog.config import Config
from catdog.data import run_data
from catdog.data.pipeline import Unreadable, resolve_cache, steps_per_epoch
from catdog.errors import ConfigError, DataError, Interrupted
from catdog.models import builders as model_lib
from catdog.models.pretrained import check_weights
from catdog.training import resume as resume_lib
from catdog.training import views
from catdog.training.calibrate import calibrate


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


def compile_model(model: keras.Model, cfg: Config, lr: float, steps_per_epoch: int, epochs: int) -> None:
    model.compile(
        optimizer=make_optimizer(cfg, lr, steps_per_epoch, epochs),
        loss=make_loss(cfg),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                 keras.metrics.AUC(name="auc", from_logits=True)],
    )


def _fit_head(source: views.Pictures, cfg: Config, run_dir: Path, timed) -> float:
    """Fits the head on backbone features computed once; returns the best validation loss."""
    with timed("features"):
        (x_train, y_train), (x_val, y_val) = source.head_features()
    head = source.model.get_layer("head")
    verbose = console.keras_verbose()
    compile_model(head, cfg, cfg.head_learning_rate, math.ceil(len(x_train) / cfg.batch_size), cfg.head_epochs)
    stop = keras.callbacks.EarlyStopping(patience=max(cfg.patience, 5), restore_best_weights=True)
    # Its own file: history.csv is the image phase's (resume reads it), the report draws both.
    log = keras.callbacks.CSVLogger(run_dir / "history_head.csv")
    # Shuffled from the seed alone (fit's own shuffle draws from the global generator, whose
    # state depends on whatever ran before), then batched.
    batches = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
               .shuffle(len(x_train), seed=cfg.seed, reshuffle_each_iteration=True).batch(cfg.batch_size))
    with resume_lib.interrupt_at_batch() as interrupt, timed("head"):
        history = head.fit(batches, epochs=cfg.head_epochs, validation_data=(x_val, y_val),
                           callbacks=[stop, log, interrupt], shuffle=False, verbose=2 if verbose else 0)
    return float(min(history.history["val_loss"]))


def _fit_images(source: views.Pictures, cfg: Config, run_dir: Path, state: dict, save_state, extra=()) -> None:
    """Trains the whole model (or its unfrozen part) on `source`'s batches, resumable per epoch,
    and per step after SIGTERM."""
    saved = resume_lib.read_backup(run_dir / "backup")
    start, done_steps = saved.get("epoch", 0), saved.get("step", 0)
    compile_model(source.trained, cfg, cfg.learning_rate, steps_per_epoch(source.train_ex, cfg), cfg.epochs)
    fit = functools.partial(_fit_epochs, source, cfg, run_dir, state, save_state, source.val_batches(), extra)
    if done_steps:  # SIGTERM stopped epoch `start` part-way: its other steps first, as an epoch of their own
        if fit(start, start + 1, done_steps):
            return  # early stopping ended the run with that epoch
        start += 1
    if start < cfg.epochs:
        fit(start, cfg.epochs, 0)


class _SaveBest(keras.callbacks.Callback):
    """Saves `model`, the whole classifier (the one `fit` trains may be a part of it), at every
    epoch whose val_loss beats the best so far (`best`: the earlier phases' and epochs')."""

    def __init__(self, model: keras.Model, path: Path, best: float):
        super().__init__()
        self.classifier, self.path, self.best = model, path, best

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss", np.inf)
        if loss < self.best:
            self.best = loss
            self.classifier.save(self.path)


def _fit_epochs(source: views.Pictures, cfg: Config, run_dir: Path, state: dict, save_state, val_ds, extra,
                first: int, end: int, done_steps: int) -> bool:
    """`fit` over epochs first..end-1, the first without its `done_steps` first batches;
    returns whether early stopping ended the run."""
    backup = run_dir / "backup"
    steps = steps_per_epoch(source.train_ex, cfg)
    train_ds = source.train_batches(first, end).skip(done_steps)
    past = [float(r["val_loss"]) for r in resume_lib.history_rows(run_dir / "history.csv", first)]
    best = min(past + [state.get("head_val_loss", np.inf)])

    def epoch_done(epoch, logs):
        state["epochs_done"] = epoch + 1
        _report_unreadable(run_dir, source.unreadable)
        save_state()

    epoch_backup = resume_lib.EpochBackup(backup)  # restores the state it last saved when fit begins
    callbacks = [
        # The row first: a kill before the backup redoes the epoch, and the row is cut on resume.
        keras.callbacks.CSVLogger(run_dir / "history.csv", append=True),
        _SaveBest(source.model, run_dir / "model.keras", best),
        resume_lib.ResumedEarlyStopping(past, patience=cfg.patience),
        epoch_backup,
        keras.callbacks.TensorBoard(run_dir / "tensorboard"),
        keras.callbacks.LambdaCallback(on_epoch_end=epoch_done),
        *extra,
    ]
    with resume_lib.interrupt_at_batch(epoch_backup, done_steps) as interrupt:
        source.trained.fit(train_ds, validation_data=val_ds, initial_epoch=first, epochs=end,
                           steps_per_epoch=steps - done_steps, callbacks=[*callbacks, interrupt], shuffle=False,
                           verbose=console.keras_verbose())
    return bool(source.trained.stop_training)


def _start(cfg: Config) -> tuple[Path, keras.Model, tuple]:
    """Checks everything, then makes the run folder: a refused start leaves nothing behind."""
    check_weights(cfg)
    if cfg.precision == "bfloat16" and model_lib.cpu_has_bfloat16() is False:
        warnings.warn("precision=bfloat16: this CPU has no AVX512-BF16 or AMX, so bfloat16 is emulated and "
                      "likely slower than float32", stacklevel=2)
    name = cfg.name or f"{cfg.model.lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.runs_dir) / name
    if Path(cfg.runs_dir).exists() and not Path(cfg.runs_dir).is_dir():
        raise ConfigError(f"runs_dir: {cfg.runs_dir} is a file; expected a folder")
    checked = run_data.check(cfg)
    keras.utils.set_random_seed(cfg.seed)
    model = model_lib.build_model(cfg)
    runs.claim(run_dir)
    run_dir.mkdir(parents=True)
    try:
        splits = run_data.record(run_dir, cfg, checked)
        config_lib.save(cfg, run_dir / "config.json")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir, model, splits


def _reopen(resume: str | os.PathLike) -> tuple[Path, Config, dict, tuple]:
    run_dir = runs.check_run(resume, needs=("config.json", "data.json", "manifest.csv"))
    state = runs.read_state(run_dir)
    if state.get("status") == "finished":
        raise DataError(f"{run_dir}: this run has finished; nothing to resume")
    runs.check_not_running(run_dir, state)
    cfg = config_lib.load(run_dir / "config.json")
    splits = tuple(run_data.split(run_dir, name, cfg.max_images, cfg.seed) for name in ("train", "val"))
    return run_dir, cfg, state, splits


def train(cfg: Config | None = None, resume: str | Path | None = None, callbacks=()) -> Path:
    """Trains a model and returns its run folder; `resume` continues a failed or interrupted run.

        >>> run_dir = train(config.resolve("tiny", ["data=train.zip"]))

    `callbacks` are added to the image phase's (for tests and tools).
    """
    model = None
    if resume:
        run_dir, cfg, state, (train_ex, val_ex) = _reopen(resume)
    else:
        cfg, state = cfg or Config(), {}
        precision, why = model_lib.resolve_precision(cfg.precision)
        if cfg.precision == "auto":
            console.note(why)
        cfg = dataclasses.replace(cfg, precision=precision)  # config.json holds the choice made
        with model_lib.precision(cfg.precision):
            began = time.time()
            run_dir, model, (train_ex, val_ex) = _start(cfg)
            state["phase_seconds"] = {"prepare": round(time.time() - began, 1)}
    started = time.time() - state.get("seconds", 0.0)  # wall time adds up across resumes

    def save_state(**changes):
        state.update(changes, seconds=round(time.time() - started, 1))
        runs.write_state(run_dir, state)

    state.pop("error", None)  # an earlier failure's, now being resumed
    save_state(status="running", pid=os.getpid(), epochs_done=state.get("epochs_done", 0))
    try:
        _run(cfg, run_dir, state, save_state, model, train_ex, val_ex, callbacks)
    except resume_lib.Preempted as stop:
        save_state(status="interrupted", epochs_done=stop.epoch)
        kept = f" and {stop.step} step(s) of the next" if stop.step else ""
        raise Interrupted(f"stopped by SIGTERM: {run_dir} keeps {stop.epoch} finished epoch(s){kept}; "
                          f"continue with: catdog train --resume {run_dir}") from None
    except KeyboardInterrupt:
        save_state(status="interrupted")
        raise Interrupted(f"interrupted: {run_dir} keeps {state['epochs_done']} finished epoch(s); "
                          f"continue with: catdog train --resume {run_dir}") from None
    except BaseException as error:
        save_state(status="failed", error=f"{type(error).__name__}: {error}"[:500])
        error.add_note(f"{run_dir} keeps {state['epochs_done']} finished epoch(s): catdog train --resume {run_dir}")
        raise
    save_state(status="finished")
    return run_dir


def _report_unreadable(run_dir: Path, unreadable: Unreadable) -> None:
    """`unreadable.json` in the run folder, once a picture has been dropped."""
    if len(unreadable):
        unreadable.write(run_dir / "unreadable.json")


def _run(cfg: Config, run_dir: Path, state: dict, save_state, model, train_ex, val_ex, callbacks) -> None:
    transfer = cfg.model != "scratch"
    phases = state.setdefault("phase_seconds", {})

    @contextlib.contextmanager
    def timed(phase: str):
        """Adds the block's wall time to state.json's `phase_seconds[phase]` (across resumes)."""
        began = time.time()
        try:
            yield
        finally:
            phases[phase] = round(phases.get(phase, 0.0) + time.time() - began, 1)

    if views.cached(cfg):  # pictures decoded once, their views kept on disk
        mode = "none"
        save_state(cache="views")
    else:
        mode, why = resolve_cache(cfg, len(train_ex) + len(val_ex))  # train and val share the memory
        if cfg.cache == "auto":
            console.note(why)
        save_state(cache=mode)
    cfg, unreadable = dataclasses.replace(cfg, cache=mode), Unreadable()
    # Keras prints progress to stdout, which is for results.
    with console.progress_to_stderr(), model_lib.precision(cfg.precision):
        if model is None:
            keras.utils.set_random_seed(cfg.seed)
            resumed_head = transfer and "head_val_loss" in state
            if resumed_head:
                model = model_lib.load_model(run_dir / "model.keras", compile=True)
            else:
                model = model_lib.build_model(cfg)
        source = views.source(model, cfg, run_dir, train_ex, val_ex, unreadable)
        if transfer and "head_val_loss" not in state:
            state["head_val_loss"] = _fit_head(source, cfg, run_dir, timed)
            _report_unreadable(run_dir, unreadable)
            model.save(run_dir / "model.keras")
            save_state()
        if (not transfer or cfg.fine_tune_layers > 0) and not state.get("images_done"):
            if transfer:
                model_lib.unfreeze_top(model, cfg.fine_tune_layers)
            with timed("fine_tune" if transfer else "train"):
                _fit_images(source, cfg, run_dir, state, save_state, callbacks)
            save_state(images_done=True)
    model_lib.save_float32(run_dir / "model.keras", cfg)  # a bfloat16 run's model becomes float32
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # only once the phase is recorded as done
    for cache in run_dir.glob("cache-*"):  # decoded pixels, cached views
        cache.unlink()
    with console.progress_to_stderr(), timed("calibrate"):
        calibrate(run_dir)
    save_state()
