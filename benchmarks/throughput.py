"""Images per second on this machine: training steps, and prediction with decoding included.

    python benchmarks/throughput.py --data ../shared/datasets/dogs-vs-cats/train.zip --model runs/NAME

Prints a table and writes benchmarks/results/throughput.json. Measured, never asserted: timing
targets live here, not in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from catdog import config  # noqa: E402
from catdog.data.pipeline import make_dataset  # noqa: E402
from catdog.data.prepare import load_split, prepare, read_report  # noqa: E402
from catdog.inference.predictor import Predictor  # noqa: E402
from catdog.models.builders import build_model, precision, unfreeze_top  # noqa: E402
from catdog.training.train import compile_model  # noqa: E402


def _split(cfg, split, n):
    work = prepare(cfg.data)
    return load_split(work / "manifest.csv", read_report(work)["root"], split, n, cfg.seed)


def train_speed(spec: str, data_path: str, steps: int) -> dict:
    """Steady-state training images/s (pixels cached, augmentation on), after one warm-up pass.

    `spec` is a preset, optionally with overrides: "scratch,precision=bfloat16".
    """
    preset, *overrides = spec.split(",")
    cfg = config.resolve(preset, [f"data={data_path}", *overrides])
    examples = _split(cfg, "train", cfg.batch_size * steps)
    with precision(cfg.precision):
        model = build_model(cfg)
        if cfg.model != "scratch":
            unfreeze_top(model, cfg.fine_tune_layers)
        compile_model(model, cfg, cfg.learning_rate, steps, 2)
        ds = make_dataset(examples, cfg, training=True)
        started = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)  # decodes, caches, traces
        first = time.perf_counter() - started
        started = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        steady = time.perf_counter() - started
    flops = _forward_flops(model, cfg.image_size)
    return dict(what=f"train {spec} ({cfg.model}, {cfg.image_size}px)", images=len(examples),
                images_per_second=round(len(examples) / steady, 1),
                first_epoch_images_per_second=round(len(examples) / first, 1),
                gflops_per_image_forward=flops)


def _forward_flops(model, size: int) -> float | None:
    """Forward FLOPs per image from TensorFlow's profiler (None where it cannot count)."""
    try:
        from tensorflow.python.profiler import model_analyzer, option_builder

        fn = tf.function(lambda x: model(x, training=False))
        graph = fn.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32)).graph
        opts = option_builder.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        return round(model_analyzer.profile(graph, options=opts).total_float_ops / 1e9, 3)
    except Exception:  # the profiler is a private API; a missing figure beats a failed benchmark
        return None


def predict_speed(model: str | None, data_path: str, n: int) -> list[dict]:
    """Prediction images/s from JPEG files (decode included): batched Predictor vs. one at a time."""
    predictor = Predictor(model, batch_size=64)
    cfg = config.resolve("scratch", [f"data={data_path}"])
    paths = [str(e.path) for e in _split(cfg, "test", n)]
    list(predictor.predict_paths(paths[:64]))  # trace and warm up
    started = time.perf_counter()
    records = list(predictor.predict_paths(paths))
    batched = time.perf_counter() - started
    assert not any("error" in r for r in records)

    # The tutorials' loop: load one image, call model.predict on it, repeat.
    few = paths[:40]
    predictor.model.predict(np.zeros((1, predictor.image_size, predictor.image_size, 3)), verbose=0)
    started = time.perf_counter()
    for path in few:
        image = keras.utils.load_img(path, target_size=(predictor.image_size,) * 2)
        predictor.model.predict(np.asarray(image)[None].astype("float32"), verbose=0)
    loop = time.perf_counter() - started

    plain = Predictor(model, batch_size=64, unknown=False)
    list(plain.predict_paths(paths[:64]))
    started = time.perf_counter()
    list(plain.predict_paths(paths))
    no_unknown = time.perf_counter() - started

    single = Predictor(model, batch_size=1)
    list(single.predict_paths(paths[:2]))
    started = time.perf_counter()
    list(single.predict_paths(few))
    latency = (time.perf_counter() - started) / len(few)
    name = predictor.meta.get("model", "?")
    return [
        dict(what=f"predict {name}, Predictor batch 64", images=len(paths), images_per_second=round(len(paths) / batched, 1)),
        dict(what=f"predict {name}, Predictor batch 64, --no-unknown", images=len(paths),
             images_per_second=round(len(paths) / no_unknown, 1)),
        dict(what=f"predict {name}, one image per call", images=len(few), images_per_second=round(1 / latency, 1),
             latency_ms=round(latency * 1000, 1)),
        dict(what=f"predict {name}, tutorial loop (model.predict per image)", images=len(few),
             images_per_second=round(len(few) / loop, 1)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/dogs-vs-cats/train.zip"))
    parser.add_argument("--model", help="run folder or .keras (default: the shipped model)")
    parser.add_argument("--presets", nargs="*", default=["scratch", "scratch,precision=bfloat16", "mobilenet"],
                        help="presets to time training, each with optional overrides: scratch,precision=bfloat16")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--predict-images", type=int, default=1000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = parser.parse_args()

    rows = [train_speed(p, args.data, args.train_steps) for p in args.presets]
    rows += predict_speed(args.model, args.data, args.predict_images)
    width = max(len(r["what"]) for r in rows)
    print(f"{'what':<{width}}  {'images':>6}  {'img/s':>7}  extra")
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("what", "images", "images_per_second")}
        print(f"{r['what']:<{width}}  {r['images']:>6}  {r['images_per_second']:>7}  {extra or ''}")
    machine = dict(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(),
                   tensorflow=tf.__version__, keras=keras.__version__)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, rows=rows), indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
