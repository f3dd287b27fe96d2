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

Fault tolerance: after every epoch the model, optimizer, epoch, step and early-stopping state
are checkpointed under `<run>/backup/`. A worker that dies breaks its peers' collectives, so the
group is restarted with the same command (`catdog launch` does it) and resumes from there,
losing at most the unfinished epoch. SIGTERM, what Kubernetes and Slurm send before they evict
or preempt, loses no step of the images phase: TensorFlow's PreemptionCheckpointHandler has every
worker checkpoint after the same step, the next one any worker reaches, and exit with
`errors.Restart` (status 75); the restarted group resumes at that step, with the batches an
uninterrupted run would train on there (each epoch's order and augmentation come from the seed
and its number: `picture_epochs`). The handler saves only then, so the steps cost nothing more.
The head phase (a few seconds on pooled features) keeps its per-epoch checkpoints alone: a
SIGTERM there is logged and ignored by TensorFlow's own watcher until the images phase begins.
TensorFlow's handler does nothing on a Google Cloud CPU VM (its own limit): there, SIGTERM
changes nothing, and the platform's SIGKILL loses the unfinished epoch, as before.

$CATDOG_LOG_STEPS=N: the chief also logs one line every N training steps.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from catdog import config as config_lib
from catdog import console, runs
from catdog.config import Config, ConfigError
from catdog.data import run_data, shards
from catdog.errors import Restart
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


class _EpochLog:
    """The chief's record of a phase: the files of a single-machine run (history_head.csv for the
    head phase; history.csv and TensorBoard's train/ and validation/, scalars named epoch_<metric>,
    for the images phase), cut to the epochs before `resume_at`, and one line an epoch on stderr
    (and one every $CATDOG_LOG_STEPS steps, for long epochs and for tests)."""

    def __init__(self, run_dir: Path, phase: str, epochs: int, images: bool, resume_at: int):
        import tensorflow as tf

        from catdog.training.resume import history_rows

        self.phase, self.epochs = phase, epochs
        self.every = int(os.environ.get("CATDOG_LOG_STEPS") or 0)
        self.path = run_dir / ("history.csv" if images else "history_head.csv")
        if not history_rows(self.path, resume_at):  # cut to the restored epochs; a new file gets its header
            self._write([], "w")
        self.boards = {split: tf.summary.create_file_writer(str(run_dir / "tensorboard" / split))
                       for split in ("train", "validation")} if images else {}

    def step(self, epoch: int, done: int, steps: int) -> None:
        if self.every and done % self.every == 0:
            print(f"{self.phase} epoch {epoch + 1}/{self.epochs} step {done}/{steps}", file=sys.stderr, flush=True)

    def epoch(self, row: dict, seconds: float) -> None:
        import tensorflow as tf

        self._write([row], "a")
        for split, writer in self.boards.items():
            with writer.as_default():
                prefix = "val_" if split == "validation" else ""
                for name in ("loss", "accuracy", "auc"):
                    tf.summary.scalar(f"epoch_{name}", row[prefix + name], step=row["epoch"])
            writer.flush()
        print(f"{self.phase} epoch {row['epoch'] + 1}/{self.epochs}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k != "epoch") + f" ({seconds:.1f} s)",
            flush=True, file=sys.stderr)

    def _write(self, rows: list[dict], mode: str) -> None:
        with self.path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, HISTORY_FIELDS, extrasaction="ignore")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)


def _step_functions(strategy, model, optimizer, loss_fn, global_batch: int):
    """(train_step, val_step): one distributed step each, returning every worker's (logits, labels, losses)."""
    import tensorflow as tf

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

    return train_step, val_step


def _gathered(outs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, logits, per-example losses) of the steps' outputs, every worker's examples."""
    logits, labels, losses = (np.concatenate([np.asarray(o[i]).ravel() for o in outs]) for i in range(3))
    return labels, logits, losses


def _train_epoch(step_fn, batches, step_var, first_step: int, steps: int, on_step=None) -> list:
    """Steps first_step..steps-1 of an epoch on `batches`, `step_var` counting them; their outputs."""
    outs = []
    for step in range(first_step, steps):
        outs.append(step_fn(*next(batches)))
        step_var.assign(step + 1)
        if on_step:
            on_step(step + 1, steps)
    return outs


def _keep_best(val_loss: float, best_var, wait_var, best_weights: list, model) -> bool:
    """Early stopping's bookkeeping after an epoch; whether `val_loss` is a new best (its weights then kept)."""
    if val_loss >= float(best_var.numpy()):
        wait_var.assign_add(1)
        return False
    best_var.assign(val_loss)
    wait_var.assign(0)
    for variable, weight in zip(best_weights, model.weights):
        variable.assign(weight)
    return True


