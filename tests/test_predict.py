import itertools
import json
import sys

import numpy as np
import pytest
from conftest import module_workspace, synthetic_image

from catdog import config
from catdog.data.images import load_image
from catdog.inference.model_files import resolve as resolve_model
from catdog.inference.predictor import Predictor, expand_paths, shown_probability
from catdog.training.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    with module_workspace(tmp_path_factory, "predict", per_class=12) as (root, tree):
        return train(config.resolve("tiny", [f"data={tree}", f"runs_dir={root / 'runs'}", "name=p"]))


def test_records_in_order_with_errors_in_place(run_dir, tmp_path):
    rng = np.random.default_rng(0)
    good = [tmp_path / f"{i}.png" for i in range(5)]
    for i, path in enumerate(good):
        synthetic_image(i % 2, rng).save(path)
    (tmp_path / "bad.jpg").write_text("nope")
    paths = [str(good[0]), str(tmp_path / "bad.jpg"), str(tmp_path / "missing.jpg")] + [str(p) for p in good[1:]]
    records = list(Predictor(run_dir, batch_size=2).predict_paths(paths))
    assert [r["path"] for r in records] == paths
    assert "not a recognised image format" in records[1]["error"] and "No such file" in records[2]["error"]
    for record in records[:1] + records[3:]:
        assert set(record) == {"path", "label", "p_dog"} and 0.0 <= record["p_dog"] <= 1.0
        assert record["label"] == ("dog" if record["p_dog"] >= 0.5 else "cat")


def test_batched_equals_one_by_one_and_uses_temperature(run_dir, tmp_path):
    rng = np.random.default_rng(1)
    for i in range(7):
        synthetic_image(i % 2, rng).save(tmp_path / f"{i}.jpg")
    batched = Predictor(run_dir, batch_size=4)
    single = Predictor(run_dir, batch_size=1)
    a = [r["p_dog"] for r in batched.predict_paths([tmp_path])]
    b = [r["p_dog"] for r in single.predict_paths([tmp_path])]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    pixels = np.stack([load_image(tmp_path / f"{i}.jpg", size=batched.image_size) for i in range(7)])
    temperature = json.loads((run_dir / "model.json").read_text())["temperature"]
    expected = 1 / (1 + np.exp(-batched.logits(pixels) / temperature))
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-6)


def test_p_floor_bounds_every_answer(run_dir):
    pixels = np.random.default_rng(3).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    meta = json.loads((run_dir / "model.json").read_text())
    free = Predictor(run_dir, meta={**meta, "p_floor": 0.0}).p_dog(pixels)
    floor = 0.5 - np.max(np.abs(free - 0.5)) / 2  # the surest answer is past it
    bounded = Predictor(run_dir, meta={**meta, "p_floor": floor}).p_dog(pixels)
    np.testing.assert_allclose(bounded, np.clip(free, floor, 1 - floor), rtol=1e-5)


def test_tta_averages_the_mirror(run_dir):
    pixels = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    plain, tta = Predictor(run_dir), Predictor(run_dir, tta=True)
    expected = (plain.logits(pixels) + plain.logits(pixels[:, :, ::-1])) / 2
    np.testing.assert_allclose(tta.logits(pixels), expected, rtol=1e-4, atol=1e-5)


def test_expand_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.PNG", "sub/c.webp", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert expand_paths([tmp_path]) == [str(tmp_path / n) for n in ("a.PNG", "b.jpg", "sub/c.webp")]
    assert expand_paths([str(tmp_path / "*.jpg")]) == [str(tmp_path / "b.jpg")]
    assert expand_paths([str(tmp_path / "**" / "*.webp")]) == [str(tmp_path / "sub/c.webp")]
    assert expand_paths([str(tmp_path / "*.gif"), "nope.jpg"]) == [str(tmp_path / "*.gif"), "nope.jpg"]
    (tmp_path / "empty").mkdir()
    assert expand_paths([tmp_path / "empty"]) == [str(tmp_path / "empty")]  # reported, not dropped


