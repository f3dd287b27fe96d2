"""catdog audit on synthetic trees with one planted problem of every kind.

Cats are horizontal stripes and dogs vertical ones (`conftest.synthetic_image`). The planted
problems are found by a stand-in for the ImageNet view that sees stripes the way ImageNet sees
pets (`StripeView`), so each check is tested for what it must find; the real view runs in the
tests at the end (the shipped model on Keras and on LiteRT, through the CLI, and on real photos).
"""

import csv
import io
import json
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import KAGGLE_ZIP, require_data, smooth_photo, synthetic_image
from PIL import Image

from catdog.audit import audit as audit_module
from catdog.audit import checks, label_errors, pairs, scan
from catdog.audit.audit import audit, write_exclusions, write_relabels, write_rows
from catdog.data import prepare
from catdog.data.quality import pixel_stats, problem
from catdog.models.pet_classes import CAT_CLASSES, DOG_CLASSES


class StripeView:
    """Sees what `imagenet_view` would if ImageNet's cats were horizontal stripes and its dogs vertical:
    in each of 3 x 3 windows, strong stripes give cat or dog logits, anything else a tench."""

    image_size = 224
    key = "stripes-v1"

    def __init__(self):
        self.projection = np.random.default_rng(0).normal(size=(3 * 32 * 32, 64)).astype(np.float32)
        self.calls = 0

    @staticmethod
    def _stripes(pixels: np.ndarray) -> tuple[float, float]:
        """How much the picture changes down its columns and along its rows (the strongest colour channel)."""
        return tuple(float(np.abs(np.diff(pixels, axis=axis)).mean(axis=(0, 1)).max()) for axis in (0, 1))

    def _logits(self, pixels: np.ndarray) -> np.ndarray:
        across, down = self._stripes(pixels)
        logits = np.full(1000, -4.0, np.float32)  # every class unlikely, as a classifier's unrelated classes are
        if max(across, down) < 1.5 * min(across, down) + 0.5:
            logits[0] = 4.0  # not striped one way: a tench
        else:
            # As many dog classes as cat ones, so that a picture of both is not all dog by number.
            classes = CAT_CLASSES if across > down else DOG_CLASSES[:5]
            logits[list(classes)] = 12.0 * abs(across - down) / (across + down)
        return logits

    def run(self, pixels: np.ndarray) -> dict:
        self.calls += 1
        pixels = np.asarray(pixels, np.float32)
        small = np.stack([np.asarray(Image.fromarray(p.astype(np.uint8)).resize((32, 32)), np.float32) for p in pixels])
        pattern = (small - small.mean(axis=(1, 2), keepdims=True)).reshape(len(pixels), -1) / 255  # not the colours
        windows = [(r, c) for r in (0, 64, 128) for c in (0, 64, 128)]
        # Like ImageNet features, linear in what tells the classes apart (here the stripes' direction),
        # and different for every picture (the pattern itself).
        direction = np.array([[np.log1p(a) - np.log1p(d) for a, d in map(self._stripes, p[None])] for p in pixels])
        regions = np.stack([[self._logits(p[r:r + 96, c:c + 96]) for r, c in windows] for p in pixels])
        # The whole picture's answer: what its parts see, on average.
        parts = np.exp(regions - regions.max(axis=2, keepdims=True))
        whole = np.log((parts / parts.sum(axis=2, keepdims=True)).mean(axis=1))
        # The fine-tuned classifier on each window: the stripes' direction alone, no breed to confuse it.
        tuned = np.array([[8 * (d - a) / (a + d + 1e-9) for a, d in (self._stripes(p[r:r + 96, c:c + 96])
                                                                    for r, c in windows)] for p in pixels])
        return dict(features=np.concatenate([8 * np.repeat(direction, 4, axis=1), pattern @ self.projection], axis=1),
                    imagenet_logits=whole, region_logits=regions, tuned_region_logits=tuned)


def _two_halves(rng) -> Image.Image:
    """A cat on the left, a dog on the right: horizontal stripes beside vertical ones."""
    left, right = (np.asarray(synthetic_image(label, rng, size=112)) for label in (0, 1))
    return Image.fromarray(np.concatenate([left, right], axis=1)[:112])


