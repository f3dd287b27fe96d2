"""Prediction speed of candidate models against the shipped one, in one process, in alternating rounds.

    python benchmarks/speed_against_shipped.py runs/lite1-240 runs/lite0-260 [--data train.zip]

Each model on LiteRT float (its `catdog export --format tflite` first; the detector and prototypes
included) over the same test-split JPEGs, with `benchmarks/inference.py`'s measuring functions:
images/s batched and one-image latency, then the cold `catdog predict one.jpg` (median of 3); the
models take turns, twice, so a neighbour's burst or a CPU's turbo hits them alike. Prints each
model's rates and its ratio to the shipped model, and writes benchmarks/results/speed_against_shipped.json.
This is the "within 1.5x of today's speed" check for a model that would replace the shipped one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from inference import cold_start, matmul_gflops, speed  # benchmarks/inference.py, beside this script

from catdog.export import parity
from catdog.inference.predictor import Predictor, expand_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders of the candidates (each with its tflite export)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/dogs-vs-cats/train.zip"))
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed_against_shipped.json"))
    args = parser.parse_args()
    models = {"shipped": None, **{Path(run).name: run for run in args.runs}}
    _, labelled = parity.examples(None, args.data, 0, args.images)
    paths = expand_paths([p for p, _ in labelled])
    predictors = {name: Predictor(model, runtime="tflite") for name, model in models.items()}
    out = {name: dict(images_per_second=[], p50_ms=[], cold_start_s=[]) for name in models}
    gemm = [matmul_gflops()]
    for round_ in range(args.rounds):
        for name, model in models.items():
            figures, _ = speed(predictors[name], paths, paths[:30])
            out[name]["images_per_second"].append(figures["images_per_second"])
            out[name]["p50_ms"].append(figures["p50_ms"])
            out[name]["cold_start_s"].append(cold_start("tflite", model, paths[0], 3))
            print(round_, name, figures, out[name]["cold_start_s"][-1], flush=True)
    gemm.append(matmul_gflops())
    base, base_cold = (np.mean(out["shipped"][k]) for k in ("images_per_second", "cold_start_s"))
    for name, v in out.items():
        v["slower_than_shipped"] = round(float(base / np.mean(v["images_per_second"])), 2)
        v["cold_vs_shipped"] = round(float(np.mean(v["cold_start_s"]) / base_cold), 2)
        print(f"{name:<16} images/s {v['images_per_second']} ({v['slower_than_shipped']}x slower)  "
              f"p50 ms {v['p50_ms']}  cold s {v['cold_start_s']} ({v['cold_vs_shipped']}x)")
    Path(args.out).write_text(json.dumps(dict(models=out, matmul_gflops=gemm, images=len(paths)), indent=2) + "\n")


if __name__ == "__main__":
    main()
