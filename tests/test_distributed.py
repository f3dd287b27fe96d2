"""Multi-worker training on 127.0.0.1, the launcher's restart after a kill, and sharded prediction.

Weights of a 2-worker run are not compared with a 1-worker run of the same global batch: they
cannot match. Each worker reads its own 1/n of the files (so that no worker decodes the whole
dataset), which makes every global batch a different set of images than a single worker's
shuffle would draw; BatchNorm normalises over each worker's half batch; and each worker draws
its own augmentation. What the strategy guarantees, and what the run folder shows, is one
model: mirrored variables updated by all-reduced gradients.
"""

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import dtype_policies, synthetic_image, write_kaggle_tree

from catdog.config import ConfigError
from catdog.inference.shards import merge, parse_shard, select
from catdog.training.clusters import Worker, expand_hostlist, tasks_per_node, worker_config, worker_from_env
from catdog.training.launch import free_ports


def catdog(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "catdog.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, **kwargs)


def test_tf_config_gives_each_task_its_place():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    places = [worker_from_env({"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})})
              for task in ({"type": "chief", "index": 0}, {"type": "worker", "index": 1})]
    assert places == [Worker(0, 3), Worker(2, 3)] and places[0].is_chief and not places[1].is_chief
    for bad in ("", "{", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 5}})):
        with pytest.raises(ConfigError, match="TF_CONFIG"):
            worker_from_env({"TF_CONFIG": bad})


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_every_input_once_and_merge_restores_the_order(count, tmp_path):
    items = [f"img{k}.jpg" for k in range(20)]
    shards = [select(items, *parse_shard(f"{i}/{count}")) for i in range(count)]
    assert sorted(sum(shards, [])) == sorted(items)
    texts = ["".join(json.dumps({"path": p}) + "\n" for p in shard) for shard in shards]
    out = io.StringIO()
    paths = []
    for i, text in enumerate(texts):
        paths.append(tmp_path / f"part-{i}.jsonl")
        paths[-1].write_text(text)
    assert merge(paths, out) == 20
    assert [json.loads(line)["path"] for line in out.getvalue().splitlines()] == items
    if 20 % count:  # shards of unequal length given in the wrong order do not fit one split
        with pytest.raises(ConfigError, match="out of order"):
            merge(paths[::-1], io.StringIO())


