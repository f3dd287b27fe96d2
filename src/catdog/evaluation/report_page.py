"""The report's page: one HTML file, its PNGs inlined as data: URIs, its style inline; no request leaves it."""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import time
from pathlib import Path

from catdog.inference.model_files import SHIPPED_MODEL

CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1340px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fafafa; }
h1 { font-size: 1.7rem; margin: 0 0 .2rem; } h2 { margin: 2.4rem 0 .6rem; border-bottom: 2px solid #0072B2; }
.sub { color: #555; margin: 0 0 1rem; } .note { color: #444; max-width: 70ch; }
.cards { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; }
.card { background: white; border: 1px solid #ddd; border-radius: 8px; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.45rem; } .card span { color: #555; font-size: .9rem; }
figure { margin: 1rem 0; background: white; border: 1px solid #ddd; border-radius: 8px; padding: .8rem;
         overflow-x: auto; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: #444; margin-top: .4rem; font-size: .95rem; }
table { border-collapse: collapse; background: white; margin: .5rem 0 1rem; font-size: .95rem;
        display: block; max-width: 100%; overflow-x: auto; }
td { overflow-wrap: anywhere; }
@media (max-width: 600px) { body { padding: 1rem .8rem 3rem; } .card { flex: 1 1 7rem; min-width: 0; } }
th, td { border: 1px solid #ddd; padding: .25rem .7rem; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } th { background: #eef4f9; }
.cols { display: flex; flex-wrap: wrap; gap: 2rem; align-items: flex-start; }
code { font-size: .9em; word-break: break-all; }
nav { background: white; border: 1px solid #ddd; border-radius: 8px; padding: .5rem 1rem; line-height: 1.9; }
nav a { color: #0060a0; text-decoration: none; } nav a:hover { text-decoration: underline; }
"""

NOTES = {
    "curves": "Training and validation per epoch. A transfer run fits the head on frozen features first, "
              "then fine-tunes the top of the backbone; the dashed line marks the switch.",
    "confusion": "Rows are the true class; each cell gives the count and the share of its row.",
    "roc_pr": "Both curves sweep the threshold on p_dog; the areas summarise them (1.0 is perfect).",
    "reliability": "Points on the diagonal are calibrated answers: of the pictures answered with 90% "
                   "confidence, 90% are right. The band is each bin's 95% interval: a bin of a few pictures "
                   "says little. ECE is the average gap (over 15 bins, as `catdog evaluate` reports it), "
                   "weighted by the counts below; T is the temperature fitted on the validation split.",
    "mistakes": "The wrong answers given with the most confidence: label errors in the data show up here first.",
    "unknown": 'Cats and dogs that the "neither cat nor dog" detector gave up on (lowest p_pet first).',
    "gradcam": "Grad-CAM on the last convolutional feature map: the regions whose features raised the "
               "evidence for the answer the model gave. Mistakes first, then a random sample of right answers.",
}


def _e(value) -> str:
    return html.escape(str(value))


def _number(value) -> str:
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.4f}" if 0.01 <= abs(value) < 1 else f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def table(rows, header=None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(
        f'<td class="n">{_e(_number(v))}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
        else f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def data_uri(png: str | os.PathLike) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode()


def machine() -> list[tuple[str, str]]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    import keras
    import tensorflow as tf

    from catdog import __version__
    return [("CPU", f"{cpu}, {os.cpu_count()} cores"), ("memory", f"{memory:.1f} GiB"),
            ("system", platform.platform()), ("Python", platform.python_version()),
            ("TensorFlow / Keras", f"{tf.__version__} / {keras.__version__}"), ("catdog", __version__)]


def _data_section(summary: dict, metrics: dict) -> str:
    counts = summary.get("counts", {})
    splits = sorted({k.split("/")[0] for k in counts}, key=lambda s: ("train", "val", "test").index(s)
                    if s in ("train", "val", "test") else 9)
    if metrics.get("split") == "all":  # the whole folder was scored: its split is beside the point
        splits = []
    rows = [(label, *[counts.get(f"{s}/{label}", 0) for s in splits], sum(counts.get(f"{s}/{label}", 0) for s in splits))
            for label in ("cat", "dog")]
    out = [f"<p class=note>Source: <code>{_e(summary.get('settings', {}).get('source', metrics.get('data', '?')))}</code>; "
           f"scored: the <b>{_e(metrics.get('split', 'test'))}</b> split ({metrics['n']:,} images"
           f"{', ' + str(metrics['unreadable']) + ' unreadable' if metrics.get('unreadable') else ''}).</p>"]
    if rows and any(r[-1] for r in rows):
        out.append(table(rows, ["class", *splits, "all"]))
    skipped = summary.get("skipped_by_reason", {})
    out.append(table(sorted(skipped.items()), ["skipped because", "files"]) if skipped
               else "<p class=note>No file was skipped.</p>")
    files = summary.get("skipped_files", [])
    if files:
        listed = table([(f["path"], f["reason"]) for f in files[:50]], ["skipped file", "reason"])
        out.append(f"<details><summary>{len(files)} skipped file(s)</summary>{listed}</details>")
    return "".join(out)


def render(loaded: dict, made: list[dict], seconds: dict[str, float]) -> str:
    m, meta = loaded["metrics"], loaded["meta"]
    model_name = loaded["run"].name if loaded["run"] else loaded["model"].name
    if loaded["model"].resolve() == SHIPPED_MODEL.resolve():
        model_name = f"the shipped model ({meta.get('source', {}).get('run', 'MobileNet')})"
    data_name = Path(m.get("data") or loaded["data"].get("settings", {}).get("source", "its own data")).name
    cards = [("accuracy", f"{m['accuracy']:.2%}"), ("log loss", f"{m['log_loss']:.4f}"),
             ("ROC AUC", f"{m['roc_auc']:.4f}" if m.get("roc_auc") is not None else "n/a"),
             ("ECE (calibrated)", f"{m['ece']:.4f}"), ("images", f"{m['n']:,}")]
    if "unknown_rate" in m:
        cards.append(('pets "unknown"', f"{m['unknown_rate']:.2%}"))
    parts = [f"<h1>catdog report: {_e(model_name)} on {_e(data_name)}</h1>",
             f"<p class=sub>{_e(m.get('split', 'test'))} split{' with flip TTA' if m.get('tta') else ''}; "
             f"model <code>{_e(loaded['model'])}</code>; made {time.strftime('%Y-%m-%d %H:%M %Z')}</p>",
             '<div class="cards">' + "".join(f"<div class=card><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                             for k, v in cards) + "</div>"]
    sections = [(f["id"], f["title"]) for f in made] + [("data", "Data"), ("tables", "Metrics, model and config"),
                                                        ("machine", "Timings and machine")]
    parts.append("<nav>" + " · ".join(f'<a href="#{key}">{_e(title)}</a>' for key, title in sections) + "</nav>")
    for figure in made:
        parts.append(f'<h2 id="{figure["id"]}">{_e(figure["title"])}</h2><figure>'
                     f'<img src="{data_uri(figure["png"])}" alt="{_e(figure["title"])}">'
                     f"<figcaption>{_e(NOTES.get(figure['id'], ''))}</figcaption></figure>")
    metrics_rows = [(k, v) for k, v in m.items() if k not in ("confusion_matrix", "out") and not isinstance(v, dict)]
    parts.append("<h2 id=data>Data</h2>" + _data_section(loaded["data"], m))
    model_rows = [(k, v if not isinstance(v, dict) else ", ".join(f"{a} {_number(b)}" for a, b in v.items()))
                  for k, v in meta.items() if k != "source"]
    parts.append("<h2 id=tables>Metrics, model and config</h2><div class=cols>"
                 + table(metrics_rows, ["metric", "value"]) + table(model_rows, ["model.json", "value"])
                 + table([(k, json.dumps(v)) for k, v in sorted(loaded["config"].items())], ["config", "value"])
                 + "</div>")
    timing = [("training", f"{meta['train_seconds'] / 60:.1f} min" if meta.get("train_seconds") else "n/a"),
              ("scoring", f"{m.get('seconds', 'n/a')} s, {m.get('images_per_second', 'n/a')} images/s"),
              *[(f"figure: {k}", f"{v} s") for k, v in seconds.items()]]
    parts.append("<h2 id=machine>Timings and machine</h2><div class=cols>" + table(timing, ["step", "time"])
                 + table(machine(), ["machine", ""]) + "</div>")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>catdog report: {_e(model_name)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
