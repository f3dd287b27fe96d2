import numpy as np
import pytest

from catdog import config
from catdog.data import prepare as data
from catdog.data.images import load_image
from catdog.data.pipeline import build_augmentation, make_dataset


@pytest.fixture
def examples(kaggle_tree):
    work = data.prepare(kaggle_tree)
    import json
    root = json.loads((work / "report.json").read_text())["root"]
    return data.load_split(work / "manifest.csv", root, "train")


def test_eval_batches_match_the_eager_loader(examples):
    cfg = config.resolve("tiny", ["batch_size=5"])
    x, y = next(iter(make_dataset(examples, cfg, training=False)))
    assert x.shape == (5, 32, 32, 3) and x.dtype == "float32"
    eager = np.stack([load_image(e.path, size=32) for e in examples[:5]]).astype(np.float32)
    np.testing.assert_array_equal(x.numpy(), eager)  # same decode in tf.data as in predict
    np.testing.assert_array_equal(y.numpy(), [e.label for e in examples[:5]])


def test_training_shuffles_each_epoch_and_keeps_every_example(examples):
    cfg = config.resolve("tiny", ["batch_size=100", "augment=false"])
    ds = make_dataset(examples, cfg, training=True)
    first, second = (next(iter(ds))[1].numpy() for _ in range(2))
    assert len(first) == len(examples) and sorted(first) == sorted(e.label for e in examples)
    assert not np.array_equal(first, second)
    assert ds.cardinality().numpy() == 1  # a known length, so progress bars have a total


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_cache_modes_give_the_same_pixels(examples, cache, tmp_path):
    cfg = config.resolve("tiny", [f"cache={cache}", "batch_size=64"])
    ds = make_dataset(examples, cfg, training=False, cache_file=tmp_path / "cache")
    epochs = [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2)]
    np.testing.assert_array_equal(epochs[0], epochs[1])


def test_augmentation_only_in_training(examples):
    cfg = config.resolve("tiny", ["batch_size=8"])
    train_x = next(iter(make_dataset(examples[:8], cfg, training=True)))[0].numpy()
    plain = np.stack([load_image(e.path, size=32) for e in examples[:8]]).astype(np.float32)
    assert not any(np.array_equal(np.sort(train_x.ravel()), np.sort(p.ravel())) for p in [plain])
    augment = build_augmentation(cfg)
    np.testing.assert_array_equal(augment(plain, training=False), plain)
    assert [type(layer).__name__ for layer in augment.layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness"]


def test_a_file_broken_after_prepare_does_not_stop_the_epoch(examples):
    examples[0].path.write_bytes(b"broken since")
    cfg = config.resolve("tiny", ["batch_size=100"])
    with pytest.warns(UserWarning, match="unreadable image"):
        x, _ = next(iter(make_dataset(examples, cfg, training=False)))
    assert x.shape[0] == len(examples) and x[0].numpy().max() == 0


def test_training_batches_are_full(examples):
    cfg = config.resolve("tiny", ["batch_size=10", "augment=false"])
    sizes = [int(x.shape[0]) for x, _ in make_dataset(examples, cfg, training=True)]
    assert sizes == [10] * (len(examples) // 10)
    sizes = [int(x.shape[0]) for x, _ in make_dataset(examples, cfg, training=False)]
    assert sum(sizes) == len(examples)  # evaluation sees every example