@contextlib.contextmanager
def _preemption_handler(strategy, checkpoint, backup: Path, save, stopped):
    """TensorFlow's PreemptionCheckpointHandler for a step loop (call `handler.run(step, ...)`).

    It restores the latest checkpoint in `backup` on every worker (the chief's: the handler
    counts its own steps in it, and the workers agree on the step to save by that count), and
    takes SIGTERM over until the loop is done: after SIGTERM to any worker, every worker calls
    `save` at the same step, then raises `stopped()`. Before, TensorFlow's own SIGTERM watcher
    (set up with the strategy's coordination service) logs the signal and goes on; after, SIGTERM
    is back to what Python reported before, its default: the worker ends, and the group restarts.
    """
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    previous = signal.getsignal(signal.SIGTERM)

    def exit_fn():
        raise stopped()

    termination = tf.distribute.experimental.TerminationConfig(exit_fn=exit_fn, save_fn=save)
    try:
        # The handler's own save reads its deprecated `total_run_calls`: a warning about TF's code, not ours.
        with deprecation.silence():
            yield tf.distribute.experimental.PreemptionCheckpointHandler(
                strategy.cluster_resolver, checkpoint, str(backup), termination)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fit(strategy, worker: Worker, model, cfg: Config, train_batches, val_ds, *, phase: str, run_dir: Path,
         lr: float, epochs: int, patience: int, steps: int, save_best: bool, per_step: bool = False,
         on_epoch=None) -> float:
    """Trains `model` for up to `epochs` epochs under `strategy`; returns the best validation loss.

    `train_batches(first, done)` gives this worker's training batches from step `done` of epoch
    `first` to the end, `steps` an epoch, back to back. Resumes from the phase's checkpoint if
    there is one, taken after every epoch and, with `per_step`, at the step after a SIGTERM to
    any worker (then every worker raises `Restart`). With `save_best`, the chief saves the full
    model at each new best (like ModelCheckpoint); without, the best weights are restored at the
    end (like EarlyStopping's restore_best_weights), as `catdog.training.train` does per phase.
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
        epoch_var, step_var, best_var, wait_var = (tf.Variable(v, trainable=False) for v in (0, 0, np.inf, 0))
        best_weights = [tf.Variable(w, trainable=False) for w in model.weights] if not save_best else []
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, step=step_var,
                                     best=best_var, wait=wait_var, best_weights=best_weights)
    backup = run_dir / "backup" / phase
    # Each worker writes: the chief where the run is, the others to a scratch copy deleted at the end.
    # The scratch copy lives outside the run folder: a worker still saving its last epoch must
    # not bring back the backup/ folder that the chief removes once the run is done.
    scratch = backup if worker.is_chief else Path(tempfile.mkdtemp(prefix=f"catdog-{phase}-worker{worker.index}-"))
    manager = tf.train.CheckpointManager(checkpoint, scratch, max_to_keep=1)
    train_step, val_step = _step_functions(strategy, model, optimizer, loss_fn, cfg.batch_size * replicas)

    def stopped():
        return Restart(f"{phase}: a worker of the group got SIGTERM; every worker checkpointed after step "
                       f"{int(step_var.numpy())} of epoch {int(epoch_var.numpy()) + 1} and stopped: start the "
                       f"same command again to resume there (catdog launch does)")

    step_fn = train_step
    try:
        with contextlib.ExitStack() as stack:
            if per_step:  # the handler restores the checkpoint itself; its `run` is a step, and a checkpoint when due
                handler = stack.enter_context(_preemption_handler(strategy, checkpoint, backup, manager.save, stopped))
                step_fn = functools.partial(handler.run, train_step)
            elif latest := tf.train.latest_checkpoint(backup):
                checkpoint.restore(latest)
            first, done = int(epoch_var.numpy()), int(step_var.numpy())
            if worker.is_chief and (first or done):
                print(f"{phase}: resumed at step {done} of epoch {first + 1}", file=sys.stderr, flush=True)
            if first < epochs:  # each worker feeds its own shard
                batches = iter(strategy.distribute_datasets_from_function(lambda _: train_batches(first, done)))
            log = _EpochLog(run_dir, phase, epochs, save_best, first) if worker.is_chief else None
            for epoch in range(first, epochs):
                if int(wait_var.numpy()) >= patience:
                    break  # stopped early before the restart
                started = time.perf_counter()
                outs = _train_epoch(step_fn, batches, step_var, done if epoch == first else 0, steps,
                                    functools.partial(log.step, epoch) if log else None)
                labels, logits, losses = _gathered([val_step(x, y) for x, y in val_ds])
                row = {"epoch": epoch, **_metrics(*_gathered(outs)), **_metrics(labels, logits, losses, "val_")}
                if _keep_best(row["val_loss"], best_var, wait_var, best_weights, model) and save_best and worker.is_chief:
                    model.save(run_dir / "model.keras")
                epoch_var.assign(epoch + 1)
                step_var.assign(0)
                if log:  # the row first: a restart drops rows past the checkpoint, never misses one
                    log.epoch(row, time.perf_counter() - started)
                manager.save()
                if worker.is_chief and on_epoch:
                    on_epoch(epoch + 1)
    finally:
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


def picture_epochs(train_ex, cfg: Config, steps: int, unreadable):
    """`train_batches(first, done)` for `_fit` over this worker's pictures: `make_dataset(epochs=)`'s
    epochs first..cfg.epochs-1, each `steps` batches in its own seeded order and augmentation."""
    from catdog.data.pipeline import make_dataset

    def batches(first: int, done: int):
        return make_dataset(train_ex, cfg, training=True, epochs=(first, cfg.epochs), unreadable=unreadable,
                            steps=steps).skip(done)

    return batches


def feature_epochs(features, cfg: Config, steps: int, end: int):
    """`train_batches(first, done)` for `_fit` over (feature, label) pairs: epochs first..end-1, each
    `steps` full batches in the order `epoch_seed(cfg, k)` gives (as `make_dataset(epochs=)` does
    for pictures), so that a restarted group sees the batches an uninterrupted one would."""
    import tensorflow as tf

    from catdog.data.pipeline import epoch_seed

    def epoch(k: int):
        one_pass = features.shuffle(len(features), seed=epoch_seed(cfg, k), reshuffle_each_iteration=False)
        return one_pass.repeat().batch(cfg.batch_size, drop_remainder=True).take(steps)

    return lambda first, done: functools.reduce(tf.data.Dataset.concatenate, map(epoch, range(first, end))).skip(done)


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
                        feature_epochs(head_train, cfg, steps, cfg.head_epochs),
                        distribute(lambda _: head_val.batch(cfg.batch_size)),
                        phase="head", run_dir=run_dir, lr=cfg.head_learning_rate, epochs=cfg.head_epochs,
                        patience=max(cfg.patience, 5), steps=steps, save_best=False)
            state["head_val_loss"] = best
            if worker.is_chief:
                model.save(run_dir / "model.keras")
                runs.write_state(run_dir, state)
        elif transfer:
            model.set_weights(model_lib.load_model(run_dir / "model.keras").get_weights())
        if not transfer or cfg.fine_tune_layers > 0:
            if transfer:
                model_lib.unfreeze_top(model, cfg.fine_tune_layers)
            cache, _ = resolve_cache(cfg, len(train_ex) + len(val_ex))  # this worker's share
            # No disk cache: the run folder is shared, and the workers' caches would collide there.
            local = dataclasses.replace(cfg, cache="none" if cache == "disk" else cache)

            def epoch_done(done: int) -> None:
                state["epochs_done"] = done
                runs.write_state(run_dir, state)

            _fit(strategy, worker, model, cfg, picture_epochs(train_ex, local, steps, unreadable),
                 distribute(lambda _: _validation(val_ex, local, val_longest, unreadable)),
                 phase="images", run_dir=run_dir, lr=cfg.learning_rate, epochs=cfg.epochs,
                 patience=cfg.patience, steps=steps, save_best=True, per_step=True, on_epoch=epoch_done)
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
