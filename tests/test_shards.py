"""TFRecord shards of a prepared split (`catdog prepare --shards`, `train shards=`): written in the
manifest's order, read back as the pictures they hold, shuffled in bounded memory, dealt to workers
by file, refused when they are not the run's split."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_kaggle_tree
from PIL import Image

from catdog import config
from catdog.config import ConfigError
from catdog.data import prepare as data
from catdog.data import shards
from catdog.data.images import load_image
from catdog.data.pipeline import make_dataset
from catdog.errors import DataError

SIZE = 32


@pytest.fixture
def written(kaggle_tree, tmp_path):
    """(work folder, shards folder, {split: examples}) of a 40 + 40 picture tree, 10 pictures a shard."""
    work = data.prepare(kaggle_tree)
    root = data.read_report(work)["root"]
    out = str(tmp_path / "shards")
    shards.write(work, out, SIZE, per_shard=10)
    return work, out, {s: data.load_split(work / "manifest.csv", root, s) for s in data.SPLITS}


def pictures(ds) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(ds.as_numpy_iterator())
    return np.stack([x for x, _ in pairs]), np.array([y for _, y in pairs])


def test_shards_hold_every_picture_of_each_split_in_the_manifests_order(written):
    _, out, splits = written
    for split, examples in splits.items():
        shard_set = shards.ShardSet.locate(out, examples)
        assert len(shard_set) == len(examples)
        pixels, labels = pictures(shard_set.in_order())
        np.testing.assert_array_equal(labels, [e.label for e in examples])
        # The project's loader, then JPEG at quality 95 4:4:4: the same picture, within JPEG's loss.
        loaded = np.stack([load_image(e.path, size=SIZE) for e in examples]).astype(int)
        assert np.abs(pixels.astype(int) - loaded).mean() < 12  # noisy 32 px pictures; ~1 on photos at 224


def test_tfs_decoder_reads_the_bytes_as_pillow_does(written):
    _, out, splits = written
    record = next(iter(tf.data.TFRecordDataset([f"{out}/train-00000-of-00007.tfrecord"])))
    jpeg = tf.io.parse_single_example(record, {"image": tf.io.FixedLenFeature([], tf.string)})["image"].numpy()
    pixels, _ = next(shards.ShardSet.locate(out, splits["train"]).in_order().as_numpy_iterator())
    np.testing.assert_allclose(pixels, np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), atol=1)


def test_a_shuffled_pass_holds_each_picture_once_in_an_order_drawn_from_the_seed(written):
    _, out, splits = written
    shard_set = shards.ShardSet.locate(out, splits["train"])
    in_order, _ = pictures(shard_set.in_order())
    first, again, other = (pictures(shard_set.shuffled(seed, reshuffle=False))[0] for seed in (1, 1, 2))
    key = lambda px: sorted(p.tobytes() for p in px)  # noqa: E731
    assert key(first) == key(in_order)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, in_order)


def test_training_from_shards_resumes_an_epoch_where_it_was(written):
    _, out, splits = written
    cfg = config.resolve("tiny", ["max_images=0", f"shards={out}", "batch_size=8", "cache=none", "augment=false"])
    whole = [y for _, y in make_dataset(splits["train"], cfg, training=True, epochs=(0, 3)).as_numpy_iterator()]
    resumed = [y for _, y in make_dataset(splits["train"], cfg, training=True, epochs=(2, 3)).as_numpy_iterator()]
    steps = len(splits["train"]) // 8
    assert len(whole) == 3 * steps and all(len(y) == 8 for y in whole)
    np.testing.assert_array_equal(np.concatenate(whole[2 * steps:]), np.concatenate(resumed))
    assert not np.array_equal(np.concatenate(whole[:steps]), np.concatenate(whole[steps:2 * steps]))


def test_workers_share_the_files_in_turn_and_each_reads_only_its_own(written):
    _, out, splits = written
    train = splits["train"]
    shares = [shards.share(out, train, worker, 3) for worker in range(3)]
    assert sorted(str(e.path) for s in shares for e in s) == sorted(str(e.path) for e in train)
    files = [shards.ShardSet.locate(out, s).files for s in shares]
    assert [len(f) for f in files] == [3, 2, 2]  # 7 files: 0 3 6 / 1 4 / 2 5
    assert files[1] == (f"{out}/train-00001-of-00007.tfrecord", f"{out}/train-00004-of-00007.tfrecord")
    _, labels = pictures(shards.ShardSet.locate(out, shares[1]).in_order())
    np.testing.assert_array_equal(labels, [e.label for e in shares[1]])


def test_shards_of_another_split_size_or_sample_are_refused(written, kaggle_tree, tmp_path):
    work, out, splits = written
    assert shards.check(out, work, SIZE)["image_size"] == SIZE
    with pytest.raises(DataError, match="--image-size 64"):
        shards.check(out, work, 64)
    other = data.prepare(kaggle_tree, val_fraction=0.2)
    with pytest.raises(DataError, match="its train split is not the manifest's"):
        shards.check(out, other, SIZE)
    with pytest.raises(ConfigError, match="shard-size"):
        shards.write(work, out, SIZE, per_shard=0)
    with pytest.raises(ConfigError, match="image_size"):
        shards.write(work, out, 8)
    with pytest.raises(DataError, match="max_images=0"):
        shards.ShardSet.locate(out, splits["train"][::2])  # a sample, as max_images takes
    with pytest.raises(ConfigError, match="max_images"):
        config.resolve("tiny", [f"shards={out}"])  # tiny samples 32 pictures a split
    with pytest.raises(DataError, match="catdog prepare --shards"):
        shards.ShardSet.locate(str(out) + "-missing", splits["train"])
    other_pictures = write_kaggle_tree(tmp_path / "other", per_class=40, seed=1)
    with pytest.raises(DataError, match="made from other pictures"):
        shards.check(out, data.prepare(other_pictures), SIZE)


def test_a_shard_cut_short_or_missing_is_named_before_training(written):
    work, out, _ = written
    shard = f"{out}/train-00003-of-00007.tfrecord"
    with open(shard, "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="train-00003-of-00007.tfrecord: 100 bytes, shards.json says"):
        shards.check(out, work, SIZE)
    os.remove(shard)
    with pytest.raises(DataError, match="train-00003-of-00007.tfrecord: missing"):
        shards.check(out, work, SIZE)


def test_shards_go_to_any_filesystem_tensorflow_writes(kaggle_tree):
    """ram:// stands in for gs:// or s3://: nothing in reading or writing assumes a local path."""
    work = data.prepare(kaggle_tree)
    out = "ram://catdog-shards"
    shards.write(work, out, SIZE, per_shard=16)
    examples = data.load_split(work / "manifest.csv", data.read_report(work)["root"], "val")
    _, labels = pictures(shards.ShardSet.locate(out, examples).in_order())
    np.testing.assert_array_equal(labels, [e.label for e in examples])