def _near_copy_in_another_split(train, rng) -> tuple[str, str]:
    """(original, copy): a copy of a dog, recompressed, that `prepare`'s split puts in another split."""
    splits = {r["path"]: r["split"] for r in csv.DictReader(open(prepare.prepare(train.parent) / "manifest.csv"))}
    for i in range(40):
        original = f"train/dog.{i}.jpg"
        Image.open(train.parent / original).save(train / "dog.950.jpg", quality=85)
        work = prepare.prepare(train.parent)
        copy = {r["path"]: r["split"] for r in csv.DictReader(open(work / "manifest.csv"))}
        if copy["train/dog.950.jpg"] != splits[original]:
            return original, "train/dog.950.jpg"
    raise AssertionError("no near copy landed in another split")


def _clean(label: int, rng) -> Image.Image:
    """A striped picture (`synthetic_image`) with no quality problem of its own (some colour pairs are too
    alike in brightness, and would be flagged as blank)."""
    while True:
        picture = synthetic_image(label, rng, size=80)
        if problem(pixel_stats(np.asarray(picture.resize((224, 224), Image.Resampling.BILINEAR)))) is None:
            return picture


@pytest.fixture
def planted(tmp_path):
    """A Kaggle-style tree of 40 cats and 40 dogs (80 px) with one planted problem of each kind."""
    rng = np.random.default_rng(7)
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    for label, name in enumerate(("cat", "dog")):
        for i in range(40):
            _clean(label, rng).save(train / f"{name}.{i}.jpg", quality=95)
    _clean(1, rng).save(train / "cat.900.jpg", quality=95)  # a dog labelled cat
    shutil.copy(train / "cat.3.jpg", train / "dog.901.jpg")  # the same picture under both labels
    shutil.copy(train / "dog.5.jpg", train / "dog.902.jpg")  # a plain copy
    Image.fromarray(smooth_photo(1, 80)).save(train / "cat.903.jpg")  # no stripes at all: neither
    _two_halves(rng).save(train / "dog.904.jpg")  # a cat and a dog
    Image.new("RGB", (80, 80), (90, 90, 90)).save(train / "cat.905.png")  # blank: nothing in it, no pet either
    dark = np.asarray(_clean(0, rng), np.float32) * 0.08  # a cat in the dark: still a cat
    Image.fromarray(dark.astype(np.uint8)).save(train / "cat.907.png")
    (train / "dog.906.jpg").write_bytes(b"not a picture")
    planted = dict(leak=_near_copy_in_another_split(train, rng)[1], label_error="train/cat.900.jpg",
                   conflict="train/dog.901.jpg", duplicate="train/dog.902.jpg",
                   neither="train/cat.903.jpg", both="train/dog.904.jpg", low_quality="train/cat.907.png",
                   unreadable="train/dog.906.jpg")
    return tmp_path / "data", planted


@pytest.fixture
def stripe_view(monkeypatch):
    view = StripeView()
    monkeypatch.setattr(audit_module, "load_view", lambda *args, **kwargs: view)
    # The threshold is set for ImageNet's features; on these stand-ins stripes of one direction are alike
    # up to 0.99 (a recompressed copy is found by its perceptual hash).
    monkeypatch.setattr(pairs, "FEATURE_SIMILARITY", 0.995)
    return view


def test_every_planted_problem_is_found_and_ranked_above_the_clean_pictures(planted, stripe_view):
    data, expected = planted
    result = audit(data)
    rows = {row["path"]: row for row in result.rows}
    for issue, path in expected.items():
        assert path in rows and issue in rows[path]["issues"], (issue, rows.get(path))
    assert rows["train/dog.901.jpg"]["neighbour"] == "train/cat.3.jpg"  # a conflict names both pictures
    assert "conflict" in rows["train/cat.3.jpg"]["issues"]
    assert rows[expected["leak"]]["neighbour"] in {"train/dog.0.jpg"} | {f"train/dog.{i}.jpg" for i in range(40)}
    assert {"neither", "low_quality"} <= set(rows["train/cat.905.png"]["issues"])  # the blank page
    planted_paths = set(expected.values()) | {"train/cat.3.jpg", "train/cat.905.png"}
    # Every planted problem ranks above any other flagged picture (there should be none but the copies' originals).
    order = [row["path"] for row in result.rows]
    planted_paths |= {rows[expected["leak"]]["neighbour"], rows[expected["duplicate"]]["neighbour"]}
    others = [at for at, path in enumerate(order) if path not in planted_paths]
    assert others == [] or min(others) > max(order.index(path) for path in set(expected.values())), order
    assert [row["score"] for row in result.rows] == sorted((row["score"] for row in result.rows), reverse=True)
    for row in result.rows:
        assert 0 < row["score"] <= 1 and row["reason"] and "\n" not in row["reason"]


