"""`catdog audit`'s judging at a scale this machine has no pictures for: N looks made from real ones.

    python benchmarks/audit_scale.py --pictures 500000 [--home $CATDOG_HOME of an audit of train.zip]

The pass over the pictures streams (each picture read, looked at and cached on its own), so its
time grows with N and its memory does not; what could grow faster is the judging of all pictures
together: the split, the near-duplicate search (hashes and feature neighbours), the K-fold label
check, `unusual` and the checks. This runs `catdog.audit.audit.judge` on N looks made from the
looks an audit of train.zip cached (run one first: `catdog audit train.zip`): features drawn as the
real ones spread (each class's mean, their covariance), the rest of each look a real one's, and 1 in
200 planted again as a near copy (`synthetic`). Prints seconds and peak RSS (the looks themselves
included) and writes benchmarks/results/audit_scale.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from catdog.audit.audit import judge
from catdog.audit.scan import FIELDS, LookCache, Looks
from catdog.data.prepare import CLASS_NAMES

COMPONENTS = 256  # directions of the features' covariance kept (the rest: even noise)


def real_looks(home: Path) -> tuple[dict, np.ndarray]:
    """Every cached look of the audit under `home` (its largest cache folder), and a label for each: the
    fine-tuned classifier's answer over its windows (the cache keeps contents, not file names)."""
    folder = max((p for p in (home / "audit").iterdir() if p.is_dir()), key=lambda p: len(list(p.glob("part-*"))))
    cache = LookCache(folder)
    arrays = {name: np.concatenate([part[name] for part in cache.parts]) for name in FIELDS}
    tuned = np.median(arrays["tuned"].astype(np.float32), axis=1)  # the fine-tuned classifier's windows
    return arrays, (tuned > 0).astype(int)


def synthetic(arrays: dict, labels: np.ndarray, n: int, seed: int = 0) -> tuple[Looks, list[tuple[str, str]]]:
    """`n` looks: features drawn from each class's Gaussian (the real features' class means, their shared
    covariance in its top COMPONENTS directions, the rest as even noise), everything else that of a real
    picture of the same class; 1 in 200 then made a near copy of another (features alike, hashes a bit apart)."""
    rng = np.random.default_rng(seed)
    real = arrays["features"].astype(np.float32)
    means = np.stack([real[labels == c].mean(axis=0) for c in (0, 1)])
    residual = real - means[labels]
    _, singular, directions = np.linalg.svd(residual[rng.choice(len(real), min(len(real), 8000), replace=False)],
                                            full_matrices=False)
    scale = singular[:COMPONENTS] / np.sqrt(min(len(real), 8000) - 1)
    rest = np.sqrt(max((singular[COMPONENTS:] ** 2).sum() / (min(len(real), 8000) - 1), 0.0) / real.shape[1])
    label = rng.integers(0, 2, n)
    features = np.empty((n, real.shape[1]), np.float16)
    for start in range(0, n, 50_000):  # float32 only a chunk at a time
        s = slice(start, start + 50_000)
        z = rng.standard_normal((len(label[s]), COMPONENTS)).astype(np.float32) * scale
        features[s] = means[label[s]] + z @ directions[:COMPONENTS] + rest * rng.standard_normal(
            (len(label[s]), real.shape[1])).astype(np.float32)
    by_class = [np.flatnonzero(labels == c) for c in (0, 1)]
    source = np.array([rng.choice(by_class[c]) for c in label])  # logits, windows, statistics
    phash = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    copies = rng.choice(n, n // 200, replace=False)
    originals = rng.integers(0, n, len(copies))
    features[copies] = features[originals]
    phash[copies] = phash[originals] ^ np.uint64(1)  # one bit apart: a recompressed copy
    label[copies], source[copies] = label[originals], source[originals]
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    looks = Looks(digests, [None] * n, features, arrays["logits"][source], arrays["regions"][source],
                  arrays["tuned"][source], phash, arrays["stats"][source])
    return looks, [(f"train/{CLASS_NAMES[c]}.{i}.jpg", CLASS_NAMES[c]) for i, c in enumerate(label)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=500_000)
    parser.add_argument("--home", default=os.environ.get("CATDOG_HOME", str(Path.home() / ".catdog")))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "audit_scale.json"))
    args = parser.parse_args()
    arrays, labels = real_looks(Path(args.home))
    looks, labelled = synthetic(arrays, labels, args.pictures)
    del arrays
    gib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # noqa: E731  (kB -> GiB)
    looks_gib = sum(getattr(looks, f).nbytes for f in FIELDS) / 2**30
    made = gib()
    started = time.perf_counter()
    result = judge(labelled, looks, Path("."))
    seconds = time.perf_counter() - started
    counts: dict[str, int] = {}
    for row in result.rows:
        counts[row["issue"]] = counts.get(row["issue"], 0) + 1
    figures = dict(pictures=args.pictures, from_real_looks=len(labels), judge_seconds=round(seconds, 1),
                   looks_gib=round(looks_gib, 2), peak_rss_gib_before_judging=round(made, 2),
                   peak_rss_gib=round(gib(), 2), flagged=len(result.rows), by_issue=counts, cpus=os.cpu_count())
    print(f"{'pictures':>10} {'judge s':>8} {'looks GiB':>10} {'peak RSS GiB':>13} {'flagged':>8}")
    print(f"{args.pictures:>10,} {seconds:>8.0f} {looks_gib:>10.2f} {figures['peak_rss_gib']:>13.2f} "
          f"{len(result.rows):>8,}")
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
