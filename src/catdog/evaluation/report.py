"""report(path) -> one self-contained `report.html` (and its PNGs) for a run or an evaluation.

    >>> report("runs/NAME")                       # scores the test split first if not done yet
    >>> report("evaluations/shipped-on-photos-all", out="where/")

`path` is a run folder (its test split: `catdog evaluate RUN` writes what is needed, and is run
here when it has not been) or the folder `catdog evaluate --data` wrote. The page embeds
every image as a data: URI, so it opens from disk with no server and no network.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from catdog.console import progress_bar
from catdog.data.images import ImageError, load_image, thumbnail
from catdog.evaluation import plots, report_page
from catdog.evaluation.evaluate import evaluate, read_predictions

THUMB = 192  # longest side of the pictures in the grids, in pixels
GRID = 12  # pictures per grid


def load(path: str | os.PathLike) -> dict:
    """Everything the report shows, read from a run folder or an evaluation folder."""
    path = Path(path)
    if (path / "metrics.json").exists() and (path / "predictions.csv").exists():
        metrics = json.loads((path / "metrics.json").read_text())
        rows = read_predictions(path / "predictions.csv")
        summary = _json(path / "data.json")
        run = Path(metrics["run"]) if metrics.get("run") else None
    elif (path / "config.json").exists():
        run = path
        if not ((run / "metrics_test.json").exists() and (run / "predictions_test.csv").exists()):
            evaluate(run)
        metrics = json.loads((run / "metrics_test.json").read_text())
        rows = read_predictions(run / "predictions_test.csv")
        summary = _json(run / "data.json")
        prepared = Path(summary.get("root", "")).parent / "report.json"
        if "skipped_files" not in summary and prepared.is_file():  # the full list stays with the prepared data
            summary["skipped_files"] = _json(prepared).get("skipped_files", [])
    else:
        raise FileNotFoundError(f"{path}: neither a run folder (config.json) nor an evaluation "
                                f"(metrics.json and predictions.csv from `catdog evaluate --data`)")
    model = Path(metrics["model"])
    meta = _json(model.with_suffix(".json"))
    config = _json(run / "config.json") if run else meta.get("source", {}).get("config", {})
    phases = []
    if run and (run / "history_head.csv").exists():
        phases.append(("head", _history(run / "history_head.csv")))
    if run and (run / "history.csv").exists():
        phases.append(("fine-tuning" if phases else "training", _history(run / "history.csv")))
    return dict(source=path, run=run, model=model, metrics=metrics, rows=rows, data=summary, meta=meta,
                config=config, phases=[p for p in phases if p[1]])


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _history(path: Path) -> dict[str, list[float]]:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows if r.get(key) not in (None, "")] for key in (rows[0] if rows else {})}


def _thumbnail(path: str) -> np.ndarray:
    try:
        return thumbnail(load_image(path), THUMB)
    except ImageError:
        return np.full((THUMB, THUMB, 3), 211, np.uint8)  # light grey: the picture has gone


def _caption(row: dict, *lines: str) -> str:
    name = Path(row["path"]).name
    return "\n".join([name if len(name) <= 24 else name[:21] + "...", *lines])


def pick(rows: list[dict], seed: int = 0) -> dict[str, list[dict]]:
    """The rows the grids show: most confident mistakes, pets answered "unknown", a Grad-CAM sample."""
    scored = [r for r in rows if r.get("logit") is not None]
    wrong = sorted((r for r in scored if (r["p_dog"] >= 0.5) != (r["label"] == "dog")),
                   key=lambda r: -abs(r["p_dog"] - 0.5))
    unknown = sorted((r for r in scored if r.get("answer") == "unknown"), key=lambda r: r.get("p_pet") or 0.0)
    right = [r for r in scored if (r["p_dog"] >= 0.5) == (r["label"] == "dog")]
    rng = np.random.default_rng(seed)
    sample = [right[i] for i in sorted(rng.choice(len(right), min(GRID // 2, len(right)), replace=False))]
    return dict(wrong=wrong, unknown=unknown, right_sample=sample)


def _explained(model: Path, chosen: list[tuple[dict, str]]) -> list[tuple[np.ndarray, str]]:
    from catdog.inference.gradcam import Explainer

    explainer = Explainer(model)
    return [(explainer.overlay(_thumbnail(row["path"])), caption) for row, caption in chosen]


def figures(loaded: dict, out: Path) -> tuple[list[dict], dict[str, float]]:
    """Writes the PNGs; returns [{"id", "title", "png", "note"}] in page order and seconds per figure."""
    rows, metrics = loaded["rows"], loaded["metrics"]
    scored = [r for r in rows if r.get("logit") is not None]
    labels = np.array([r["label"] == "dog" for r in scored], int)
    logits = np.array([r["logit"] for r in scored])
    p_dog = np.array([r["p_dog"] for r in scored])
    picked = pick(rows)
    has_detector = any(r.get("p_pet") is not None for r in scored)
    cam_rows = [(r, _caption(r, f"wrong: true {r['label']}", f"p_dog {r['p_dog']:.3f}")) for r in picked["wrong"][:GRID // 2]]
    cam_rows += [(r, _caption(r, f"right: {r['label']}", f"p_dog {r['p_dog']:.3f}")) for r in picked["right_sample"]]
    steps = [
        ("curves", "Learning curves", lambda p: plots.learning_curves(loaded["phases"], p), bool(loaded["phases"])),
        ("confusion", "Confusion matrix", lambda p: plots.confusion(metrics["confusion_matrix"], out=p), True),
        ("roc_pr", "ROC and precision-recall", lambda p: plots.roc_pr(labels, p_dog, p), True),
        ("reliability", "Calibration", lambda p: plots.reliability(labels, logits, metrics["temperature"], p), True),
        ("mistakes", "Most confident mistakes", lambda p: plots.image_grid(
            [(_thumbnail(r["path"]), _caption(r, f"true: {r['label']}", f"p_dog {r['p_dog']:.3f}"))
             for r in picked["wrong"][:GRID]], f"Most confident mistakes ({len(picked['wrong'])} in all)", p,
            empty="no mistakes"), True),
        ("unknown", 'Pets answered "unknown"', lambda p: plots.image_grid(
            [(_thumbnail(r["path"]), _caption(r, f"true: {r['label']}", f"p_pet {r['p_pet']:.4f}"))
             for r in picked["unknown"][:GRID]], f'Cats and dogs answered "unknown" ({len(picked["unknown"])} in all)',
            p, empty='none: every pet got an answer'), has_detector),
        ("gradcam", "Where it looked (Grad-CAM)", lambda p: plots.image_grid(
            _explained(loaded["model"], cam_rows), "Grad-CAM: evidence for the answer given (bright = strong)", p),
         bool(cam_rows)),
    ]
    made, seconds = [], {}
    for key, title, draw, wanted in progress_bar(steps, desc="report", unit="figure"):
        if not wanted:
            continue
        started = time.perf_counter()
        made.append(dict(id=key, title=title, png=draw(out / f"{key}.png")))
        seconds[title] = round(time.perf_counter() - started, 1)
    return made, seconds


def report(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Writes `report.html` and its PNGs into `out` (default: `<path>/report`); returns the HTML's path."""
    loaded = load(path)
    out = Path(out) if out else Path(path) / "report"
    out.mkdir(parents=True, exist_ok=True)
    made, seconds = figures(loaded, out)
    html = out / "report.html"
    html.write_text(report_page.render(loaded, made, seconds), encoding="utf-8")
    return html