def test_no_leak_where_prepare_keeps_near_duplicates_in_one_split(planted, stripe_view):
    data, expected = planted
    rows = {row["path"]: row for row in audit(data, near_duplicate_bits=6).rows}
    assert "leak" not in rows[expected["leak"]]["issues"] and "duplicate" in rows[expected["leak"]]["issues"]


def test_rows_as_csv_and_json_lines_and_the_exclusion_list_prepare_reads(planted, stripe_view, tmp_path):
    data, expected = planted
    result = audit(data)
    text = io.StringIO()
    write_rows(result.rows, text, "csv")
    table = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert list(table[0])[:5] == ["path", "label", "issue", "score", "reason"]
    assert [r["path"] for r in table] == [r["path"] for r in result.rows]
    assert "conflict" in table[[r["path"] for r in table].index(expected["conflict"])]["issues"].split(";")
    lines = io.StringIO()
    write_rows(result.rows, lines)
    assert [json.loads(line)["path"] for line in lines.getvalue().splitlines()] == [r["path"] for r in result.rows]
    listed = tmp_path / "exclude.csv"
    count = write_exclusions(result.rows, listed)
    work = prepare.prepare(data, exclude=listed)
    kept = {r["path"] for r in csv.DictReader(open(work / "manifest.csv"))}
    assert count >= 7 and not kept & {expected[i] for i in ("neither", "label_error", "duplicate", "leak")}
    assert expected["low_quality"] in kept  # a poor picture of a cat is still a cat: not excluded by default
    assert expected["both"] in kept  # "both" is too often a single cat to leave out without a look
    relabel = tmp_path / "relabel.csv"
    changed = write_relabels(result.rows, relabel)
    assert expected["label_error"] in changed
    write_exclusions(result.rows, listed, keep=changed)  # what is relabelled is not also left out
    work = prepare.prepare(data, exclude=listed, relabel=relabel)
    labels = {r["path"]: r["label"] for r in csv.DictReader(open(work / "manifest.csv"))}
    assert labels[expected["label_error"]] == "dog"


def test_a_rerun_reads_every_picture_again_but_decodes_only_the_new_one(planted, stripe_view, monkeypatch):
    data, expected = planted
    first = audit(data)
    calls = stripe_view.calls
    synthetic_image(0, np.random.default_rng(99), size=80).save(data / "train" / "cat.950.jpg")
    decoded = []
    real_load = scan.load_image
    monkeypatch.setattr(scan, "load_image", lambda path, **kw: decoded.append(path) or real_load(path, **kw))
    again = audit(data)
    assert [p for p in decoded if not p.endswith("dog.906.jpg")] == [str(data / "train" / "cat.950.jpg")]
    assert stripe_view.calls == calls + 1  # one batch, of the new picture alone
    # What was seen is reused: the same problems are found again. Scores may move a little ("neither"
    # ranks by how unusual a picture is in the set), and label errors come from a model refitted on the
    # new set (on 90 pictures, one more moves its folds enough to lose or find a borderline one).
    def found(rows):
        return {(r["path"], r["issue"]) for r in rows
                if r["issue"] != "label_error" and r["path"] != "train/cat.950.jpg"}
    assert found(again.rows) == found(first.rows) and len(found(first.rows)) >= 8


def _looks(logits: np.ndarray, regions: np.ndarray, tuned: np.ndarray | None = None) -> scan.Looks:
    n = len(logits)
    tuned = np.zeros((n, 9)) if tuned is None else tuned
    return scan.Looks(digests=["x"] * n, errors=[None] * n, features=np.zeros((n, 4), np.float16),
                      logits=logits.astype(np.float16), regions=regions.astype(np.float16),
                      tuned=tuned.astype(np.float16), phash=np.zeros(n, np.uint64), stats=np.zeros((n, 4), np.float32))


