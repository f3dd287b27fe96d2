"""The input pipeline on real photos: pictures from their files against the same pictures from shards.

    python benchmarks/shards.py --data ../shared/datasets/dogs-vs-cats/train.zip [--images 4000]

Prepares the data, writes the training split's first `--images` pictures' shards (`catdog
prepare --shards`, at 224 px), then times `make_dataset`'s training batches (the lite0 preset's
augmentation, cache=none: streamed, decoded every epoch) through one epoch from each, in the
same process, after a warm-up epoch; then the same without augmentation (decoding alone). No
model runs: this is the rate the pipeline can feed a step at. Prints a table; writes
benchmarks/results/shards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _epoch_rate(examples, cfg) -> float:
    """Pictures per second through one training epoch of `make_dataset` (after one to warm up)."""
    from catdog.data.pipeline import make_dataset

    ds = make_dataset(examples, cfg, training=True, epochs=(0, 2))
    steps = len(examples) // cfg.batch_size
    batches = iter(ds)
    for _ in range(steps):  # epoch 0: tracing, thread pools, the files in the page cache
        next(batches)
    started = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * cfg.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="train.zip or a folder")
    parser.add_argument("--images", type=int, default=4000, help="training pictures to time (whole shards)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "catdog-shards-bench")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "shards.json")
    args = parser.parse_args()
    os.environ.setdefault("CATDOG_HOME", str(args.work / "home"))

    from catdog import config
    from catdog.data import prepare as data
    from catdog.data import shards

    cfg = config.resolve("lite0", [f"data={args.data}", "cache=none"])
    work = data.prepare(cfg.data)
    report = data.read_report(work)
    per_shard = 1000
    count = max(per_shard, args.images // per_shard * per_shard)
    folder = str(args.work / "shards")
    started = time.perf_counter()
    shards.write(work, folder, cfg.image_size, per_shard=per_shard)
    written = time.perf_counter() - started
    train = data.load_split(work / "manifest.csv", report["root"], "train")[:count]
    rows = []
    for augment in (True, False):  # the preset's pipeline; then decoding alone
        for source, changes in (("files (cache=none)", {}), ("shards", {"shards": folder})):
            timed = config.override(cfg, {**changes, "augment": augment})
            rows.append({"source": source, "augment": augment, "images_per_s": round(_epoch_rate(train, timed), 1)})
    shard_bytes = sum(os.path.getsize(p) for p in Path(folder).glob("*.tfrecord"))
    result = {"command": " ".join(sys.argv), "cpus": os.cpu_count(), "image_size": cfg.image_size,
              "batch_size": cfg.batch_size, "pictures_timed": count, "rows": rows,
              "shards_write_seconds": round(written, 1), "pictures_written": report["images"],
              "shard_kb_per_picture": round(shard_bytes / report["images"] / 1024, 1),
              "ratio": [round(rows[i + 1]["images_per_s"] / rows[i]["images_per_s"], 2) for i in (0, 2)]}
    print(f"{'source':<20} {'augment':>8} {'images/s':>9}")
    for row in rows:
        print(f"{row['source']:<20} {str(row['augment']):>8} {row['images_per_s']:>9}")
    print(f"shards / files: {result['ratio'][0]}x augmented, {result['ratio'][1]}x decoding alone; writing {report['images']:,} pictures took {written:.0f} s "
          f"({result['shard_kb_per_picture']} KB a picture)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
