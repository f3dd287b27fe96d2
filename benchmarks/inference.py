"""Prediction speed per runtime (Keras, LiteRT float32, LiteRT int8), against this machine's ceiling.

    python benchmarks/inference.py --data ../shared/datasets/dogs-vs-cats/train.zip [--model runs/NAME]

Per runtime: images/s of `Predictor.predict_paths` over a folder of JPEGs (decoding and the unknown
detector included), warm one-image latency (p50 / p99, decode included), the cold-start wall time
of `catdog predict one.jpg`, and answers on the same pictures (accuracy, agreement with Keras).
In the same run: numpy's float32 matmul rate divided by the model's FLOPs per image (the ceiling),
JPEG decoding alone, and the naive loop (`keras.utils.load_img` + `model.predict` per image).
Then `--ray-workers` rows (default 1 and 2 actors; `pip install -e ".[ray]"`, none without it):
`catdog predict --engine ray` on a local Ray over the same pictures with the default runtime
(LiteRT float32), images/s with start-up excluded, the fixed cost of a run (starting and
stopping Ray and its actors), the cold `catdog predict one.jpg --engine ray`, and whether its
records are the plain `Predictor`'s, byte for byte. (`--runtimes tflite --out ...` for these
and the plain row alone.)
Prints a table and writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from catdog.data.images import load_image
from catdog.export import parity
from catdog.inference.predictor import Predictor, expand_paths

RUNTIMES = ("keras", "tflite", "tflite-int8")


def ensure_exports(model: str | None, runtimes: list[str], data: str) -> None:
    """Makes each LiteRT export that `runtimes` need and the model lacks (as `catdog export` does),
    saying so in one line first: the shipped model comes with its float32 export only."""
    from catdog.export import exporter
    from catdog.inference import model_files

    for runtime in runtimes:
        if runtime == "keras":
            continue
        try:
            model_files.resolve(model, runtime)
        except FileNotFoundError as missing:
            print(f"{missing}; making it first: catdog export {model or ''} --format {runtime} "
                  f"--data {data}".replace("  ", " "), flush=True)
            exporter.export(model, runtime, data=data, check_images=200)


def matmul_gflops(n: int = 2048, repeats: int = 8) -> float:
    """numpy float32 GEMM rate on every core, best of `repeats`: what the arithmetic units sustain here.

    2048 rather than 1024: a 1024 product is too short to reach the steady rate (69 vs 207
    GFLOP/s measured here, both cores); the best of several keeps a neighbour's burst out.
    """
    a, b = (np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return best


def model_gflops(predictor: Predictor) -> float:
    """Forward FLOPs per image of the Keras model (TensorFlow's profiler), unknown detector included."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    size = predictor.image_size
    fn = tf.function(lambda x: predictor.model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32)).graph
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return model_analyzer.profile(graph, options=opts).total_float_ops / 1e9


def speed(predictor: Predictor, paths: list[str], single: list[str]) -> dict:
    list(predictor.predict_paths(paths[:predictor.batch_size]))  # trace, plan, warm caches
    started = time.perf_counter()
    records = list(predictor.predict_paths(paths))
    seconds = time.perf_counter() - started
    latencies = []
    for path in single:
        started = time.perf_counter()
        list(predictor.predict_paths([path]))
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return dict(images_per_second=round(len(paths) / seconds, 1), p50_ms=round(statistics.median(latencies), 2),
                p99_ms=round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2)), records


def cold_start(runtime: str, model: str | None, image: str, repeats: int, *extra: str) -> float:
    """Median wall time of `catdog predict one.jpg` in a fresh process (the OS file cache warm)."""
    command = [sys.executable, "-m", "catdog.cli", "predict", image, "--runtime", runtime, *extra]
    command += ["--model", model] if model else []
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def ray_speed(paths: list[str], model: str | None, workers: int, batch_size: int,
              repeat: int) -> tuple[dict, list[dict]]:
    """`catdog predict --engine ray --workers N` (the Python function behind it) on a local Ray.

    Run twice, over the pictures and over them `repeat` times: the extra pictures over the extra
    time is the rate with start-up excluded (Ray hands records back in bursts, so timing them
    one by one would not do), and the rest of the first run's wall time is the fixed cost:
    starting Ray and the actors, loading their models, stopping it all.
    """
    from catdog.inference import engines

    def run(inputs: list[str]) -> tuple[float, list[dict]]:
        started = time.perf_counter()
        records = list(engines.predict(inputs, model=model, runtime="tflite", engine="ray", workers=workers,
                                       batch_size=batch_size))
        return time.perf_counter() - started, records

    once, records = run(paths)
    more, _ = run(paths * repeat)
    rate = len(paths) * (repeat - 1) / (more - once)
    return dict(images_per_second=round(rate, 1), fixed_cost_s=round(once - len(paths) / rate, 2),
                wall_s=round(once, 2)), records


def naive_loop(predictor: Predictor, paths: list[str]) -> float:
    """The tutorials' loop: load one image, `model.predict` it, repeat (images/s)."""
    import keras

    model, size = predictor.model, predictor.image_size
    model.predict(np.zeros((1, size, size, 3)), verbose=0)
    started = time.perf_counter()
    for path in paths:
        image = keras.utils.load_img(path, target_size=(size, size))
        model.predict(np.asarray(image)[None].astype("float32"), verbose=0)
    return round(len(paths) / (time.perf_counter() - started), 1)