def test_neither_ranks_the_unusual_pictures_first():
    logits = np.zeros((3, 1000), np.float32)
    logits[:, 0] = 9.0  # a tench, no pet: all three are "neither" to ImageNet
    looks, readable = _looks(logits, np.zeros((3, 9, 2))), np.ones(3, bool)
    flags = {f.index: f for f in checks.neither(looks, readable, unusual=np.array([0.5, 1.0, 0.99]))}
    assert flags[1].score > flags[2].score > flags[0].score > 0
    assert flags[1].score > 0.9 and flags[0].score < 0.3  # an ordinary-looking one ranks below duplicates (0.5)
    assert "more unusual than 99.0% of the pictures" in flags[2].reason
    # Some pet mass (a drawing of a cat, pebbles): "neither" only among the most unusual.
    looks = _looks(logits, np.full((3, 9, 2), 0.15))  # 30% cat and dog in every part
    flags = checks.neither(looks, readable, unusual=np.array([0.5, 0.999, 0.99]))
    assert [f.index for f in flags] == [1] and flags[0].reason.startswith("little of a cat or dog seen")


def test_both_needs_a_cat_part_and_a_dog_part_and_a_classifier_unsure_of_the_label():
    logits = np.full((4, 1000), -5.0, np.float32)
    logits[:, list(DOG_CLASSES)[:5]] = 5.0  # ImageNet: dog, as it says of many fluffy cats
    regions = np.zeros((4, 9, 2))
    regions[:, :, 1] = 0.9  # a pet in every window...
    regions[3, 8] = 0.1  # ...but the last window of #3, where ImageNet sees none
    tuned = np.full((4, 9), -6.0)  # the fine-tuned classifier: cat everywhere...
    tuned[1:, 7:] = 6.0  # ...but a dog in the last two windows of #1, #2 and #3
    looks, readable = _looks(logits, regions, tuned), np.ones(4, bool)
    flagged = checks.both(looks, readable, confidence=np.array([0.6, 0.6, 0.99, 0.6]))
    # #0 a single cat, #2 a cat and a dog the classifier is sure of, #3 a "dog" part with no pet in it
    assert [f.index for f in flagged] == [1] and 0.6 < flagged[0].score < 0.7  # with the weak checks
    assert "parts of the picture 100% cat, others 100% dog" in flagged[0].reason
    tuned[1, 8] = -6.0  # one dog window is not enough: a part of one animal can look like the other
    assert checks.both(_looks(logits, regions, tuned), readable, confidence=np.array([0.6, 0.6, 0.99, 0.6])) == []


def test_a_label_error_imagenet_does_not_see_ranks_lower():
    labels = ["cat"] * 10 + ["dog"] * 10 + ["cat", "cat"]
    p_dog = np.array([0.05] * 10 + [0.95] * 10 + [0.99, 0.99])  # the last two look like dogs to the features
    logits = np.zeros((22, 1000), np.float32)
    logits[[*range(10, 20), 20], list(DOG_CLASSES)[0]] = 9.0  # ImageNet sees a dog in the dogs and in #20,
    logits[[*range(10), 21], list(CAT_CLASSES)[0]] = 9.0  # and a cat in the cats and in #21
    looks = _looks(logits, np.zeros((22, 9, 2)))
    flags = {f.index: f for f in audit_module._label_flags(p_dog, labels, np.ones(22, bool), looks)}
    assert set(flags) == {20, 21}
    assert flags[20].score == pytest.approx(0.99) and flags[21].score == pytest.approx(0.99 * audit_module.DISAGREED)
    assert "ImageNet: dog 9" in flags[20].reason


def test_confident_learning_flags_the_flipped_labels_and_few_others():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    features = rng.normal(size=(400, 16)) + labels[:, None] * 1.5
    flipped = np.array([3, 50, 260, 399])
    given = labels.copy()
    given[flipped] = 1 - given[flipped]
    p_one = label_errors.out_of_sample(features, given, np.arange(400))
    found = [index for index, _, _ in label_errors.label_issues(p_one, given)]
    assert set(flipped) <= set(found[:10]) and len(found) < 20