@pytest.mark.parametrize("text", ["2/2", "-1/3", "1", "a/b", "0/0"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_predict_shards_merge_to_the_unsharded_answer(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(7):
        synthetic_image(k % 2, rng, size=64).save(folder / f"{k}.jpg")
    (folder / "broken.jpg").write_bytes(b"not a picture")
    whole = catdog("predict", folder, "--format", "csv")
    assert whole.returncode == 1, whole.stderr  # one file failed, the rest answered
    for i in range(3):
        part = catdog("predict", folder, "--format", "csv", "--shard", f"{i}/3")
        (tmp_path / f"part-{i}.csv").write_text(part.stdout)
    merged = catdog("merge", *(tmp_path / f"part-{i}.csv" for i in range(3)))
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout == whole.stdout
    assert len(list(csv.DictReader(io.StringIO(merged.stdout)))) == 8


@pytest.fixture
def tree(tmp_path):
    return write_kaggle_tree(tmp_path / "kaggle", per_class=40)


def _run_files(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name != "state.json")


def test_two_workers_write_the_run_folder_of_a_single_machine_run(tmp_path, tree):
    common = ["--preset", "tiny", "--data", tree, f"runs_dir={tmp_path / 'runs'}", "epochs=2"]
    single = catdog("train", *common, "name=one")
    assert single.returncode == 0, single.stderr
    out = catdog("launch", "--workers", "2", "--", "train", "--distributed", *common, "name=two")
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "runs" / "two"
    assert out.stdout.strip() == str(run_dir)  # the chief's result on stdout, logs on stderr
    assert "[worker 1]" in out.stderr
    assert _run_files(run_dir) == _run_files(tmp_path / "runs" / "one")
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    with open(tmp_path / "runs" / "one" / "history.csv") as f:
        assert set(rows[0]) <= set(next(csv.DictReader(f)))
    state = json.loads((run_dir / "state.json").read_text())
    assert state["workers"] == 2 and state["status"] == "finished" and state["epochs_done"] == 2
    metrics = [catdog("evaluate", tmp_path / "runs" / name) for name in ("one", "two")]
    assert all(m.returncode == 0 for m in metrics), metrics[1].stderr
    for name, done in zip(("one", "two"), metrics, strict=True):  # the table, on 8 test pictures
        figures = json.loads((tmp_path / "runs" / name / "metrics_test.json").read_text())
        assert figures["n"] == 8, figures
        assert re.search(rf"^accuracy +{figures['accuracy']:.4f}$", done.stdout, re.M), done.stdout
    keys = [set(json.loads((tmp_path / "runs" / n / "metrics_test.json").read_text())) for n in ("one", "two")]
    assert keys[0] == keys[1]


def test_a_transfer_run_keeps_both_phases_histories(tmp_path, tree):
    """Head on each worker's pooled features, then fine-tuning: the files a single-machine transfer run
    writes. Cached views are a one-machine recipe: the workers say so and fine-tune on pictures."""
    out = catdog("launch", "--workers", "2", "--", "train", "--distributed", "--preset", "tiny", "--data", tree,
                 "model=MobileNet", "weights=none", "image_size=32", "unknown=false", "head_epochs=2", "epochs=1",
                 "fine_tune_layers=4", "cached_views=2", f"runs_dir={tmp_path / 'runs'}", "name=transfer")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cached_views is a one-machine recipe; every worker fine-tunes on pictures" in out.stderr
    run_dir = tmp_path / "runs" / "transfer"
    assert json.loads((run_dir / "config.json").read_text())["cached_views"] == 0  # what ran
    for name, epochs in (("history_head.csv", [0, 1]), ("history.csv", [0])):
        with open(run_dir / name) as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == epochs, name
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "finished" and "head_val_loss" in state and state["epochs_done"] == 1
    assert (run_dir / "model.json").exists() and not (run_dir / "backup").exists()


def test_a_bfloat16_distributed_run_saves_a_float32_model(tmp_path, tree):
    """Mixed precision under MultiWorkerMirroredStrategy; the chief rewrites the model in float32."""
    out = catdog("launch", "--workers", "2", "--", "train", "--distributed", "--preset", "tiny", "--data", tree,
                 "precision=bfloat16", "epochs=1", f"runs_dir={tmp_path / 'runs'}", "name=bf16")
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "bf16"
    assert json.loads((run_dir / "state.json").read_text())["status"] == "finished"
    model = keras.saving.load_model(run_dir / "model.keras")
    policies = dtype_policies(model)
    assert policies == {"float32"}, policies
    photos = sorted(tree.glob("train/*.jpg"))
    predicted = catdog("predict", "--model", run_dir, *photos)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len(predicted.stdout.splitlines()) == len(photos) == 80


def _launch_and_signal(tmp_path, tree, name, signum, ready, launch_args=(), overrides=(), env=None):
    """A tiny `catdog launch` run, and `signum` to its last worker once `ready(log, run_dir)`;
    returns (the launcher's exit status, its stdout, its stderr log, whether the signal went)."""
    log = tmp_path / f"{name}.log"
    run_dir = tmp_path / "runs" / name
    workers = int(dict(zip(launch_args[::2], launch_args[1::2])).get("--workers", 2))
    with open(log, "w") as stderr:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "catdog.cli", "launch", *launch_args, "--", "train", "--distributed",
             "--preset", "tiny", "--data", str(tree), f"runs_dir={tmp_path / 'runs'}", f"name={name}", *overrides],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        signalled, deadline = False, time.monotonic() + 300
        while not signalled and time.monotonic() < deadline and launcher.poll() is None:
            text = log.read_text()
            if ready(text, run_dir):
                pid = int(next(line.split()[4] for line in text.splitlines()
                               if line.startswith(f"[launch] worker {workers - 1} pid")))
                os.kill(pid, signum)
                signalled = True
            time.sleep(0.05)
        stdout, _ = launcher.communicate(timeout=300)
    return launcher.returncode, stdout, log.read_text(), signalled


def _history_epochs(run_dir):
    with open(run_dir / "history.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_a_killed_worker_is_restarted_and_no_finished_epoch_is_repeated(tmp_path, tree):
    epochs = 6

    def two_epochs_done(log, run_dir):
        history = run_dir / "history.csv"
        return history.exists() and len(history.read_text().splitlines()) >= 3  # header + 2 epochs

    code, stdout, text, killed = _launch_and_signal(tmp_path, tree, "ft", signal.SIGKILL, two_epochs_done,
                                                    overrides=[f"epochs={epochs}", "patience=100"])
    run_dir = tmp_path / "runs" / "ft"
    assert killed, "the run ended before a worker could be killed"
    assert code == 0, text[-3000:]
    assert "exited with -9; restarting the group" in text
    assert stdout.strip() == str(run_dir)
    assert _history_epochs(run_dir) == list(range(epochs))
    assert not (run_dir / "backup").exists()


STEP_LINE = re.compile(r"^\[worker 0\] images epoch (\d+)/\d+ step (\d+)/(\d+)$", re.M)


@pytest.mark.parametrize("workers", [2, 1])
def test_sigterm_mid_epoch_checkpoints_the_group_at_the_next_step_and_no_step_is_redone(tmp_path, tree, workers):
    """SIGTERM to a worker after 2 steps of the second epoch: every worker checkpoints at the same
    step and exits 75, `catdog launch` starts the group again (a preemption, not a failure: with
    --retries 0), and the group resumes mid-epoch at that step. The chief logs every step
    (CATDOG_LOG_STEPS=1), so the steps redone are counted: the last one logged before the stop,
    less the one resumed at. Before the handler, the killed worker took the group back to the
    epoch's start, and every step of it was redone."""
    def two_steps_into_epoch_2(log, run_dir):
        return any(int(epoch) == 2 and int(step) >= 2 for epoch, step, _ in STEP_LINE.findall(log))

    code, stdout, text, signalled = _launch_and_signal(
        tmp_path, tree, "pre", signal.SIGTERM, two_steps_into_epoch_2,
        launch_args=["--workers", str(workers), "--retries", "0"],
        overrides=["epochs=3", "patience=100", "max_images=0", "batch_size=2"],
        env={**os.environ, "CATDOG_LOG_STEPS": "1"})
    assert signalled, "the run ended before a worker could be sent SIGTERM"
    assert code == 0, text[-3000:]
    before, restarted, after = text.partition("exited with 75: the group was preempted and checkpointed; "
                                              "restarting the group")
    assert restarted, text[-3000:]
    *_, (last_epoch, last_step, steps) = map(lambda hit: tuple(map(int, hit)), STEP_LINE.findall(before))
    resumed = re.search(r"^\[worker 0\] images: resumed at step (\d+) of epoch (\d+)$", after, re.M)
    assert resumed, after[-3000:]
    at_step, at_epoch = int(resumed[1]), int(resumed[2])
    assert 0 < at_step < steps, (at_epoch, at_step)  # mid-epoch
    redone = (last_epoch - at_epoch) * steps + last_step - at_step
    # The checkpoint is taken between two steps, after the last one logged: none is redone.
    assert redone == 0, (last_epoch, last_step, at_epoch, at_step)
    run_dir = tmp_path / "runs" / "pre"
    assert stdout.strip() == str(run_dir)
    assert _history_epochs(run_dir) == [0, 1, 2]  # an uninterrupted run's rows, none twice
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "finished" and state["epochs_done"] == 3
    assert not (run_dir / "backup").exists()


def _examples(tree):
    from catdog.data.prepare import Example

    return [Example(path, int(path.name.startswith("dog")), "train") for path in sorted(tree.glob("train/*.jpg"))]


def _as_arrays(dataset):
    return [np.concatenate([np.asarray(t).ravel() for t in batch]) for batch in dataset]


def test_a_restarted_group_sees_the_batches_an_uninterrupted_one_would(tree):
    """The batches a worker trains on from step 3 of epoch 2 are those an uninterrupted run trains
    on from there: pictures (with their augmentation) and the head's features."""
    import tensorflow as tf

    from catdog.config import resolve
    from catdog.training.distributed import feature_epochs, picture_epochs

    cfg = resolve("tiny", ["epochs=3", "max_images=0", "batch_size=4"])
    shard = _examples(tree)[1::2]  # a worker's share, one picture in two
    steps = len(shard) // cfg.batch_size - 1  # fewer than one pass: a group's count, not the shard's own
    features = tf.data.Dataset.from_tensor_slices((np.arange(len(shard), dtype=np.float32)[:, None],
                                                   np.zeros(len(shard), np.float32)))
    for batches in (picture_epochs(shard, cfg, steps, None), feature_epochs(features, cfg, steps, cfg.epochs)):
        whole, restarted = _as_arrays(batches(0, 0)), _as_arrays(batches(1, 3))
        assert len(whole) == 3 * steps
        assert len(restarted) == len(whole) - steps - 3
        for mine, theirs in zip(restarted, whole[steps + 3:], strict=True):
            np.testing.assert_array_equal(mine, theirs)
        assert not all(np.array_equal(a, b) for a, b in zip(whole[:steps], whole[steps:2 * steps]))  # reshuffled


def test_distributed_needs_a_run_name_and_tf_config(tmp_path, tree):
    out = catdog("train", "--distributed", "--preset", "tiny", "--data", tree, env={**os.environ, "TF_CONFIG": ""})
    assert out.returncode == 2 and "TF_CONFIG" in out.stderr
    out = catdog("launch", "--workers", "1", "--", "train", "--distributed", "--preset", "tiny", "--data", tree)
    assert out.returncode == 2 and "name=" in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    out = catdog("launch", "--workers", "1", "--", "train", "--distributed", "--preset", "tiny", "--data", empty,
                 f"runs_dir={tmp_path / 'runs'}", "name=x")
    assert out.returncode == 2 and "no usable cat or dog pictures" in out.stderr, out.stderr
    assert not (tmp_path / "runs" / "x").exists()  # a refused start leaves nothing behind


def _zip_tree(tree, archive):
    import zipfile

    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(tree.rglob("*.jpg")):
            z.write(path, path.relative_to(tree))
    return archive


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare(1) for a private mount namespace per worker")
def test_two_machines_each_unpack_the_data_themselves_and_train_on_no_blank_picture(tmp_path, tree):
    """Two workers with their own CATDOG_HOME, each in a mount namespace of its own with an empty
    tmpfs over the other's home: as on two machines, the chief's unpacked copy is out of the
    other's reach. The data source, a zip, is at the same path on both (a shared mount)."""
    archive = _zip_tree(tree, tmp_path / "train.zip")
    homes = [tmp_path / "home0", tmp_path / "home1"]
    for home in homes:
        home.mkdir()
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    command = [sys.executable, "-m", "catdog.cli", "train", "--distributed", "--preset", "tiny", "--data", archive,
               f"runs_dir={tmp_path / 'runs'}", "name=two", "epochs=1"]
    procs = []
    for i, home in enumerate(homes):
        other = homes[1 - i]
        hide = f'mount -t tmpfs none "{other}" && exec "$@"'
        env = {**os.environ, "TF_CONFIG": worker_config(hosts, i), "CATDOG_HOME": str(home)}
        procs.append(subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh",
                                       *map(str, command)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs[1][1][-2000:] + outs[0][1][-2000:]
    assert not any("unreadable" in err for _, err in outs)  # every picture was there, on both machines
    run_dir = tmp_path / "runs" / "two"
    assert not list(run_dir.glob("unreadable*.json"))
    for home in homes:  # each machine unpacked the zip itself
        assert len(list((home / "prepared").glob("*/images/train/*.jpg"))) == 80
    evaluated = catdog("evaluate", run_dir, env={**os.environ, "CATDOG_HOME": str(homes[0])})
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((run_dir / "metrics_test.json").read_text())["unreadable"] == 0


@pytest.mark.parametrize("text, hosts", [
    ("node1", ["node1"]),
    ("node[01-03,07],login1", ["node01", "node02", "node03", "node07", "login1"]),
    ("rack[1-2]-n[8-9]", ["rack1-n8", "rack1-n9", "rack2-n8", "rack2-n9"]),
    ("gpu[9-11]", ["gpu9", "gpu10", "gpu11"]),
])
def test_slurm_host_lists_expand(text, hosts):
    assert expand_hostlist(text) == hosts


def test_slurm_tasks_become_tf_config_node_by_node():
    assert tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    env = {"SLURM_PROCID": "3", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
           "CATDOG_PORT": "3000"}
    assert worker_from_env(env) == Worker(3, 4)
    from catdog.training.clusters import tf_config

    spec = json.loads(tf_config(env))
    assert spec == {"cluster": {"worker": ["n1:3000", "n1:3001", "n2:3000", "n2:3001"]},
                    "task": {"type": "worker", "index": 3}}
    assert json.loads(tf_config({**env, "TF_CONFIG": worker_config(["a:1"], 0)}))["cluster"] == {"worker": ["a:1"]}
    with pytest.raises(ConfigError, match="SLURM_PROCID=9"):
        tf_config({**env, "SLURM_PROCID": "9"})


def test_two_slurm_tasks_train_without_tf_config(tmp_path, tree):
    """srun's variables for two tasks on one node, faked on 127.0.0.1: the workers find each other."""
    base = next(port for port in free_ports(8) if free_ports_around(port))
    slurm = {"SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_STEP_TASKS_PER_NODE": "2", "CATDOG_PORT": str(base)}
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    command = [sys.executable, "-m", "catdog.cli", "train", "--distributed", "--preset", "tiny", "--data", tree,
               f"runs_dir={tmp_path / 'runs'}", "name=slurm", "epochs=1"]
    procs = [subprocess.Popen(list(map(str, command)), env={**env, **slurm, "SLURM_PROCID": str(i)}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    state = json.loads((tmp_path / "runs" / "slurm" / "state.json").read_text())
    assert state["workers"] == 2 and state["status"] == "finished"


def free_ports_around(port: int) -> bool:
    """Whether `port` and the next one are both free on 127.0.0.1 (task k listens on CATDOG_PORT + k)."""
    import socket

    with socket.socket() as first, socket.socket() as second:
        try:
            first.bind(("127.0.0.1", port))
            second.bind(("127.0.0.1", port + 1))
        except OSError:
            return False
    return True
