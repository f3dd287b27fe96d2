"""`catdog SUBCOMMAND ...`: each subcommand is one call into the Python API of the same name.

    catdog download                          # Microsoft's Cats-and-Dogs zip into the cache
    catdog prepare --data train.zip          # check every image, write the split manifest
    catdog train --data train.zip [--preset mobilenet] [key=value ...]
    catdog train --resume runs/NAME          # continue an interrupted run
    catdog evaluate runs/NAME [--tta]        # test-split metrics, table + JSON
    catdog evaluate [--model M] --data PATH  # any model on any labelled pictures
    catdog calibrate runs/NAME               # refit temperature and the unknown thresholds
    catdog predict photo.jpg photos/ '*.png' [--model runs/NAME] [--format csv] [--runtime tflite] [--shard I/N]
                   [--explain DIR]           # + a Grad-CAM overlay PNG per image
    catdog merge part-0.jsonl part-1.jsonl   # predict --shard outputs, in input order
    catdog report runs/NAME|EVAL_DIR [--out DIR]   # report.html: curves, errors, calibration, Grad-CAM
    catdog augment-preview photo.jpg [--preset P] [key=value ...]   # what training augmentation does
    catdog launch --workers 2 -- train --distributed name=NAME ...   # local multi-worker training
    catdog serve [--model runs/NAME] [--port 8000] [--api-key KEY]   # REST API + web page
    catdog export [RUN] --format savedmodel|tflite|tflite-int8 [--data train.zip]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys


def _download(args) -> int:
    from catdog.download import download

    print(download(args.url, args.dest, sha256=args.sha256))
    return 0


def _prepare(args) -> int:
    from catdog.data import prepare

    work = prepare(args.data, args.val_fraction, args.test_fraction, force=args.force)
    report = json.loads((work / "report.json").read_text())
    print(f"{report['images']} images from {report['settings']['source']} -> {work}/manifest.csv")
    for key, count in report["counts"].items():
        print(f"  {key:<10} {count}")
    for reason, count in report["skipped_by_reason"].items():
        print(f"  skipped {count}: {reason}")
    for item in report["skipped_files"][:20]:
        print(f"    {item['path']}: {item['reason']}", file=sys.stderr)
    return 0


def _train(args) -> int:
    from catdog import config
    from catdog.train import train

    if args.resume:
        if args.overrides or args.data:
            raise config.ConfigError("--resume takes the run's own config.json; drop the overrides")
        print(train(resume=args.resume))
        return 0
    overrides = list(args.overrides) + ([f"data={args.data}"] if args.data else [])
    cfg = config.resolve(args.preset, overrides)
    if args.distributed:
        from catdog import distributed

        print(distributed.train(cfg))
    else:
        print(train(cfg))
    return 0


def _launch(args) -> int:
    from catdog.launch import launch

    command = args.command_[1:] if args.command_[:1] == ["--"] else args.command_
    return launch(command, workers=args.workers, retries=args.retries)


def _merge(args) -> int:
    from catdog.shards import merge

    merge(args.shards, sys.stdout)
    return 0


def _evaluate(args) -> int:
    from catdog.config import ConfigError
    from catdog.evaluate import evaluate, evaluate_data, format_table

    if args.data:
        if args.run and args.model:
            raise ConfigError("give the model once: RUN or --model, not both")
        result = evaluate_data(args.data, args.model or args.run, args.split, args.out, tta=args.tta,
                               batch_size=args.batch_size)
        print(format_table(result))
        print(f"-> {result['out']} (metrics.json, predictions.csv; `catdog report {result['out']}`)")
        return 0
    if not args.run or args.model or args.out:
        raise ConfigError("evaluate RUN scores a run on its own split; --model and --out go with --data PATH")
    if args.split == "all":
        raise ConfigError("--split all needs --data PATH")
    print(format_table(evaluate(args.run, args.split or "test", tta=args.tta, batch_size=args.batch_size)))
    return 0


def _calibrate(args) -> int:
    from catdog.calibrate import calibrate

    print(json.dumps(calibrate(args.run, unknown_budget=args.unknown_budget), indent=2))
    return 0


def _predict(args) -> int:
    from tqdm import tqdm

    from catdog.predict import Predictor, expand_paths

    predictor = Predictor(args.model, batch_size=args.batch_size, tta=args.tta,
                          unknown=False if args.no_unknown else None, runtime=args.runtime)
    paths = expand_paths(args.paths)
    if args.shard:
        from catdog.shards import parse_shard, select

        paths = select(paths, *parse_shard(args.shard))
    # On stderr, only for a terminal, and only once a run has lasted 2 s: stdout stays machine-readable.
    progress = tqdm(total=len(paths), unit="img", delay=2, file=sys.stderr, disable=not sys.stderr.isatty())
    failed, rows = 0, []
    writer = None
    if args.format == "csv":
        fields = ["path", "label", "p_dog", "p_pet", "pet_energy", "error"]
        writer = csv.DictWriter(sys.stdout, fields, lineterminator="\n")
        writer.writeheader()
    explain = _overlay_writer(predictor, args.explain) if args.explain else None
    for record in predictor.predict_paths(paths):
        progress.update()
        if explain and "error" not in record:
            explain(record["path"])
        failed += "error" in record
        rows.append(record)
        if writer:
            writer.writerow(record)
        else:
            print(json.dumps(record, ensure_ascii=False), flush=True)
    progress.close()
    if args.kaggle_submission:
        _write_submission(args.kaggle_submission, rows)
    if failed:
        print(f"catdog: {failed} of {len(rows)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def _overlay_writer(predictor, folder: str):
    """A function saving a Grad-CAM overlay PNG of each path into `folder` (names made unique)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from catdog.explain import Explainer, save_overlay
    from catdog.images import load_image
    from catdog.runtime import keras_source

    explainer = Explainer(keras_source(predictor.path))  # LiteRT gives no gradients: its Keras model
    used: set[str] = set()

    def write(path: str) -> None:
        image = Image.fromarray(load_image(path))
        image.thumbnail((768, 768))  # enough to see where it looked; a 12 MP overlay helps nobody
        stem, n = Path(path).stem, 1
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        save_overlay(Path(folder) / name, explainer.overlay(np.asarray(image)))

    return write


