"""evaluate --data, the report and its plots, the CLI around them, and the report in Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import module_workspace, synthetic_image
from PIL import Image

from catdog import config
from catdog.evaluation import plots
from catdog.evaluation.evaluate import evaluate_data, read_predictions
from catdog.inference.model_files import SHIPPED_MODEL

ARTIFACTS = Path(__file__).parent / "artifacts"
DPI = plots.DPI


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    """A two-phase (head, then fine-tuning) MobileNet run on synthetic pictures, in seconds."""
    from catdog.training.train import train

    with module_workspace(tmp_path_factory, "transfer", per_class=30) as (root, tree):
        cfg = config.resolve("tiny", ["model=MobileNet", "weights=none", "image_size=32", "unknown=false",
                                      "head_epochs=3", "epochs=2", "fine_tune_layers=4", "max_images=0",
                                      f"data={tree}", f"runs_dir={root / 'runs'}", "name=transfer"])
        yield train(cfg)


def folder_per_class(root: Path, per_class: int = 6, seed: int = 5) -> dict[str, int]:
    """root/Cats/*.png and root/dogs/nested/*.jpg: another layout `prepare` accepts. {path: label}."""
    rng, labels = np.random.default_rng(seed), {}
    for label, folder, ext in ((0, root / "Cats", "png"), (1, root / "dogs" / "nested", "jpg")):
        folder.mkdir(parents=True)
        for i in range(per_class):
            path = folder / f"{i}.{ext}"
            synthetic_image(label, rng, size=48).save(path)
            labels[str(path)] = label
    (root / "Cats" / "broken.jpg").write_bytes(b"not an image")
    return labels


def check_png(path: Path, size: tuple[int, int] | None = None) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as image:
        assert image.format == "PNG", path
        image.verify()
        if size:
            assert image.size == size, (path.name, image.size, size)
        return image.size


def test_evaluate_data_equals_scoring_by_hand(transfer_run, tmp_path):
    from catdog.inference.predictor import Predictor

    labels = folder_per_class(tmp_path / "mine")
    result = evaluate_data(tmp_path / "mine", model=transfer_run, out=tmp_path / "eval")
    predictor = Predictor(transfer_run)
    paths = sorted(labels)
    logits = np.array([s.logit for s in predictor.score_paths(paths)])
    y = np.array([labels[p] for p in paths])
    p_dog = 1 / (1 + np.exp(-logits / predictor.temperature))
    answer = (p_dog >= 0.5).astype(int)
    assert result["split"] == "all" and result["own_data"] is False and result["n"] == 12
    assert result["accuracy"] == pytest.approx(np.mean(answer == y))
    assert result["log_loss"] == pytest.approx(-np.mean(y * np.log(p_dog) + (1 - y) * np.log(1 - p_dog)), rel=1e-6)
    tp, fp = int(np.sum((answer == 1) & (y == 1))), int(np.sum((answer == 1) & (y == 0)))
    assert result["confusion_matrix"] == [[int(np.sum(y == 0)) - fp, fp], [int(np.sum(y == 1)) - tp, tp]]
    rows = {Path(r["path"]).name + r["label"]: r for r in read_predictions(tmp_path / "eval" / "predictions.csv")}
    for path, logit in zip(paths, logits):
        row = rows[Path(path).name + ("cat", "dog")[labels[path]]]
        assert row["logit"] == pytest.approx(logit, rel=1e-5) and row["answer"] in ("cat", "dog")
    summary = json.loads((tmp_path / "eval" / "data.json").read_text())
    assert summary["skipped"] == 1 and summary["skipped_files"][0]["path"].endswith("broken.jpg")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"] == result["accuracy"]


def test_evaluate_data_on_the_models_own_data_scores_its_test_split(transfer_run, tmp_path):
    from catdog.evaluation.evaluate import evaluate

    own = json.loads((transfer_run / "data.json").read_text())["settings"]["source"]
    result = evaluate_data(own, model=transfer_run / "model.keras", out=tmp_path / "own")
    assert result["own_data"] is True and result["split"] == "test" and result["run"] == str(transfer_run)
    reference = evaluate(transfer_run)
    assert (result["n"], result["accuracy"], result["log_loss"]) == (
        reference["n"], reference["accuracy"], reference["log_loss"])
    assert evaluate_data(own, model=transfer_run, split="all", out=tmp_path / "all")["n"] == 60


def test_report_of_a_transfer_run_writes_every_artefact(transfer_run):
    from catdog.evaluation.report import report

    assert (transfer_run / "history_head.csv").exists()  # train kept the head phase's history
    html = report(transfer_run)
    out = html.parent
    sizes = {"curves": (1300, 380), "confusion": (520, 440), "roc_pr": (1000, 440), "reliability": (640, 600)}
    for name, size in sizes.items():
        check_png(out / f"{name}.png", size)
    for grid in ("mistakes", "gradcam"):
        width, _ = check_png(out / f"{grid}.png")
        assert width == 4 * 2.6 * DPI
    assert not (out / "unknown.png").exists()  # no detector in this model: no grid of pets given up
    text = html.read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', text)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]) == (out / "curves.png").read_bytes()
    assert not re.search(r'(?:src|href)="(?!data:|#)', text) and "http" not in text.replace("http-equiv", "")
    for words in ("Learning curves", "Most confident mistakes", "Grad-CAM", "fine_tune_layers", "skipped"):
        assert words in text, words


def test_learning_curves_mark_the_phase_boundary(tmp_path):
    head = {"loss": [0.6, 0.4], "val_loss": [0.5, 0.45], "accuracy": [0.7, 0.8], "val_accuracy": [0.75, 0.8]}
    tune = {"loss": [0.3, 0.2, 0.1], "val_loss": [0.4, 0.35, 0.36], "auc": [0.9, 0.95, 0.97]}
    check_png(plots.learning_curves([("head", head), ("fine-tuning", tune)], tmp_path / "c.png"), (1300, 380))
    check_png(plots.image_grid([], "nothing", tmp_path / "g.png", empty="no mistakes"), (1040, 360))


@pytest.fixture(scope="module")
def shipped_report(tmp_path_factory):
    """The shipped model (with its unknown detector) evaluated on synthetic stripes, and its report."""
    from catdog.evaluation.report import report

    with module_workspace(tmp_path_factory, "shipped", per_class=8) as (root, tree):
        result = evaluate_data(tree, out=root / "eval")
        yield result, report(root / "eval", out=root / "report")


def test_report_of_an_evaluation_shows_pets_given_up(shipped_report):
    result, html = shipped_report
    assert result["run"] is None and result["model"].endswith("model.keras") and result["unknown_rate"] > 0
    check_png(html.parent / "unknown.png")
    text = html.read_text()
    shipped_run = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())["source"]["run"]
    assert "answered &quot;unknown&quot;" in text and f"the shipped model ({shipped_run})" in text
    assert not (html.parent / "curves.png").exists()


@pytest.mark.browser
def test_report_renders_in_chromium_with_every_image(shipped_report, browser_page):
    _, html = shipped_report
    page = browser_page
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(html.as_uri(), wait_until="load")
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 6 and all(w > 0 for w in widths), widths
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert page.console_errors == []
    sideways = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(sideways) <= 0, "the page scrolls sideways"
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: long paths and tables wrap or scroll inside
    assert page.evaluate(sideways) <= 0, "the page scrolls sideways on a phone"
    page.set_viewport_size({"width": 1280, "height": 900})
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    check_png(ARTIFACTS / "report.png")


def run_cli(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "catdog.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_evaluate_data_report_predict_explain_and_augment_preview(transfer_run, tmp_path):
    folder_per_class(tmp_path / "mine")
    done = run_cli("evaluate", "--model", transfer_run, "--data", tmp_path / "mine", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "evaluations" / "transfer-on-mine-all"
    assert "-> evaluations/transfer-on-mine-all" in done.stdout and (out / "predictions.csv").exists()
    done = run_cli("report", out, "--out", tmp_path / "rep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'rep' / 'report.html'}\n"
    assert "<h1>catdog report: transfer on mine</h1>" in (tmp_path / "rep" / "report.html").read_text()

    pictures = sorted((tmp_path / "mine").rglob("*.png"))[:2] + [tmp_path / "mine" / "Cats" / "broken.jpg"]
    done = run_cli("predict", *pictures, "--model", transfer_run, "--explain", tmp_path / "cams", cwd=tmp_path)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and len(records) == 3 and "error" in records[2]  # stdout as without --explain
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["0.png", "1.png"]
    check_png(tmp_path / "cams" / "0.png", (48, 48))

    done = run_cli("augment-preview", pictures[0], "--preset", "tiny", "zoom=0.3", "--out", tmp_path / "aug.png",
                   cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"{tmp_path / 'aug.png'}\n", done.stderr
    check_png(tmp_path / "aug.png", (1040, 990))
    done = run_cli("augment-preview", pictures[0], "nope=1", cwd=tmp_path)
    assert done.returncode == 2 and "nope" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_own_data_is_recognised_in_another_folder_by_name_and_test_split_size(tmp_path):
    from catdog.evaluation import provenance

    origin = provenance.trained_on(None)  # the shipped model: trained on ../shared/.../train.zip, 2,250 test images
    assert origin["name"] == "shipped" and origin["test_images"] == 2250 and origin["split_seed"] == "catdog-v1"
    assert origin["sources"][0].endswith("dogs-vs-cats/train.zip")
    counts = {"test/cat": 1125, "test/dog": 1125, "train/cat": 9000}
    assert provenance.same_source(origin["sources"][0], origin, {})
    assert provenance.same_source(tmp_path / "train.zip", origin, counts)  # a copy elsewhere
    assert not provenance.same_source(tmp_path / "train.zip", origin, {**counts, "test/dog": 1124})
    assert not provenance.same_source(tmp_path / "mine.zip", origin, counts)