def test_resolve_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder: no model.keras in"):
        resolve_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected a run folder, a .keras or a .tflite file"):
        resolve_model(tmp_path / "missing")
    (tmp_path / "model.keras").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="catdog export .* --format tflite-int8"):
        resolve_model(tmp_path, "tflite-int8")
    assert resolve_model(tmp_path, "auto") == tmp_path / "model.keras"  # no export yet: Keras


@pytest.mark.parametrize("p, shown", [(0.5689779567, 0.568978), (7.49765282545e-08, 7.49765e-08),
                                      (1 - 7.8770123e-08, 1 - 7.877e-08), (0.0, 0.0), (1.0, 1.0)])
def test_confident_probabilities_keep_their_significant_digits(p, shown):
    assert shown_probability(p) == pytest.approx(shown, rel=1e-9, abs=1e-15)
    assert 0.0 < shown_probability(p) < 1.0 or p in (0.0, 1.0)


def test_paths_are_read_as_needed_and_chunks_score_as_paths_do(run_dir, tmp_path):
    rng = np.random.default_rng(4)
    for i in range(5):
        synthetic_image(i % 2, rng).save(tmp_path / f"{i}.png")
    paths = [str(tmp_path / f"{i}.png") for i in range(5)] + [str(tmp_path / "gone.png")]
    predictor = Predictor(run_dir, batch_size=2)
    read = []

    def listing():  # as long as a photo library's
        for k in range(100_000):
            read.append(k)
            yield paths[k % len(paths)]

    first = list(itertools.islice(predictor.score_paths(listing()), 3))
    assert [s.path for s in first] == paths[:3] and len(read) <= 3 * predictor.batch_size
    by_chunk = list(predictor.score_chunks([paths[:2], paths[2:4], paths[4:]]))
    assert [len(c) for c in by_chunk] == [2, 2, 2]
    assert sum(by_chunk, []) == list(predictor.score_paths(paths))


def test_uris_are_expanded_and_read_like_local_files(run_dir, tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    rng = np.random.default_rng(5)
    for name in ("a.png", "b.png"):
        synthetic_image(1, rng).save(tmp_path / name)
    memory.pipe("/uris/a.png", (tmp_path / "a.png").read_bytes())
    memory.pipe("/uris/sub/b.png", (tmp_path / "b.png").read_bytes())
    memory.pipe("/uris/empty.png", b"")
    memory.pipe("/uris/notes.txt", b"not a picture")
    try:
        paths = expand_paths(["memory://uris/", "memory://uris/*.png", "memory://nowhere/c.png"])
        assert paths == ["memory:///uris/a.png", "memory:///uris/empty.png", "memory:///uris/sub/b.png",
                         "memory:///uris/a.png", "memory:///uris/empty.png", "memory://nowhere/c.png"]
        predictor = Predictor(run_dir)
        remote = list(predictor.predict_paths(paths[:3]))
        local = list(predictor.predict_paths([tmp_path / "a.png", tmp_path / "b.png"]))
        assert [r["p_dog"] for r in (remote[0], remote[2])] == [r["p_dog"] for r in local]
        assert remote[1] == {"path": "memory:///uris/empty.png", "error": "memory:///uris/empty.png: empty file (0 bytes)"}
        assert list(predictor.predict_paths(["memory://nowhere/c.png"]))[0]["error"] == \
            "memory://nowhere/c.png: No such file or directory"
        assert next(predictor.score_paths(["memory://uris/sub"])).error == \
            "memory://uris/sub: is a directory, not an image file"  # a folder where a file was listed
        monkeypatch.setitem(sys.modules, "fsspec.core", None)  # as where fsspec is not installed
        assert "needs fsspec: pip install 'catdog[ray]'" in list(predictor.predict_paths(paths[:1]))[0]["error"]
    finally:
        memory.rm("/uris", recursive=True)
