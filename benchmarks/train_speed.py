"""The main command's wall time, old recipe against new, in one run on this machine.

    python benchmarks/train_speed.py --data ../shared/datasets/dogs-vs-cats/train.zip            # ~40 min
    python benchmarks/train_speed.py --data ../shared/datasets/dogs-vs-cats/train.zip --repeats 2

Each run is `catdog train --preset lite0 --data DATA` in a fresh process with a fresh
CATDOG_HOME (so the data's preparation is included), then `catdog evaluate` on its test split.
"old" is the recipe before cached views (the whole network at every fine-tuning step, 5 epochs)
as this code runs it, with today's augmentation (one resampling), so the ratio is a little below
the one against the old code itself (README, "Train in minutes"); "new" is the preset as it is. Runs alternate (old, new, old, new, ...) so that a machine that
slows down part-way weighs on both. Prints a table (wall time, seconds per phase, images/s of
the fine-tuning phase, test accuracy and log loss) and the ratio of the median wall times, and
writes benchmarks/results/train_speed.json. Measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = {
    "old": ["cached_views=0", "epochs=5"],  # the lite0 preset as it was before cached views
    "new": [],
}
PHASES = ("prepare", "features", "head", "fine_tune", "calibrate")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def catdog(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catdog.cli", *args], env=env, check=True,
                          stdout=subprocess.PIPE, text=True)


def one_run(recipe: str, name: str, data: str, runs_dir: Path, extra: list[str]) -> dict:
    """Trains (timed, wall clock), evaluates on the test split; the run's figures."""
    with tempfile.TemporaryDirectory(prefix="catdog-home-") as home:
        env = {**os.environ, "CATDOG_HOME": home}
        started = time.perf_counter()
        catdog("train", "--quiet", "--preset", "lite0", "--data", data, f"runs_dir={runs_dir}", f"name={name}",
               *RECIPES[recipe], *extra, env=env)
        wall = time.perf_counter() - started
        catdog("evaluate", "--quiet", str(runs_dir / name), env=env)
    run = runs_dir / name
    state = json.loads((run / "state.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics_test.json").read_text())
    counts = json.loads((run / "data.json").read_text())["counts"]
    n_train = sum(n for key, n in counts.items() if key.startswith("train/"))
    n_train = min(n_train, cfg["max_images"]) if cfg["max_images"] else n_train
    phases = state.get("phase_seconds", {})
    tuned = state["epochs_done"] * (n_train // cfg["batch_size"]) * cfg["batch_size"]
    return dict(
        recipe=recipe, run=name, overrides=RECIPES[recipe] + extra, wall_seconds=round(wall, 1),
        phase_seconds=phases, epochs_done=state["epochs_done"], cached_views=cfg.get("cached_views", 0),
        precision=cfg["precision"], train_images=n_train,
        fine_tune_images_per_second=round(tuned / phases["fine_tune"], 1) if phases.get("fine_tune") else None,
        test_images=metrics["n"], accuracy=metrics["accuracy"], log_loss=metrics["log_loss"],
    )


def table(rows: list[dict]) -> str:
    head = ["recipe", "run", "wall min", *PHASES, "ft img/s", "test acc", "log loss"]
    lines = [head]
    for r in rows:
        p = r["phase_seconds"]
        lines.append([r["recipe"], r["run"], f"{r['wall_seconds'] / 60:.1f}",
                      *(f"{p[k]:.0f}" if k in p else "-" for k in PHASES),
                      str(r["fine_tune_images_per_second"] or "-"), f"{r['accuracy']:.4f}", f"{r['log_loss']:.4f}"])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(line, widths)) for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="train.zip or a folder")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each recipe (default 1)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--runs-dir", default=None, help="where the run folders go (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_speed.json"))
    parser.add_argument("settings", nargs="*", help="key=value for every run, e.g. max_images=2000 (a quick look)")
    args = parser.parse_args()
    if not Path(args.data).exists():
        parser.error(f"--data: {args.data} does not exist")
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="catdog-train-speed-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for repeat in range(args.repeats):
        for recipe in args.recipes:
            rows.append(one_run(recipe, f"{recipe}-{stamp}-{repeat + 1}", args.data, runs_dir, args.settings))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    medians = {r: statistics.median(x["wall_seconds"] for x in rows if x["recipe"] == r) for r in args.recipes}
    ratio = medians["old"] / medians["new"] if {"old", "new"} <= set(medians) else None
    if ratio:
        print(f"median wall time: old {medians['old'] / 60:.1f} min, new {medians['new'] / 60:.1f} min: "
              f"{ratio:.2f}x faster")
    result = dict(machine=dict(cpu=cpu_name(), cores=os.cpu_count()), data=args.data, settings=args.settings,
                  command=" ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), runs=rows,
                  median_wall_seconds=medians, speedup=round(ratio, 2) if ratio else None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
