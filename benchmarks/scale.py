"""Training memory and speed against the number of pictures, per cache mode: is memory flat when streaming?

    python benchmarks/scale.py                  # 2k, 10k, 50k pictures; memory, auto, none, disk, shards
    python benchmarks/scale.py --sizes 2000,10000 --caches none,memory --plot docs/scale.png

Makes small synthetic JPEGs (the conftest's striped cats and dogs, 160 x 120 px) once per size,
then runs two `catdog train` epochs of a tiny scratch net at 96 px on each (size, cache) in a
fresh process: its peak RSS (the kernel's, for that process alone) and its training images/s
(the second epoch's wall time, validation included). "shards" is `catdog prepare --shards` (written before, not
measured) and training from them streamed (cache=none). Prints a table; writes
benchmarks/results/scale.json and, with --plot, the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import synthetic_image  # noqa: E402  (the tests' own synthetic pictures)

BATCH, IMAGE_SIZE = 64, 96
TRAIN = [f"image_size={IMAGE_SIZE}", "width=8", "stages=2", "max_images=0", "epochs=2", f"batch_size={BATCH}",
         "augment=false", "unknown=false"]


def make_pictures(folder: Path, count: int) -> Path:
    """`count` JPEGs in Kaggle's layout (train/cat.N.jpg, train/dog.N.jpg), made once."""
    done = folder / f"done-{count}"
    if done.exists():
        return folder

    def write(i: int) -> None:
        rng = np.random.default_rng(i)
        image = synthetic_image(i % 2, rng, size=120).resize((160, 120))
        image.save(folder / "train" / f"{('cat', 'dog')[i % 2]}.{i}.jpg", quality=85)

    (folder / "train").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(write, range(count)))
    done.touch()
    return folder


def run(sizes: list[int], caches: list[str], work: Path) -> list[dict]:
    rows = []
    for size in sizes:
        data = make_pictures(work / f"pictures-{size}", size)
        for cache in caches:
            with tempfile.TemporaryDirectory(dir=work) as scratch:
                if cache == "shards":  # written first, from the same CATDOG_HOME the training prepares in
                    subprocess.run([sys.executable, "-m", "catdog.cli", "prepare", "--data", str(data), "--shards",
                                    f"{scratch}/shards", "--image-size", str(IMAGE_SIZE)], check=True,
                                   capture_output=True, env={**os.environ, "CATDOG_HOME": f"{scratch}/home"})
                measure = [sys.executable, __file__, "--measure", str(data), cache, f"{scratch}/home", f"{scratch}/runs"]
                done = subprocess.run(measure, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(done.stderr[-2000:])
                row = {"images": size, "cache": cache, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{size:>7,} {cache:>7} -> {row['chosen']:>7}: peak RSS {row['peak_rss_mb']:>6} MB, "
                  f"{row['images_per_s']:>7} img/s (epochs: {row['epoch_seconds']} s)", flush=True)
    return rows


def _measured(data: Path, cache: str, home: Path, runs: Path) -> dict:
    """Runs `_child` in a fresh process; its peak RSS is the kernel's ru_maxrss for that process alone."""
    command = [sys.executable, __file__, "--child", str(data), cache, str(runs)]
    proc = subprocess.Popen(command, env={**os.environ, "CATDOG_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    usage = _usage_of_last_child()
    if proc.returncode:
        raise SystemExit(f"the training child failed ({proc.returncode}): {err[-2000:]}")
    return {"peak_rss_mb": round(usage / 1024), **json.loads(out.strip().splitlines()[-1])}


def _usage_of_last_child() -> int:
    """ru_maxrss (KiB) of the child just waited for: RUSAGE_CHILDREN keeps the largest so far, so each
    measurement runs the child from a fresh parent process (`--measure`)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def _child(data: str, cache: str, runs: str) -> None:
    """`catdog train` through its API, 2 epochs; prints the second epoch's training images/s as JSON."""
    import keras

    from catdog import config
    from catdog.console import set_quiet
    from catdog.training.train import train

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    seconds: list[float] = []
    source = [f"shards={Path(runs).parent / 'shards'}", "cache=none"] if cache == "shards" else [f"cache={cache}"]
    cfg = config.resolve("tiny", [*TRAIN, f"data={data}", *source, f"runs_dir={runs}", "name=scale"])
    set_quiet(True)
    run_dir = train(cfg, callbacks=[EpochTimer()])
    steps = json.loads((run_dir / "data.json").read_text())["counts"]
    train_images = sum(n for key, n in steps.items() if key.startswith("train/"))
    used = train_images // BATCH * BATCH  # full batches only
    chosen = json.loads((run_dir / "state.json").read_text())["cache"]  # what cache=auto took
    chosen = "shards" if cfg.shards else chosen
    print(json.dumps({"chosen": chosen, "epoch_seconds": [round(t, 2) for t in seconds],
                      "images_per_s": round(used / seconds[-1], 1)}))


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rss, speed) = plt.subplots(1, 2, figsize=(10, 4), dpi=100, layout="constrained")
    for cache in dict.fromkeys(r["cache"] for r in rows):
        mine = [r for r in rows if r["cache"] == cache]
        x = [r["images"] for r in mine]
        label = "shards (streamed)" if cache == "shards" else f"cache={cache}"
        rss.plot(x, [r["peak_rss_mb"] for r in mine], marker="o", label=label)
        speed.plot(x, [r["images_per_s"] for r in mine], marker="o", label=label)
    for ax, label in ((rss, "peak RSS of `catdog train` (MB)"), (speed, "training images/s")):
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["images"] for r in rows}), [f"{r:,}" for r in sorted({r["images"] for r in rows})])
        ax.minorticks_off()
        ax.set_xlabel("training pictures (synthetic JPEGs, 96 px net)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle("One training epoch: memory and speed against the number of pictures")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return _child(*sys.argv[2:5])
    if sys.argv[1:2] == ["--replot"]:  # --replot RESULTS.json OUT.png
        return replot(Path(sys.argv[2]), Path(sys.argv[3]))
    if sys.argv[1:2] == ["--measure"]:  # a fresh parent, so RUSAGE_CHILDREN is this one child's
        print(json.dumps(_measured(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))))
        return None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,10000,50000", help="numbers of pictures, comma-separated")
    parser.add_argument("--caches", default="memory,auto,none,disk,shards", help="cache modes, and shards")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "catdog-scale",
                        help="where the pictures are made (kept for the next run)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    parser.add_argument("--plot", type=Path, help="PNG of peak RSS and images/s against the number of pictures")
    args = parser.parse_args()
    rows = run([int(s) for s in args.sizes.split(",")], args.caches.split(","), args.work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "batch_size": BATCH, "train": TRAIN,
                                    "rows": rows}, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)


def replot(results: Path, out: Path) -> None:
    """The figure again from a results file (`--replot`), without training."""
    plot(json.loads(results.read_text())["rows"], out)


if __name__ == "__main__":
    main()
