"""The report's figures, as PNG files: matplotlib's Agg backend, no display needed.

Every figure has a title and labelled axes, uses the Okabe-Ito colours (told apart with any
colour vision), and is laid out by matplotlib's constrained layout so nothing is clipped.
Each function writes one PNG of a fixed pixel size (`figsize` x `DPI`) and returns its path.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from catdog.evaluation.reliability import confidence_bins, expected_calibration_error  # noqa: E402
from catdog.inference.answers import probabilities  # noqa: E402

DPI = 100
# Okabe & Ito (2008): blue, orange, bluish green, vermillion, sky blue, reddish purple.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7")
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.grid": True,
         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
         "axes.prop_cycle": matplotlib.cycler(color=COLOURS), "figure.facecolor": "white"}


def _figure(width: float, height: float, rows: int = 1, columns: int = 1, **kwargs):
    """A figure of width x height inches; call it inside `plt.rc_context(STYLE)` (or a variant)."""
    return plt.subplots(rows, columns, figsize=(width, height), dpi=DPI, layout="constrained",
                        squeeze=False, **kwargs)


def _save(figure, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI, format="png")
    plt.close(figure)
    return out


def learning_curves(phases: list[tuple[str, dict[str, list[float]]]], out) -> Path:
    """Loss, accuracy and AUC per epoch, training and validation, phases end to end.

    `phases`: [(name, {"loss": [...], "val_loss": [...], ...}), ...], e.g. the head phase of a
    transfer run, then fine-tuning; a dashed line marks where each later phase starts.
    """
    with plt.rc_context(STYLE):
        figure, axes = _figure(13, 3.8, 1, 3)
        for ax, (metric, label, title) in zip(axes[0], (("loss", "log loss", "Loss"), ("accuracy", "accuracy", "Accuracy"),
                                                        ("auc", "ROC AUC", "ROC AUC"))):
            start = 0
            for index, (phase, history) in enumerate(phases):
                n = len(history.get(metric) or history.get("val_" + metric) or [])
                epochs = np.arange(start + 1, start + n + 1)
                for key, colour, what in ((metric, COLOURS[0], "training"), ("val_" + metric, COLOURS[1], "validation")):
                    if history.get(key):
                        ax.plot(epochs, history[key], color=colour, marker="o", markersize=3,
                                linestyle="-" if index == len(phases) - 1 else (0, (4, 1.5)),
                                label=f"{what} ({phase})" if len(phases) > 1 else what)
                if index:
                    ax.axvline(start + 0.5, color="0.35", linestyle="--", linewidth=1)
                    ax.annotate(f"{phase} \u2192", (start + 0.5, 1), xycoords=("data", "axes fraction"),
                                xytext=(4, -4), textcoords="offset points", va="top", fontsize=9, color="0.25")
                start += n
            low, high = ax.get_ylim()
            ax.set(title=title, xlabel="epoch (all phases, end to end)" if len(phases) > 1 else "epoch",
                   ylabel=label, xlim=(0.5, max(start, 1) + 0.5), ylim=(low, high + 0.12 * (high - low)))
            ax.xaxis.get_major_locator().set_params(integer=True)
        # One legend for the three panels, under them: it covers no curve.
        handles, names = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncols=4, fontsize=10, frameon=False)
        figure.suptitle("Learning curves", fontweight="bold")
        return _save(figure, out)


def confusion(matrix, class_names=("cat", "dog"), out=None) -> Path:
    """The confusion matrix: counts, and each row's share (the rate per true class)."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        figure, axes = _figure(5.2, 4.4)
        ax = axes[0][0]
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, f"{count:,}\n{rates[i, j]:.1%}", ha="center", va="center", fontsize=13,
                    color="white" if rates[i, j] > 0.6 else "black")
        ticks = range(len(class_names))
        ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
               xlabel="predicted", ylabel="true", title="Confusion matrix (count, share of the true class)")
        figure.colorbar(image, ax=ax, label="share of the true class", shrink=0.85)
        return _save(figure, out)


