"""Test-split accuracy, log loss, calibration and training time of trained runs, as one table.

    python benchmarks/accuracy.py runs/scratch runs/mobilenet-frozen runs/mobilenet-224 --tta runs/mobilenet-224

Each run is evaluated on its own held-out test split (never used for training or for choosing
anything). Prints a Markdown table and writes benchmarks/results/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from catdog.evaluate import evaluate  # noqa: E402


def row(run: Path, tta: bool) -> dict:
    metrics = evaluate(run, "test", tta=tta)
    meta = json.loads((run / "model.json").read_text())
    config = json.loads((run / "config.json").read_text())
    return dict(
        run=run.name, model=config["model"], image_size=config["image_size"], tta=tta,
        fine_tuned_layers=config["fine_tune_layers"] if config["model"] != "scratch" else None,
        test_images=metrics["n"], accuracy=metrics["accuracy"], log_loss=metrics["log_loss"],
        ece=metrics["ece"], ece_uncalibrated=metrics["ece_uncalibrated"],
        train_minutes=round(meta["train_seconds"] / 60, 1), predict_images_per_second=metrics["images_per_second"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders, evaluated as they are")
    parser.add_argument("--tta", nargs="*", type=Path, default=[], help="run folders, evaluated with flip TTA")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "accuracy.json")
    args = parser.parse_args()
    rows = [row(run, False) for run in args.runs] + [row(run, True) for run in args.tta]
    print("| run | model | px | TTA | test images | accuracy | log loss | ECE (raw -> calibrated) | train min | predict img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['run']} | {r['model']} | {r['image_size']} | {'flip' if r['tta'] else '-'} | {r['test_images']} "
              f"| {r['accuracy']:.2%} | {r['log_loss']:.4f} | {r['ece_uncalibrated']:.4f} -> {r['ece']:.4f} "
              f"| {r['train_minutes']} | {r['predict_images_per_second']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