def _report(args) -> int:
    from catdog.report import report

    print(report(args.path, out=args.out))
    return 0


def _augment_preview(args) -> int:
    from pathlib import Path

    from catdog import config
    from catdog.plots import augmentation_preview

    cfg = config.resolve(args.preset, args.overrides)
    out = args.out or f"{Path(args.image).stem}-augmented.png"
    print(augmentation_preview(args.image, cfg, out, count=args.count, seed=args.seed))
    return 0


def _serve(args) -> int:
    from catdog.serving import serve

    key = {"api_key": args.api_key} if args.api_key else {}  # else serve() reads $CATDOG_API_KEY
    serve(args.model, host=args.host, port=args.port, runtime=args.runtime,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_files=args.max_files, timeout_s=args.timeout,
          queue_size=args.queue_size, cors_origins=tuple(args.cors_origin), **key)
    return 0


def _export(args) -> int:
    from catdog.export import export, summary

    print(summary(export(args.run, args.format, out=args.out, data=args.data, check_images=args.check_images)))
    return 0


def _write_submission(path: str, rows: list[dict]) -> None:
    """Kaggle's `id,label` with label = P(dog), id = the numeric file name (test1/123.jpg)."""
    scored = []
    for row in rows:
        if "p_dog" in row:
            stem = os.path.splitext(os.path.basename(row["path"]))[0]
            scored.append((int(stem) if stem.isdigit() else stem, row["p_dog"]))
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "label"])
        out.writerows(sorted(scored, key=lambda item: (isinstance(item[0], str), item[0])))