def test_near_duplicates_share_a_fold():
    """A mislabelled picture must not be vouched for by its own copies in other folds."""
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 1], [100, 100, 12])  # 12 copies of one cat-like picture, all labelled 1
    features = rng.normal(size=(212, 64))
    features[:200, 0] += np.where(labels[:200] == 1, 2.0, -2.0)
    features[200:] = features[0] + rng.normal(0, 0.05, (12, 64))  # in 64 dimensions, a place of their own
    groups = np.concatenate([np.arange(200), np.full(12, 200)])
    together = label_errors.out_of_sample(features, labels, groups)[200:]
    apart = label_errors.out_of_sample(features, labels, np.arange(212))[200:]
    assert together.max() < 0.5 < apart.min()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "catdog.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_the_command_with_the_shipped_model(planted, tmp_path, catdog_home):
    """End to end through a subprocess, with the real view (Keras: no conversion): CSV on stdout,
    the report and the exclusion list written, nothing on stderr with --quiet."""
    data, expected = planted
    import os

    env = {**os.environ, "CATDOG_HOME": str(catdog_home)}
    done = _cli("audit", data, "--runtime", "keras", "--format", "csv", "--report", tmp_path / "report",
                "--exclude-out", tmp_path / "exclude.csv", "--quiet", env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    found = {r["path"]: r["issues"].split(";") for r in rows}
    for issue in ("conflict", "duplicate", "unreadable", "low_quality"):
        assert issue in found[expected[issue]], (issue, found.get(expected[issue]))
    page = (tmp_path / "report" / "audit.html").read_text()
    start = page.index('<h2 id="conflict">')
    conflict = page[start:page.index("<h2", start + 1)]
    assert conflict.count("data:image/jpeg;base64,") == 4  # each of the two pictures beside the other
    assert page.count("class=item") == sum(min(60, n) for n in Counter(r["issue"] for r in rows).values())
    for issue, n in Counter(r["issue"] for r in rows).items():  # a card counts what its section shows
        assert f"<b>{n:,}</b><span>{issue}" in page and f'<h2 id="{issue}">{issue}: {n}' in page
    assert (tmp_path / "exclude.csv").read_text().startswith("path,sha256,issue,score,reason")
    # The slower label check through the CLI: the looks come from the cache, the top blocks are trained.
    tuned = _cli("audit", data, "--runtime", "keras", "--format", "csv", "--fine-tune", "--quiet", "--report",
                 tmp_path / "tuned", env=env)
    assert tuned.returncode == 0 and tuned.stderr == "", tuned.stderr
    assert "label errors from the top blocks fine-tuned" in (tmp_path / "tuned" / "audit.html").read_text()
    assert "label errors from the top blocks fine-tuned" not in page
    tuned_rows = {r["path"]: r["issues"].split(";") for r in csv.DictReader(io.StringIO(tuned.stdout))}
    for issue in ("conflict", "duplicate", "unreadable", "low_quality"):
        assert issue in tuned_rows[expected[issue]], (issue, tuned_rows.get(expected[issue]))
    assert list((catdog_home / "audit").glob("*/maps-*.f16"))
    refused = _cli("audit", tmp_path / "missing.zip", env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "missing.zip" in refused.stderr


def test_the_litert_view_answers_as_the_keras_one(catdog_home):
    from catdog.audit.view import audit_home, load_view

    pixels = np.stack([smooth_photo(seed, 224) for seed in range(4)])
    converted, keras_view = load_view(None, "auto"), load_view(None, "keras")
    assert converted.key == keras_view.key and (audit_home() / f"{converted.key}.tflite").exists()
    a, b = converted.run(pixels), keras_view.run(pixels)
    for name in ("features", "imagenet_logits", "region_logits", "tuned_region_logits"):
        assert a[name].shape == b[name].shape
        np.testing.assert_allclose(a[name], b[name], atol=0.25)


@pytest.mark.slow
def test_a_real_dog_labelled_cat_and_a_blank_among_real_photos(tmp_path):
    """500 of Kaggle's photos, with a dog renamed cat and a grey page planted: both near the top."""
    require_data(KAGGLE_ZIP.exists(), f"{KAGGLE_ZIP} not found")
    import zipfile

    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    with zipfile.ZipFile(KAGGLE_ZIP) as archive:
        names = [n for n in archive.namelist() if n.endswith(".jpg")]
        chosen = [n for n in names if "/cat." in n][:250] + [n for n in names if "/dog." in n][:250]
        for name in chosen:
            (train / name.rsplit("/", 1)[1]).write_bytes(archive.read(name))
    shutil.move(train / chosen[-1].rsplit("/", 1)[1], train / "cat.999999.jpg")
    Image.new("RGB", (300, 200), (128, 128, 128)).save(train / "dog.999999.png")
    result = audit(tmp_path / "data", runtime="keras")
    rows = result.rows
    # The fine-tuned classifier's windows: a cat's are mostly cat, a dog's mostly dog.
    labels = np.array(["/dog." in f"/{path.rsplit('/', 1)[-1]}" for path in result.paths])
    readable = np.array([error is None for error in result.looks.errors])
    says_dog = np.median(result.looks.tuned.astype(np.float32), axis=1) > 0
    assert np.mean(says_dog[readable] == labels[readable]) > 0.95
    top = {row["path"]: row["issues"] for row in rows[:25]}
    assert "label_error" in top.get("train/cat.999999.jpg", []), rows[:25]
    assert {"neither", "low_quality"} <= set(top.get("train/dog.999999.png", []))
    assert sum("neither" in row["issues"] for row in rows) < 25  # of 500 photos of cats and dogs
    # The slower check: the top blocks fine-tuned on each fold (the looks are cached: only they run).
    tuned = audit(tmp_path / "data", runtime="keras", fine_tune=True)
    assert tuned.seconds["fine_tune"] > 0
    top = {row["path"]: row["issues"] for row in tuned.rows[:25]}
    assert "label_error" in top.get("train/cat.999999.jpg", []), tuned.rows[:25]
    assert sum("label_error" in row["issues"] for row in tuned.rows) < 15


def _toy_blocks(channels: int = 8):
    """A stand-in for the ImageNet top blocks: a convolution, BatchNorm and the pooling."""
    import keras

    keras.utils.set_random_seed(0)
    maps = keras.Input((4, 4, channels))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 1, activation="relu")(maps))
    return keras.Model(maps, keras.layers.GlobalAveragePooling2D()(x))


