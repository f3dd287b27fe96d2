"""Multi-worker training with `tf.distribute.MultiWorkerMirroredStrategy`, configured by TF_CONFIG.

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        catdog train --distributed --data /shared/train.zip name=big runs_dir=/shared/runs

Every worker runs the same command (`catdog launch` starts them on one machine). Worker 0 (or
the "chief" task) prepares the split and writes the run folder; the others read the split from
it, so `runs_dir` and the data sit at the same path on every machine (a shared filesystem).
Each worker trains on its own 1/n of the training files with the config's batch size, so the
global batch and the peak learning rate grow n-fold; gradients are averaged by all-reduce at
every step and metrics are computed over every worker's examples. The run folder is the one
`catdog.training.train` writes: evaluate, report, predict and export use it unchanged.

Keras's `model.fit` fails under this strategy (keras-team/keras#20585, Keras 3.15), so the
step is our own, under `strategy.run`, with the model, pipeline, optimizer, schedule and loss
of `catdog.training.train`.

Fault tolerance: after every epoch the model, optimizer, epoch and early-stopping state are
checkpointed under `<run>/backup/`. A worker that dies breaks its peers' collectives, so the
group is restarted with the same command (`catdog launch` does it) and resumes from there,
losing at most the unfinished epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from catdog import config as config_lib
from catdog import console, runs
from catdog.config import Config, ConfigError
from catdog.data import run_data, shards
from catdog.training.clusters import Worker, tf_config, worker_from_env

HISTORY_FIELDS = ["epoch", "accuracy", "auc", "loss", "val_accuracy", "val_auc", "val_loss"]
WAIT_FOR_CHIEF_S = 3600.0  # preparing a large dataset on the chief can take a while


def _open_run(cfg: Config, worker: Worker) -> Path:
    """The run folder: made by the chief (or found again after a restart), awaited by the others."""
    if not cfg.name:
        raise ConfigError("--distributed needs name=RUN, so every worker, and a restarted one, finds the same run")
    run_dir = Path(cfg.runs_dir) / cfg.name
    config_path = run_dir / "config.json"
    if worker.is_chief and not config_path.exists():
        checked = run_data.check(cfg)  # data checked before the folder exists: a refused start leaves nothing
        runs.claim(run_dir)
        run_dir.mkdir(parents=True)
        try:
            run_data.record(run_dir, cfg, checked)
            config_lib.save(cfg, config_path)  # written last: its presence says the folder is ready
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
    deadline = time.monotonic() + WAIT_FOR_CHIEF_S
    while not config_path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {worker.index}: no {config_path} from the chief after {WAIT_FOR_CHIEF_S:.0f} s")
        time.sleep(0.5)
    if config_lib.load(config_path) != cfg:
        raise ConfigError(f"{run_dir} holds a run with another config: pick another name=")
    return run_dir


def _splits(run_dir: Path, cfg: Config, worker: Worker):
    """This worker's training and validation examples, the steps every worker takes per epoch,
    and the longest validation share (every worker pads its own to it: `_validation`).

    Examples are dealt out in turn; with `cfg.shards`, whole files are (file i to worker i mod n,
    what tf.data's AutoShardPolicy.FILE does), and a worker reads no picture file at all.
    """
    # Each worker finds the pictures itself: the chief's unpacked copy is on the chief's machine alone.
    train_ex, val_ex = (run_data.split(run_dir, name, cfg.max_images, cfg.seed, own_copy=not worker.is_chief,
                                       pictures=not cfg.shards) for name in ("train", "val"))

    def share(examples, index):
        return shards.share(cfg.shards, examples, index, worker.count) if cfg.shards else examples[index::worker.count]

    steps = min(len(share(train_ex, w)) for w in range(worker.count)) // cfg.batch_size
    if steps == 0:
        raise ConfigError(f"{len(train_ex)} training images cannot give each of {worker.count} workers "
                          f"one batch of {cfg.batch_size}: lower batch_size")
    longest = max(len(share(val_ex, w)) for w in range(worker.count))
    return share(train_ex, worker.index), share(val_ex, worker.index), steps, longest


def _validation(val_ex, cfg: Config, longest: int, unreadable):
    """This worker's validation batches, padded with blank pictures labelled -1 (metrics leave them
    out) to `longest` pictures: collectives need every worker to take the same number of steps."""
    import tensorflow as tf

    from catdog.data.pipeline import make_dataset

    blank = tf.data.Dataset.from_tensors((tf.zeros((cfg.image_size, cfg.image_size, 3)), tf.constant(-1.0)))
    own = make_dataset(val_ex, cfg, training=False, unreadable=unreadable).unbatch() if val_ex else blank.take(0)
    return own.concatenate(blank.repeat(longest - len(val_ex))).batch(cfg.batch_size)


def _metrics(labels: np.ndarray, logits: np.ndarray, losses: np.ndarray, prefix: str = "") -> dict:
    from sklearn.metrics import roc_auc_score

    keep = labels >= 0
    labels, logits, losses = labels[keep], logits[keep], losses[keep]
    auc = roc_auc_score(labels, logits) if len(set(labels.tolist())) == 2 else float("nan")
    return {f"{prefix}accuracy": float(np.mean((logits > 0) == (labels > 0.5))),
            f"{prefix}auc": float(auc), f"{prefix}loss": float(np.mean(losses))}


class _History:
    """history.csv with the columns of a single-machine run; rows past a restored epoch are dropped."""

    def __init__(self, path: Path, resume_at: int):
        from catdog.training.resume import history_rows

        self.path = path
        if not history_rows(path, resume_at):  # cut to the restored epochs; a new file gets its header
            self._write([], "w")

    def append(self, row: dict) -> None:
        self._write([row], "a")

    def _write(self, rows: list[dict], mode: str) -> None:
        with self.path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, HISTORY_FIELDS, extrasaction="ignore")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)


def _fit(strategy, worker: Worker, model, cfg: Config, train_ds, val_ds, *, phase: str, run_dir: Path,
         lr: float, epochs: int, patience: int, steps: int, save_best: bool, on_epoch=None) -> float:
    """Trains `model` for up to `epochs` epochs under `strategy`; returns the best validation loss.

    Resumes from the phase's checkpoint if there is one. With `save_best`, the chief saves the
    full model at each new best (like ModelCheckpoint); without, the best weights are restored
    at the end (like EarlyStopping's restore_best_weights), as `catdog.training.train` does per phase.
    `on_epoch(epochs_done)` runs on the chief after each epoch's checkpoint.
    """
    import tensorflow as tf

    from catdog.training.train import make_loss, make_optimizer

    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        # The linear scaling rule: n times the batch, n times the step size.
        optimizer = make_optimizer(cfg, lr * replicas, steps, epochs)
        optimizer.build(model.trainable_variables)
        loss_fn = make_loss(cfg, reduction=None)
        epoch_var, best_var, wait_var = (tf.Variable(v, trainable=False) for v in (0, np.inf, 0))
        best_weights = [tf.Variable(w, trainable=False) for w in model.weights] if not save_best else []
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, best=best_var,
                                     wait=wait_var, best_weights=best_weights)
    backup = run_dir / "backup" / phase
    if latest := tf.train.latest_checkpoint(backup):
        checkpoint.restore(latest)
    # Each worker writes: the chief where the run is, the others to a scratch copy deleted at the end.
    # The scratch copy lives outside the run folder: a worker still saving its last epoch must
    # not bring back the backup/ folder that the chief removes once the run is done.
    scratch = backup if worker.is_chief else Path(tempfile.mkdtemp(prefix=f"catdog-{phase}-worker{worker.index}-"))
    manager = tf.train.CheckpointManager(checkpoint, scratch, max_to_keep=1)
    global_batch = cfg.batch_size * replicas

    @tf.function
    def train_step(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                per_example = loss_fn(tf.reshape(y, (-1, 1)), logits)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return logits, y, per_example

        return [strategy.gather(t, axis=0) for t in strategy.run(step, args=(x, y))]

    @tf.function
    def val_step(x, y):
        def step(x, y):
            logits = model(x, training=False)
            return logits, y, loss_fn(tf.reshape(tf.maximum(y, 0.0), (-1, 1)), logits)

        return [strategy.gather(t, axis=0) for t in strategy.run(step, args=(x, y))]

    def run(step, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, logits, per-example losses) of every worker's examples in one pass."""
        outs = [step(x, y) for x, y in dataset]
        logits, labels, losses = (np.concatenate([np.asarray(o[i]).ravel() for o in outs]) for i in range(3))
        return labels, logits, losses

    # The files of a single-machine run: history_head.csv for the head phase, history.csv and
    # TensorBoard's train/ and validation/ (scalars named epoch_<metric>) for the images phase.
    log = run_dir / ("history.csv" if save_best else "history_head.csv")
    history = _History(log, int(epoch_var.numpy())) if worker.is_chief else None
    boards = {split: tf.summary.create_file_writer(str(run_dir / "tensorboard" / split))
              for split in ("train", "validation")} if history and save_best else {}
    for epoch in range(int(epoch_var.numpy()), epochs):
        if int(wait_var.numpy()) >= patience:
            break  # stopped early before the restart
        started = time.perf_counter()
        row = {"epoch": epoch, **_metrics(*run(train_step, train_ds)), **_metrics(*run(val_step, val_ds), "val_")}
        if row["val_loss"] < float(best_var.numpy()):
            best_var.assign(row["val_loss"])
            wait_var.assign(0)
            for variable, weight in zip(best_weights, model.weights):
                variable.assign(weight)
            if save_best and worker.is_chief:
                model.save(run_dir / "model.keras")
        else:
            wait_var.assign_add(1)
        epoch_var.assign(epoch + 1)
        if history:  # the row first: a restart drops rows past the checkpoint, never misses one
            history.append(row)
            for split, writer in boards.items():
                with writer.as_default():
                    prefix = "val_" if split == "validation" else ""
                    for name in ("loss", "accuracy", "auc"):
                        tf.summary.scalar(f"epoch_{name}", row[prefix + name], step=epoch)
                writer.flush()
        manager.save()
        if worker.is_chief and on_epoch:
            on_epoch(epoch + 1)
        if worker.is_chief:
            print(f"{phase} epoch {epoch + 1}/{epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in row.items() if k != "epoch") + f" ({time.perf_counter() - started:.1f} s)",
                flush=True, file=sys.stderr)
    if not worker.is_chief:
        shutil.rmtree(scratch, ignore_errors=True)
    for variable, weight in zip(best_weights, model.weights):
        weight.assign(variable)
    return float(best_var.numpy())


def _features(extractor, dataset):
    """Pooled backbone features and labels of a (local) image dataset, in order, as a dataset."""
    import tensorflow as tf

    from catdog.training.views import features_and_labels

    return tf.data.Dataset.from_tensor_slices(features_and_labels(extractor, dataset))


def train(cfg: Config) -> Path:
    """Trains under MultiWorkerMirroredStrategy as one of the TF_CONFIG workers; returns the run folder.

    Same two phases as `catdog.training.train.train`: for an ImageNet backbone, the head on pooled
    features (each worker computes those of its own files), then the top of the backbone on
    images; for the scratch CNN, images only. The chief calibrates the best model at the end.
    """
    import keras
    import tensorflow as tf

    from catdog.data.pipeline import Unreadable, make_dataset, resolve_cache
    from catdog.models import builders as model_lib
    from catdog.training import views
    from catdog.training.calibrate import calibrate

    if views.cached(cfg):
        console.note("--distributed: cached_views is a one-machine recipe; every worker fine-tunes on "
                     "pictures (cached_views=0)")
        cfg = dataclasses.replace(cfg, cached_views=0)
    # "auto" resolved by each worker for its own CPU; the chief's config.json says what it chose
    cfg = dataclasses.replace(cfg, precision=model_lib.resolve_precision(cfg.precision)[0])

    os.environ["TF_CONFIG"] = tf_config()  # as given, or built from Slurm's variables: the strategy reads it
    worker = worker_from_env()
    # First, before any other TensorFlow op: the collectives are set up when it is created.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    run_dir = _open_run(cfg, worker)
    train_ex, val_ex, steps, val_longest = _splits(run_dir, cfg, worker)
    keras.utils.set_random_seed(cfg.seed)  # the same initial weights on every worker
    state = runs.read_state(run_dir)  # the schema of a single-machine run's state.json
    if state.get("status") == "finished":  # a group restarted after the chief had finished: nothing left
        return run_dir
    started = time.time() - state.get("seconds", 0.0)
    if worker.is_chief:
        state.update(status="running", pid=os.getpid(), workers=worker.count)
        runs.write_state(run_dir, state)
    unreadable = Unreadable()  # this worker's pictures that could not be decoded
    with model_lib.precision(cfg.precision):  # bfloat16 maths if asked; float32 weights
        with strategy.scope():
            model = model_lib.build_model(cfg)
        transfer = cfg.model != "scratch"
        distribute = strategy.distribute_datasets_from_function  # each worker feeds its own shard
        if transfer and "head_val_loss" not in state:
            plain = dataclasses.replace(cfg, cache="none", augment=False)
            extractor = model.get_layer("features")
            head_train = _features(extractor, make_dataset(train_ex, plain, training=False, unreadable=unreadable))
            head_val = _features(extractor, _validation(val_ex, plain, val_longest, unreadable))
            best = _fit(strategy, worker, model.get_layer("head"), cfg,
                        distribute(lambda _: head_train.shuffle(len(train_ex), seed=cfg.seed).repeat()
                                   .batch(cfg.batch_size, drop_remainder=True).take(steps)),
                        distribute(lambda _: head_val.batch(cfg.batch_size)),
                        phase="head", run_dir=run_dir, lr=cfg.head_learning_rate, epochs=cfg.head_epochs,
                        patience=max(cfg.patience, 5), steps=steps, save_best=False)
            state["head_val_loss"] = best
            if worker.is_chief:
                model.save(run_dir / "model.keras")
                runs.write_state(run_dir, state)
        elif transfer:
            model.set_weights(keras.saving.load_model(run_dir / "model.keras").get_weights())
        if not transfer or cfg.fine_tune_layers > 0:
            if transfer:
                model_lib.unfreeze_top(model, cfg.fine_tune_layers)
            cache, _ = resolve_cache(cfg, len(train_ex) + len(val_ex))  # this worker's share
            # No disk cache: the run folder is shared, and the workers' caches would collide there.
            local = dataclasses.replace(cfg, cache="none" if cache == "disk" else cache)

            def epoch_done(done: int) -> None:
                state["epochs_done"] = done
                runs.write_state(run_dir, state)

            _fit(strategy, worker, model, cfg,
                 distribute(lambda _: make_dataset(train_ex, local, training=True, unreadable=unreadable).take(steps)),
                 distribute(lambda _: _validation(val_ex, local, val_longest, unreadable)),
                 phase="images", run_dir=run_dir, lr=cfg.learning_rate, epochs=cfg.epochs,
                 patience=cfg.patience, steps=steps, save_best=True,
                 on_epoch=epoch_done)
    if len(unreadable):  # each worker its own file: they decode different pictures
        unreadable.write(run_dir / ("unreadable.json" if worker.is_chief else f"unreadable-worker{worker.index}.json"))
    if worker.is_chief:
        shutil.rmtree(run_dir / "backup", ignore_errors=True)  # resume state, only while training
        model_lib.save_float32(run_dir / "model.keras", cfg)  # a bfloat16 run's model becomes float32
        state.update(seconds=round(time.time() - started, 1))
        runs.write_state(run_dir, state)
        calibrate(run_dir)
        runs.write_state(run_dir, {**state, "status": "finished"})
    return run_dir