def build_parser() -> argparse.ArgumentParser:
    from catdog.download import MICROSOFT_URL

    from catdog import __version__

    parser = argparse.ArgumentParser(prog="catdog", description="Tell dogs from cats.")
    parser.add_argument("--version", action="version", version=f"catdog {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's and LiteRT's own log lines")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch Microsoft's Cats-and-Dogs zip into the cache")
    p.add_argument("--url", default=MICROSOFT_URL)
    p.add_argument("--dest", help="folder to save into (default: $CATDOG_HOME/downloads)")
    p.add_argument("--sha256", help="expected SHA-256 of the file")
    p.set_defaults(func=_download)

    p = sub.add_parser("prepare", help="check every image, write a deterministic split manifest")
    p.add_argument("--data", help="train.zip or a folder (default: $CATDOG_DATA, then the cache)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--force", action="store_true", help="redo even if a manifest exists")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model into runs/NAME")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=5")
    p.add_argument("--preset", default="scratch", help="scratch (default), mobilenet or tiny")
    p.add_argument("--data", help="train.zip or a folder (same as data=PATH)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--distributed", action="store_true",
                   help="train as one of the TF_CONFIG workers (MultiWorkerMirroredStrategy); needs name=")
    p.set_defaults(func=_train)

    p = sub.add_parser("launch", help="run a catdog command as N local TF_CONFIG workers",
                       description="e.g. catdog launch --workers 2 -- train --distributed --preset tiny name=x")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--retries", type=int, default=3, help="restarts of the group after a worker dies")
    p.add_argument("command_", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=_launch)

    p = sub.add_parser("evaluate", help="metrics of a run on its test split, or of any model on labelled pictures",
                       description="catdog evaluate RUN (its test split) | catdog evaluate [--model M] --data PATH")
    p.add_argument("run", nargs="?", help="run folder")
    p.add_argument("--model", help="with --data: run folder or .keras file (default: the shipped model)")
    p.add_argument("--data", help="labelled pictures, zip or folder in any layout `prepare` accepts: scored "
                                  "whole, or on the model's own test split when they are its training data")
    p.add_argument("--split", choices=["train", "val", "test", "all"],
                   help="which split to score (default: test; with --data, test of the model's own data, else all)")
    p.add_argument("--out", help="with --data: folder for metrics.json and predictions.csv "
                                 "(default: evaluations/MODEL-on-DATA-SPLIT)")
    p.add_argument("--tta", action="store_true", help="average with the mirrored image")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("calibrate", help="refit temperature and the unknown thresholds on validation")
    p.add_argument("run", help="run folder")
    p.add_argument("--unknown-budget", type=float, metavar="SHARE",
                   help="share of validation pets the unknown detector may give up (default: the run's config)")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("predict", help="classify image files, folders or globs")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", help="run folder, .keras or .tflite file (default: the shipped model)")
    p.add_argument("--runtime", choices=["auto", "keras", "tflite", "tflite-int8"], default="auto",
                   help="auto (default): LiteRT float32 where the model has that export (the shipped one "
                        "does), else Keras; a .tflite --model always runs on LiteRT")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--kaggle-submission", metavar="CSV", help="also write Kaggle's id,label file")
    p.add_argument("--tta", action="store_true", help="average with the mirrored image")
    p.add_argument("--no-unknown", action="store_true", help="always answer cat or dog, never unknown")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard", metavar="I/N", help="predict only inputs k with k mod N == I (then `catdog merge`)")
    p.add_argument("--explain", metavar="DIR", help="also save a Grad-CAM overlay PNG per image into DIR")
    p.set_defaults(func=_predict)

    p = sub.add_parser("report", help="HTML report with plots of a run or an evaluation (self-contained)")
    p.add_argument("path", metavar="RUN_OR_EVAL_DIR",
                   help="run folder (its test split, scored if not yet) or a folder from `evaluate --data`")
    p.add_argument("--out", help="folder for report.html and its PNGs (default: PATH/report)")
    p.set_defaults(func=_report)

    p = sub.add_parser("augment-preview", help="a grid of one picture under the training augmentation")
    p.add_argument("image")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. zoom=0.3")
    p.add_argument("--preset", default="scratch", help="scratch (default), mobilenet or tiny")
    p.add_argument("--out", help="PNG to write (default: IMAGE-augmented.png in the current folder)")
    p.add_argument("--count", type=int, default=11, help="augmented draws beside the original")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_augment_preview)

    p = sub.add_parser("merge", help="join the outputs of predict --shard 0/N ... N-1/N in input order")
    p.add_argument("shards", nargs="+", metavar="FILE", help="shard outputs, shard 0 first")
    p.set_defaults(func=_merge)

    p = sub.add_parser("serve", help="REST API and web page over the model (FastAPI + uvicorn)")
    p.add_argument("--model", help="run folder or .keras file (default: the shipped model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--runtime", choices=["auto", "keras", "tflite", "tflite-int8"], default="auto",
                   help="as for predict: auto (default) runs LiteRT float32 where the model has that export")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (default: $CATDOG_API_KEY)")
    p.add_argument("--max-upload-mb", type=float, default=10, help="largest image accepted, in MiB")
    p.add_argument("--max-files", type=int, default=16, help="most images in one request")
    p.add_argument("--timeout", type=float, default=30, help="seconds before a request is answered 504")
    p.add_argument("--queue-size", type=int, default=64, help="images waiting for the model before 503")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow this browser origin (repeatable); CORS is off without it")
    p.set_defaults(func=_serve)

    p = sub.add_parser("export", help="write SavedModel / TFLite, checked against the Keras model")
    p.add_argument("run", nargs="?", help="run folder or .keras file (default: the shipped model)")
    p.add_argument("--format", choices=["savedmodel", "tflite", "tflite-int8"], default="tflite")
    p.add_argument("--out", help="file (folder for savedmodel) to write; default: beside the model, "
                                 "or in the current folder for the shipped model")
    p.add_argument("--data", help="labelled pictures (zip or folder, split as `catdog prepare` does) whose "
                                  "test split checks parity and train split calibrates int8 "
                                  "(default: the run's own splits)")
    p.add_argument("--check-images", type=int, default=0, metavar="N",
                   help="parity check on a sample of N test images (default: the whole test split)")
    p.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "augment-preview" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # key=value after an option: argparse leaves them over
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from catdog.runtime import set_verbose

    set_verbose(args.verbose)  # native log lines: held back unless --verbose
    from catdog.archive import ArchiveError
    from catdog.config import ConfigError
    from catdog.download import DownloadError
    from catdog.errors import ModelError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ArchiveError, DownloadError, ModelError,
            TimeoutError) as error:
        print(f"catdog {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"catdog {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