def decode_rate(paths: list[str], size: int) -> float:
    started = time.perf_counter()
    for path in paths:
        load_image(path, size=size)
    return round(len(paths) / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/dogs-vs-cats/train.zip"))
    parser.add_argument("--model", help="run folder (default: the shipped model and its TFLite forms)")
    parser.add_argument("--runtimes", nargs="*", default=list(RUNTIMES))
    parser.add_argument("--images", type=int, default=500, help="test-split pictures for the batch and accuracy figures")
    parser.add_argument("--single", type=int, default=50, help="one-image calls for the latency figures")
    parser.add_argument("--cold", type=int, default=3, help="fresh processes per cold-start figure")
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2],
                        help="actor counts of the Ray rows (none: no Ray rows)")
    parser.add_argument("--ray-repeat", type=int, default=4,
                        help="the second Ray run goes over the pictures this many times")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    args = parser.parse_args()
    if not Path(args.data).exists():
        parser.error(f"--data: {args.data} does not exist (the int8 export and the figures need labelled pictures)")
    ensure_exports(args.model, args.runtimes, args.data)

    _, labelled = parity.examples(None, args.data, 0, args.images)  # a sample of the test split
    paths, labels = [p for p, _ in labelled], np.array([y for _, y in labelled])
    paths = expand_paths(paths)
    rows, answers = [], {}
    gemm = matmul_gflops()
    for runtime in args.runtimes:
        predictor = Predictor(args.model, runtime=runtime)
        figures, records = speed(predictor, paths, paths[:args.single])
        answers[runtime] = [r["label"] for r in records]
        p_dog = np.array([r["p_dog"] for r in records])
        rows.append(dict(runtime=runtime, file=predictor.path.name, **figures,
                         cold_start_s=cold_start(runtime, args.model, paths[0], args.cold),
                         accuracy=round(float(np.mean((p_dog >= 0.5) == labels)), 4)))
    plain = Predictor(args.model, runtime="tflite")
    plain_records = list(plain.predict_paths(paths))
    ray_rows = []
    for workers in args.ray_workers if _has_ray() else []:
        figures, records = ray_speed(paths, args.model, workers, plain.batch_size, args.ray_repeat)
        ray_rows.append(dict(runtime=f"ray-{workers}", workers=workers, **figures,
                             same_records_as_plain=records == plain_records,
                             cold_start_s=cold_start("tflite", args.model, paths[0], args.cold, "--engine", "ray",
                                                     "--workers", str(workers))))
    reference = answers.get("keras")
    for row in rows:
        if reference:
            row["agreement_with_keras"] = round(float(np.mean(np.array(answers[row["runtime"]]) == reference)), 4)
    keras_predictor = Predictor(args.model, runtime="keras")
    flops = model_gflops(keras_predictor)
    gemm = max(gemm, matmul_gflops())  # measured again at the end: a neighbour's burst hits only one
    ceiling = gemm / flops
    for row in rows:
        row["share_of_ceiling"] = round(row["images_per_second"] / ceiling, 2)
    extra = dict(matmul_gflops=round(gemm, 1), model_gflops_per_image=round(flops, 3),
                 ceiling_images_per_second=round(ceiling, 1),
                 decode_only_images_per_second=decode_rate(paths[:200], keras_predictor.image_size),
                 naive_loop_images_per_second=naive_loop(keras_predictor, paths[:30]))
    fastest = max(rows, key=lambda r: r["images_per_second"])
    keras_row = next((r for r in rows if r["runtime"] == "keras"), None)
    if keras_row:
        extra["fastest_vs_keras_batched"] = round(fastest["images_per_second"] / keras_row["images_per_second"], 2)
    extra["fastest_vs_naive_loop"] = round(fastest["images_per_second"] / extra["naive_loop_images_per_second"], 1)

    print(f"{'runtime':<12} {'img/s':>7} {'ceiling':>7} {'p50 ms':>7} {'p99 ms':>7} {'cold s':>7} "
          f"{'accuracy':>8} {'agree':>6}")
    for r in rows:
        print(f"{r['runtime']:<12} {r['images_per_second']:>7} {r['share_of_ceiling']:>7.0%} {r['p50_ms']:>7} "
              f"{r['p99_ms']:>7} {r['cold_start_s']:>7} {r['accuracy']:>8.2%} {r.get('agreement_with_keras', 1):>6.1%}")
    tflite_row = next((r for r in rows if r["runtime"] == "tflite"), None)
    if ray_rows:
        print(f"\n{'engine':<12} {'img/s':>7} {'vs plain':>8} {'fixed s':>7} {'wall s':>7} {'cold s':>7} {'same':>5}")
    for r in ray_rows:
        if tflite_row:
            r["vs_plain_predictor"] = round(r["images_per_second"] / tflite_row["images_per_second"], 3)
        print(f"{r['runtime']:<12} {r['images_per_second']:>7} {r.get('vs_plain_predictor', 0):>8.0%} "
              f"{r['fixed_cost_s']:>7} {r['wall_s']:>7} {r['cold_start_s']:>7} {str(r['same_records_as_plain']):>5}")
    for key, value in extra.items():
        print(f"{key}: {value}")
    result = dict(machine=dict(cpus=os.cpu_count(), processor=platform.machine(),
                               load_average=os.getloadavg()), images=len(paths), rows=rows, ray_rows=ray_rows,
                  **extra)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


if __name__ == "__main__":
    main()
