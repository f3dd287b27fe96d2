"""One machine against N local workers: wall time and results of the same training run.

    python benchmarks/distributed.py --data ../shared/datasets/dogs-vs-cats/train.zip

Trains one config three ways, each in fresh processes: `catdog train` (the single-machine path),
`catdog launch --workers 1 -- train --distributed` (the distributed step on one worker) and
`catdog launch --workers 2 -- ...` (two workers on 127.0.0.1 sharing this machine's cores).
Prints wall time, training images/s and the final validation figures; writes
benchmarks/results/distributed.json. On one machine, two workers cannot be faster: they split
the same cores and add a gradient all-reduce per step. The figures show that overhead, which is
what a user with N real machines pays per step on top of 1/N of the work.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_IMAGES = 4000  # per split
CONFIG = ["image_size=96", "width=16", "stages=3", f"max_images={MAX_IMAGES}", "epochs=4", "batch_size=32",
          "cache=memory", "patience=10"]
WAYS = {
    "single machine (catdog train)": [],
    "distributed, 1 worker": ["launch", "--workers", "1", "--", "train", "--distributed"],
    "distributed, 2 workers": ["launch", "--workers", "2", "--", "train", "--distributed"],
}


def run(way: list[str], name: str, data: str, runs_dir: Path) -> dict:
    command = [sys.executable, "-m", "catdog.cli", *(way or ["train"]), "--data", data,
               f"runs_dir={runs_dir}", f"name={name}", *CONFIG]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    history = list(csv.DictReader(open(runs_dir / name / "history.csv")))
    last = history[-1]
    in_split = sum(1 for row in csv.DictReader(open(runs_dir / name / "manifest.csv")) if row["split"] == "train")
    train_images = min(in_split, MAX_IMAGES)
    epochs = len(history)
    return dict(seconds=round(seconds, 1), epochs=epochs,
                train_images_per_second=round(train_images * epochs / seconds, 1),
                val_loss=round(float(last["val_loss"]), 4), val_accuracy=round(float(last["val_accuracy"]), 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/dogs-vs-cats/train.zip"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "distributed.json"))
    args = parser.parse_args()
    runs_dir = Path(tempfile.mkdtemp(prefix="catdog-distributed-"))
    rows = []
    try:
        for i, (way, argv) in enumerate(WAYS.items()):
            rows.append(dict(way=way, **run(argv, f"run{i}", args.data, runs_dir)))
            print(rows[-1], file=sys.stderr)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    single = rows[0]["seconds"]
    print(f"{'way':<32} {'wall s':>7} {'vs single':>9} {'img/s':>6} {'val loss':>8} {'val acc':>7}")
    for r in rows:
        r["time_vs_single"] = round(r["seconds"] / single, 2)
        print(f"{r['way']:<32} {r['seconds']:>7} {r['time_vs_single']:>8}x {r['train_images_per_second']:>6} "
              f"{r['val_loss']:>8} {r['val_accuracy']:>7.2%}")
    result = dict(machine=dict(cpus=os.cpu_count(), processor=platform.machine(), load_average=os.getloadavg()),
                  config=CONFIG, rows=rows)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