def roc_pr(labels, p_dog, out) -> Path:
    """ROC and precision-recall curves for "dog" as the positive class, each with its area."""
    from sklearn import metrics as skm

    labels, p_dog = np.asarray(labels), np.asarray(p_dog)
    with plt.rc_context(STYLE):
        figure, axes = _figure(10, 4.4, 1, 2)
        roc, pr = axes[0]
        if len(set(labels.tolist())) == 2:
            fpr, tpr, _ = skm.roc_curve(labels, p_dog)
            roc.plot(fpr, tpr, color=COLOURS[0], label=f"AUC = {skm.roc_auc_score(labels, p_dog):.4f}")
            precision, recall, _ = skm.precision_recall_curve(labels, p_dog)
            pr.plot(recall, precision, color=COLOURS[2],
                    label=f"AP = {skm.average_precision_score(labels, p_dog):.4f}")
            pr.axhline(labels.mean(), color="0.5", linestyle=":", label=f"chance ({labels.mean():.2f})")
        roc.plot([0, 1], [0, 1], color="0.5", linestyle=":", label="chance")
        roc.set(title="ROC curve (dog = positive)", xlabel="false positive rate (cats called dog)",
                ylabel="true positive rate (dogs found)", xlim=(0, 1), ylim=(0, 1.01))
        pr.set(title="Precision-recall (dog = positive)", xlabel="recall (dogs found)",
               ylabel="precision (dog answers right)", xlim=(0, 1), ylim=(0, 1.01))
        for ax in (roc, pr):
            ax.legend(loc="lower right")
        if len(set(labels.tolist())) == 2 and skm.roc_auc_score(labels, p_dog) > 0.97:
            # A good model's curves hug the corner: a zoom shows where they differ.
            _zoom(roc, fpr, tpr, (0.0, 0.05), (0.9, 1.0), [0.3, 0.32, 0.62, 0.5], COLOURS[0])
            _zoom(pr, recall, precision, (0.9, 1.0), (0.9, 1.0), [0.12, 0.32, 0.62, 0.5], COLOURS[2])
        return _save(figure, out)


def _zoom(ax, x, y, xlim, ylim, where, colour) -> None:
    inset = ax.inset_axes(where, xlim=xlim, ylim=ylim)
    inset.plot(x, y, color=colour)
    inset.tick_params(labelsize=8)
    inset.set_title("zoom", fontsize=9, fontweight="normal")
    ax.indicate_inset_zoom(inset, edgecolor="0.3")


def reliability(labels, logits, temperature: float, out, bins: int = 10) -> Path:
    """Accuracy against confidence, before and after temperature scaling, with each ECE; bin counts below."""
    with plt.rc_context(STYLE):
        figure, axes = _figure(6.4, 6.0, 2, 1, sharex=True, gridspec_kw=dict(height_ratios=(3, 1)))
        top, bottom = axes[0][0], axes[1][0]
        top.plot([0.5, 1], [0.5, 1], color="0.5", linestyle=":", label="perfect calibration")
        width, lowest = 0.5 / bins, 0.5
        for offset, (name, t, colour, marker) in enumerate((("raw", 1.0, COLOURS[3], "s"),
                                                             (f"T = {temperature:.3f}", temperature, COLOURS[0], "o"))):
            p = probabilities(logits, t)
            ece = expected_calibration_error(p, labels)
            points = [(c, a, n) for c, a, n in confidence_bins(p, labels, bins) if n]
            top.plot([c for c, _, _ in points], [a for _, a, _ in points], color=colour, marker=marker,
                     label=f"{name}: ECE {ece:.4f}")
            if offset:  # how much a bin of a few images can say: its 95% (Wilson) interval
                low, high = zip(*(_wilson(a, n) for _, a, n in points))
                top.fill_between([c for c, _, _ in points], low, high, color=colour, alpha=0.15, linewidth=0,
                                 label="95% interval of the calibrated bins")
                lowest = min([lowest, *low])
            lowest = min([lowest, *[a for _, a, _ in points]])
            centres = 0.5 + width * (np.arange(bins) + 0.5)
            counts = [n for _, _, n in confidence_bins(p, labels, bins)]
            bottom.bar(centres + (offset - 0.5) * width * 0.4, counts, width * 0.4, color=colour, label=name)
        top.set(title="Reliability: is a confidence of p right p of the time?",
                ylabel=f"share of answers right (of {len(np.ravel(labels)):,})",
                ylim=(max(0.0, lowest - 0.05), 1.02))
        top.legend(loc="best")
        bottom.set(xlabel="confidence in the answer given (max of p_dog, 1 - p_dog)", ylabel="images (log)",
                   yscale="log", xlim=(0.5, 1.0))
        bottom.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        bottom.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        return _save(figure, out)


def _wilson(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def image_grid(items: list[tuple[np.ndarray, str]], title: str, out, columns: int = 4, cell: float = 2.6,
               empty: str = "none") -> Path:
    """Pictures in a grid, each with a caption (a few short lines) under it."""
    rows = max(1, -(-len(items) // columns))
    with plt.rc_context({**STYLE, "axes.grid": False}):
        figure, axes = _figure(columns * cell, rows * (cell + 0.55) + 0.45, rows, columns)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, (pixels, caption) in zip(axes.ravel(), items):
            ax.imshow(pixels)
            ax.set_title(caption, fontsize=9, fontweight="normal", loc="center")
        if not items:
            axes[0][0].text(0, 0.5, empty, fontsize=12, transform=axes[0][0].transAxes)
        figure.suptitle(title, fontweight="bold")
        return _save(figure, out)


def augmentation_preview(image: str | os.PathLike, cfg, out, count: int = 11, seed: int = 0) -> Path:
    """A grid of the picture as the model sees it, then `count` draws of the training augmentation
    (`catdog.data.augment_preview`, the training pipeline's own layers)."""
    from catdog.data.augment_preview import augmented_views

    items, names = augmented_views(image, cfg, count, seed)
    return image_grid(items, f"{Path(image).name} under the training augmentation ({names})", out)