def test_prepare_writes_shards_and_train_reads_them(tmp_path, kaggle_tree):
    def catdog(*args):
        out = subprocess.run([sys.executable, "-m", "catdog.cli", *map(str, args)], capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr
        return out

    folder = tmp_path / "shards"
    out = catdog("prepare", "--data", kaggle_tree, "--shards", folder, "--image-size", SIZE, "--shard-size", 16)
    assert "80 pictures at 32 px in 6 shards" in out.stdout  # 64 train in 4, 8 val, 8 test
    index = json.loads((folder / shards.INDEX).read_text())
    assert [f["count"] for f in index["splits"]["train"]["files"]] == [16, 16, 16, 16]
    run_dir = tmp_path / "runs" / "sharded"
    catdog("train", "--preset", "tiny", "--data", kaggle_tree, f"shards={folder}", "max_images=0",
           f"runs_dir={run_dir.parent}", "name=sharded")
    assert json.loads((run_dir / "config.json").read_text())["shards"] == str(folder)
    assert json.loads((run_dir / "state.json").read_text())["status"] == "finished"


def test_two_workers_train_from_shards_and_neither_unpacks_the_pictures(tmp_path, kaggle_tree):
    """Two workers with their own CATDOG_HOME read the shards on a shared path, file by file:
    the one that is not the chief never opens the source; the chief prepares the split (and
    calibrates on the validation pictures at the end)."""
    from catdog.training.clusters import worker_config
    from catdog.training.launch import free_ports

    work = data.prepare(kaggle_tree)
    folder = str(tmp_path / "shards")
    shards.write(work, folder, SIZE, per_shard=16)  # 4 training files: 2 a worker
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    homes = [tmp_path / "home0", tmp_path / "home1"]
    command = [sys.executable, "-m", "catdog.cli", "train", "--distributed", "--preset", "tiny", "--data", kaggle_tree,
               f"shards={folder}", "max_images=0", f"runs_dir={tmp_path / 'runs'}", "name=two", "epochs=1"]
    procs = [subprocess.Popen(list(map(str, command)), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "TF_CONFIG": worker_config(hosts, i), "CATDOG_HOME": str(home)})
             for i, home in enumerate(homes)]
    outs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs[1][1][-2000:] + outs[0][1][-2000:]
    assert not (homes[1] / "prepared").exists()  # the second worker read shards, never the pictures
    run_dir = tmp_path / "runs" / "two"
    assert json.loads((run_dir / "state.json").read_text())["status"] == "finished"
    with open(run_dir / "history.csv") as f:
        assert len(f.read().splitlines()) == 2  # the header and the one epoch