def test_fine_tuned_blocks_flag_the_flipped_labels_and_start_each_fold_from_the_same_weights(tmp_path):
    from catdog.audit import fine_tuned
    from catdog.data.rows import RowsFile

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 120)
    values = rng.normal(size=(240, 4, 4, 8)).astype(np.float16)
    values[..., 0] += np.where(labels == 1, 2.0, -2.0)[:, None, None]  # what tells the classes apart
    maps = RowsFile(tmp_path / "maps.f16", (4, 4, 8), np.float16, 240, create=True)
    maps.write(0, values)
    flipped = np.array([4, 70, 150, 233])
    given = labels.copy()
    given[flipped] = 1 - given[flipped]
    readable = np.ones(240, bool)
    readable[7] = False  # an unreadable picture is never judged
    blocks = _toy_blocks()
    before = [w.copy() for w in blocks.get_weights()]
    p_one = fine_tuned.out_of_sample(maps, blocks, given, readable, np.arange(240), epochs=2)
    assert p_one[7] == 0.5
    found = [index for index, _, _ in label_errors.label_issues(p_one[readable], given[readable])]
    found = np.flatnonzero(readable)[found]
    assert set(flipped) <= set(found[:8]) and len(found) < 16
    for a, b in zip(before, blocks.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_trunk_maps_are_the_bottoms_on_litert_and_made_once(tmp_path, monkeypatch):
    import keras

    from catdog.audit import fine_tuned
    from catdog.data.images import load_image

    pixels = keras.Input((None, None, 3))
    resized = keras.layers.Rescaling(1 / 255)(keras.layers.Resizing(32, 32)(pixels))
    bottom = keras.Model(pixels, keras.layers.Conv2D(8, 3, strides=8)(resized))
    files = []
    for i in range(5):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(smooth_photo(i, 48)).save(files[-1])
    digests = ["a", "b", "", "d", "e"]  # the third is unreadable
    maps = fine_tuned.trunk_maps([str(f) for f in files], digests, bottom, 32, tmp_path / "cache", batch_size=2)
    expected = bottom.predict(np.stack([load_image(f, size=32) for f in files]).astype(np.float32), verbose=0)
    got = maps.read(range(5)).astype(np.float32)
    np.testing.assert_allclose(got[[0, 1, 3, 4]], expected[[0, 1, 3, 4]], atol=0.02)
    assert not got[2].any()
    monkeypatch.setattr(fine_tuned, "_litert", lambda *args: pytest.fail("converted again"))
    again = fine_tuned.trunk_maps([str(f) for f in files], digests, bottom, 32, tmp_path / "cache")
    np.testing.assert_array_equal(again.read(range(5)), maps.read(range(5)))
    on_keras = fine_tuned.trunk_maps([str(f) for f in files], digests, bottom, 32, tmp_path / "keras", runtime="keras")
    np.testing.assert_allclose(on_keras.read(range(5)).astype(np.float32), got, atol=0.02)
