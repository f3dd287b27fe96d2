"""`catdog SUBCOMMAND ...`: each subcommand is one call into the Python API of the same name.

    catdog download                          # Microsoft's Cats-and-Dogs zip into the cache
    catdog prepare --data train.zip [val_fraction=0.1 test_fraction=0.1]   # check every image, write the split
    catdog prepare --data train.zip --shards DIR   # ... and write it as TFRecord shards (train shards=DIR)
    catdog config [--preset P | --config FILE] [key=value ...]           # the resolved config, explained
    catdog train --data train.zip [--preset mobilenet | --config runs/X/config.json] [key=value ...]
    catdog train --resume runs/NAME          # continue an interrupted or failed run
    catdog evaluate runs/NAME [--tta] [batch_size=64]   # test-split metrics, table + JSON
    catdog evaluate [--model M] --data PATH  # any model on any labelled pictures
    catdog calibrate runs/NAME [unknown_budget=0.01]    # refit temperature and the unknown thresholds
    catdog predict photo.jpg photos/ '*.png' [--model runs/NAME] [--format csv] [--runtime tflite] [--shard I/N]
                   [--explain DIR]           # + a Grad-CAM overlay PNG per image
    catdog predict --engine ray [--workers N] photos/ [--from-list FILE] [--max-errors N] [--order completion]
    catdog merge part-0.jsonl part-1.jsonl   # predict --shard outputs, in input order
    catdog report runs/NAME|EVAL_DIR [--out DIR]   # report.html: curves, errors, calibration, Grad-CAM
    catdog audit train.zip [--format csv] [--report DIR] [--exclude-out FILE]   # suspicious pictures first
    catdog augment-preview photo.jpg [--preset P] [key=value ...]   # what training augmentation does
    catdog launch --workers 2 -- train --distributed name=NAME ...   # local multi-worker training
    catdog serve [--model runs/NAME] [--port 8000] [--api-key KEY]   # REST API + web page
    catdog export [RUN] --format savedmodel|tflite|tflite-int8 [--data train.zip]

The contract scripts rely on: stdout carries results only (JSON lines, CSV, a table, a path);
progress and messages go to stderr, progress bars only on a terminal and never with --quiet;
every error is one line `catdog: ...` on stderr and an exit status from `catdog.errors`
(0 done, 1 some inputs failed, 2 usage / config / data / model error, 70 a bug, 75 a preempted
--distributed worker to start again, 130 interrupted).
Handlers check what they were given before importing TensorFlow or touching anything.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import traceback

from catdog import config, console, presets
from catdog.errors import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USAGE, CatdogError, DataError, UsageError

EPILOG = """\
exit status:
  0    done
  1    some inputs failed; every other input was still answered
  2    usage, config, data or model error: nothing was created or changed
  70   a bug in catdog: rerun with --debug (or CATDOG_DEBUG=1) and report the traceback
  75   train --distributed: a worker of the group got SIGTERM, every worker checkpointed the
       same step; the same command resumes there (catdog launch restarts the group itself)
  130  interrupted (Ctrl-C); an interrupted run says so in its folder and resumes with --resume

stdout carries results only (JSON lines, CSV, tables, the run path); progress and messages go
to stderr (progress bars only on a terminal; --quiet for none). Config values are set as
key=value everywhere; `catdog config` lists every key with its meaning.

presets (--preset):
""" + "\n".join(f"  {name:<10} {note}" for name, note in presets.PRESET_NOTES.items())


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one UsageError line, not usage text and exit."""

    def error(self, message):
        where = self.prog.removeprefix("catdog").strip()
        raise UsageError(f"{where + ': ' if where else ''}{message} (see {self.prog} --help)")


def _heavy(module: str):
    """Imports a module that loads TensorFlow, holding back its native log lines."""
    with console.quiet_stderr():
        return importlib.import_module(module)


def _settings(pairs, allowed, **flags) -> dict:
    """key=value items (limited to `allowed`) and the older flags that alias them, parsed and checked."""
    values = config.parse_pairs(pairs, allowed)
    for key, value in flags.items():
        if value is not None:
            if key in values:
                raise UsageError(f"{key} is given twice (as key=value and as a flag)")
            values[key] = config.parse_value(key, value)
    return values


def _download(args) -> int:
    from catdog.data.download import download

    print(download(args.url, args.dest, sha256=args.sha256))
    return 0


def _prepare(args) -> int:
    from catdog.data.prepare import format_summary, prepare, read_report, skipped_lines

    kw = _settings(args.settings, ("data", "val_fraction", "test_fraction", "split_seed", "exclude", "relabel",
                                   "near_duplicate_bits"), data=args.data,
                   val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    cfg = config.override(config.Config(), kw)  # checks the fractions together
    work = prepare(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, force=args.force,
                   exclude=cfg.exclude, relabel=cfg.relabel, near_duplicate_bits=cfg.near_duplicate_bits)
    report = read_report(work)
    print(format_summary(work, report))
    for line in skipped_lines(work, report):
        print(f"catdog: {line}", file=sys.stderr)
    if args.shards:
        from catdog.data import shards

        bar = console.progress_bar(total=report["images"], unit="picture", desc="shards")
        index = shards.write(work, args.shards, args.image_size, args.shard_size, progress=bar.update)
        bar.close()
        files = sum(len(split["files"]) for split in index["splits"].values())
        print(f"{report['images']} pictures at {args.image_size} px in {files} shards -> {args.shards}/{shards.INDEX}")
    return 0


def _resolved(args) -> config.Config:
    """The config of `catdog config` / `catdog train`: a preset or a config.json, then key=value."""
    overrides = list(args.overrides) + ([f"data={args.data}"] if getattr(args, "data", None) else [])
    if args.config and args.preset:
        raise UsageError("give --preset or --config, not both")
    if args.config:
        return config.resolve_file(args.config, overrides)
    return config.resolve(args.preset or "scratch", overrides)


def _config(args) -> int:
    print(config.explain(_resolved(args)))
    return 0


def _train(args) -> int:
    if args.resume:
        if args.overrides or args.data or args.preset or args.config:
            raise UsageError("--resume takes the run's own config.json; drop the overrides, --preset and --config")
        from catdog import runs

        runs.check_run(args.resume, needs=("config.json", "data.json", "manifest.csv"))
        print(_heavy("catdog.training.train").train(resume=args.resume))
        return 0
    cfg = _resolved(args)
    from catdog.models.pretrained import check_weights

    check_weights(cfg)  # before the 3 s TensorFlow import
    if args.distributed:
        print(_heavy("catdog.training.distributed").train(cfg))
    else:
        print(_heavy("catdog.training.train").train(cfg))
    return 0


def _launch(args) -> int:
    from catdog.training.launch import launch

    command = args.command_[1:] if args.command_[:1] == ["--"] else args.command_
    return launch(command, workers=args.workers, retries=args.retries)


def _merge(args) -> int:
    from catdog.inference.shards import merge

    merge(args.shards, sys.stdout)
    return 0


def _evaluate(args) -> int:
    if args.run and "=" in args.run and not os.path.exists(args.run):  # `evaluate --data X batch_size=8`
        args.settings, args.run = [args.run, *args.settings], None
    kw = _settings(args.settings, ("batch_size",), batch_size=args.batch_size)
    if args.data:
        if args.run and args.model:
            raise UsageError("give the model once: RUN or --model, not both")
        evaluate = _heavy("catdog.evaluation.evaluate")
        with console.progress_to_stderr():
            result = evaluate.evaluate_data(args.data, args.model or args.run, args.split, args.out, tta=args.tta, **kw)
        print(evaluate.format_table(result))
        print(f"-> {result['out']} (metrics.json, predictions.csv; `catdog report {result['out']}`)")
        return 0
    if not args.run or args.model or args.out:
        raise UsageError("evaluate RUN scores a run on its own split; --model and --out go with --data PATH")
    if args.split == "all":
        raise UsageError("--split all needs --data PATH")
    from catdog import runs

    runs.check_run(args.run)
    evaluate = _heavy("catdog.evaluation.evaluate")
    with console.progress_to_stderr():
        result = evaluate.evaluate(args.run, args.split or "test", tta=args.tta, **kw)
    print(evaluate.format_table(result))
    return 0


def _calibrate(args) -> int:
    from catdog import runs

    runs.check_run(args.run)
    kw = _settings(args.settings, ("unknown_budget", "unknown_non_pets", "unknown_prototypes"),
                   unknown_budget=args.unknown_budget)
    calibrate = _heavy("catdog.training.calibrate")
    with console.progress_to_stderr():
        meta = calibrate.calibrate(args.run, **kw)
    print(json.dumps(meta, indent=2))
    return 0


def _check_output_file(path: str | None, flag: str) -> None:
    if path is None:
        return
    if os.path.isdir(path):
        raise DataError(f"{flag} {path}: is a folder; expected a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(f"{flag} {path}: no folder {parent} to write it in")


def _predict(args) -> int:
    from catdog.inference import engines
    from catdog.inference.records import write_records

    if not args.paths and args.from_list is None:
        raise UsageError("predict: give the pictures, as PATH ... or --from-list FILE (see catdog predict --help)")
    batch_size = config.parse_value("batch_size", args.batch_size)
    max_errors = engines.parse_max_errors(args.max_errors)
    _check_output_file(args.kaggle_submission, "--kaggle-submission")
    shard = None
    if args.shard:
        from catdog.inference.shards import parse_shard

        shard = parse_shard(args.shard)
    records = engines.predict(args.paths, from_list=args.from_list, model=args.model, runtime=args.runtime,
                              batch_size=batch_size, tta=args.tta, unknown=False if args.no_unknown else None,
                              engine=args.engine, workers=args.workers, order=args.order, shard=shard,
                              explain=args.explain)
    # On stderr, only for a terminal, and only once a run has lasted 2 s: stdout stays machine-readable.
    shown = console.progress_bar(records, total=records.total, unit="img", delay=2)
    tally = write_records(shown, sys.stdout, args.format, kaggle_submission=args.kaggle_submission)
    note = engines.check_failures(tally, max_errors)  # more failures than --max-errors allows: exit 1
    if note and not console.is_quiet():
        print(f"catdog: {note}", file=sys.stderr)
    return 0


def _audit(args) -> int:
    kw = _settings(args.settings, ("val_fraction", "test_fraction", "split_seed", "near_duplicate_bits", "batch_size"),
                   batch_size=args.batch_size)
    cfg = config.override(config.Config(), kw)  # checks the fractions together
    _check_output_file(args.exclude_out, "--exclude-out")
    _check_output_file(args.relabel_out, "--relabel-out")
    if args.report and os.path.isfile(args.report):
        raise DataError(f"--report {args.report}: is a file; expected a folder for audit.html")
    from catdog.data.prepare import resolve_source

    resolve_source(args.data)  # a missing source is reported before TensorFlow loads
    audit = _heavy("catdog.audit.audit")
    result = audit.audit(args.data, model=args.model, runtime=args.runtime, val_fraction=cfg.val_fraction,
                         test_fraction=cfg.test_fraction, split_seed=cfg.split_seed,
                         near_duplicate_bits=cfg.near_duplicate_bits, batch_size=cfg.batch_size,
                         fine_tune=args.fine_tune)
    audit.write_rows(result.rows, sys.stdout, args.format)
    console.note(audit.summary(result))
    relabelled = []
    if args.relabel_out:
        relabelled = audit.write_relabels(result.rows, args.relabel_out)
        console.note(f"{len(relabelled)} labels to change -> {args.relabel_out} "
                     f"(`catdog train relabel={args.relabel_out}`)")
    if args.exclude_out:
        count = audit.write_exclusions(result.rows, args.exclude_out, keep=relabelled)
        console.note(f"{count} pictures to leave out -> {args.exclude_out} (`catdog train exclude={args.exclude_out}`)")
    if args.report:
        from catdog.audit.page import write_report

        page = write_report(result, args.report, source=os.path.basename(os.path.normpath(args.data)))
        console.note(f"report -> {page}")
    return 0


def _report(args) -> int:
    from catdog.evaluation.report import report

    print(report(args.path, out=args.out))
    return 0


def _augment_preview(args) -> int:
    from pathlib import Path

    from catdog.evaluation.plots import augmentation_preview

    cfg = config.resolve(args.preset, args.overrides)
    out = args.out or f"{Path(args.image).stem}-augmented.png"
    print(augmentation_preview(args.image, cfg, out, count=args.count, seed=args.seed))
    return 0


def _serve(args) -> int:
    from catdog.serving import serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port: expected 0 to 65535, got {args.port}")
    key = {"api_key": args.api_key} if args.api_key else {}  # else serve() reads $CATDOG_API_KEY
    serve(args.model, host=args.host, port=args.port, runtime=args.runtime,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_files=args.max_files, timeout_s=args.timeout,
          read_timeout_s=args.read_timeout, queue_size=args.queue_size, cors_origins=tuple(args.cors_origin), **key)
    return 0


def _export(args) -> int:
    exporter = _heavy("catdog.export.exporter")
    with console.progress_to_stderr():  # Keras's model.export prints what it saved on stdout
        written = exporter.export(args.run, args.format, out=args.out, data=args.data, check_images=args.check_images)
    print(exporter.summary(written))
    return 0


def _common() -> argparse.ArgumentParser:
    """--quiet, --verbose and --debug, accepted before or after the subcommand."""
    common = _Parser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or per-epoch lines: results on stdout, errors on stderr")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's and LiteRT's own log lines")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the traceback (also CATDOG_DEBUG=1)")
    return common


def build_parser() -> argparse.ArgumentParser:
    from catdog import __version__

    common = _common()
    parser = _Parser(prog="catdog", description="Tell dogs from cats.", epilog=EPILOG, parents=[common],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"catdog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, **kwargs):
        return sub.add_parser(name, parents=[common], **kwargs)

    settings = dict(nargs="*", metavar="key=value")
    preset_names = ", ".join(presets.PRESETS)

    p = command("download", help="fetch Microsoft's Cats-and-Dogs zip into the cache")
    p.add_argument("--url", help="where to fetch it from (default: Microsoft's Cats-and-Dogs zip)")
    p.add_argument("--dest", help="folder to save into (default: $CATDOG_HOME/downloads)")
    p.add_argument("--sha256", help="expected SHA-256 of the file")
    p.set_defaults(func=_download)

    p = command("prepare", help="check every image, write a deterministic split manifest")
    p.add_argument("settings", help="data=, val_fraction=, test_fraction=, split_seed=, exclude=FILE (pictures to "
                                    "leave out: `catdog audit --exclude-out`), relabel=FILE (labels to change: "
                                    "--relabel-out), near_duplicate_bits=N", **settings)
    p.add_argument("--data", help="train.zip or a folder (same as data=PATH; default: $CATDOG_DATA, then the cache)")
    p.add_argument("--val-fraction", metavar="SHARE", help="same as val_fraction=SHARE (0.1)")
    p.add_argument("--test-fraction", metavar="SHARE", help="same as test_fraction=SHARE (0.1)")
    p.add_argument("--force", action="store_true", help="redo even if a manifest exists")
    p.add_argument("--shards", metavar="DIR", help="also write the split as TFRecord shards there (a folder, or "
                                                   "gs://... : any filesystem TensorFlow reads), for `train shards=DIR`")
    p.add_argument("--image-size", type=int, default=224, metavar="PX",
                   help="side the shards' pictures are resized to: the run's image_size (224, lite0's)")
    p.add_argument("--shard-size", type=int, default=1024, metavar="N", help="pictures per shard (1024)")
    p.set_defaults(func=_prepare, rest="settings")

    for name, what in (("config", "print the resolved config, one line per key with its meaning"),
                       ("train", "train a model into runs/NAME; prints the run folder")):
        p = command(name, help=what, epilog=f"presets: {preset_names}; keys: `catdog config`")
        p.add_argument("overrides", help="config values, e.g. epochs=5 model=MobileNet", **settings)
        p.add_argument("--preset", help=f"{preset_names} (default scratch)")
        p.add_argument("--config", metavar="CONFIG_JSON", help="start from this config.json (e.g. a run's)")
        p.add_argument("--data", help="train.zip or a folder (same as data=PATH)")
        p.set_defaults(func=_config, rest="overrides")
    p.add_argument("--resume", metavar="RUN", help="continue the interrupted or failed run in this folder")
    p.add_argument("--distributed", action="store_true",
                   help="train as one of the TF_CONFIG workers (MultiWorkerMirroredStrategy); needs name=")
    p.set_defaults(func=_train)

    p = command("launch", help="run a catdog command as N local TF_CONFIG workers",
                description="e.g. catdog launch --workers 2 -- train --distributed --preset tiny name=x")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--retries", type=int, default=3,
                   help="restarts of the group after a worker dies (a preempted group's restarts are not counted)")
    p.add_argument("command_", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=_launch)

    p = command("evaluate", help="metrics of a run on its test split, or of any model on labelled pictures",
                description="catdog evaluate RUN (its test split) | catdog evaluate [--model M] --data PATH")
    p.add_argument("run", nargs="?", help="run folder")
    p.add_argument("settings", help="batch_size=64", **settings)
    p.add_argument("--model", help="with --data: run folder or .keras file (default: the shipped model)")
    p.add_argument("--data", help="labelled pictures, zip or folder in any layout `prepare` accepts: scored "
                                  "whole, or on the model's own test split when they are its training data")
    p.add_argument("--split", choices=["train", "val", "test", "all"],
                   help="which split to score (default: test; with --data, test of the model's own data, else all)")
    p.add_argument("--out", help="with --data: folder for metrics.json and predictions.csv "
                                 "(default: evaluations/MODEL-on-DATA-SPLIT)")
    p.add_argument("--tta", action="store_true", help="average with the mirrored image")
    p.add_argument("--batch-size", metavar="N", help="same as batch_size=N")
    p.set_defaults(func=_evaluate, rest="settings")

    p = command("calibrate", help="refit temperature and the unknown thresholds on validation")
    p.add_argument("run", help="run folder")
    p.add_argument("settings", help="unknown_budget=SHARE, unknown_non_pets=FOLDER, unknown_prototypes=N "
                                    "(default: the run's config)",
                   **settings)
    p.add_argument("--unknown-budget", metavar="SHARE", help="same as unknown_budget=SHARE: share of "
                   "validation pets the unknown detector may give up")
    p.set_defaults(func=_calibrate, rest="settings")

    p = command("predict", help="classify image files, folders or globs")
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders, globs or URIs (s3://...)")
    p.add_argument("--from-list", metavar="FILE", help="also every path or URI listed in FILE, one a line "
                                                       "(- for stdin), after the PATHs")
    p.add_argument("--model", help="run folder, .keras or .tflite file (default: the shipped model)")
    p.add_argument("--runtime", choices=["auto", "keras", "tflite", "tflite-int8"], default="auto",
                   help="auto (default): LiteRT float32 where the model has that export (the shipped one "
                        "does), else Keras; a .tflite --model always runs on LiteRT")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--kaggle-submission", metavar="CSV", help="also write Kaggle's id,label file")
    p.add_argument("--tta", action="store_true", help="average with the mirrored image")
    p.add_argument("--no-unknown", action="store_true", help="always answer cat or dog, never unknown")
    p.add_argument("--batch-size", default="64", metavar="N")
    p.add_argument("--shard", metavar="I/N", help="predict only inputs k with k mod N == I (then `catdog merge`)")
    p.add_argument("--max-errors", metavar="N", help="exit 0 when at most N inputs (or N%% of them, e.g. 0.1%%) "
                                                     "could not be read (default 0: any such input gives exit 1)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): this process; ray: an actor pool on Ray Data (pip install "
                        "'catdog[ray]'), a local Ray or the cluster at $RAY_ADDRESS")
    p.add_argument("--workers", type=int, metavar="N", help="with --engine ray: N actors, one model each "
                   "(default: one per CPU, of this machine or of the cluster)")
    p.add_argument("--order", choices=["input", "completion"], default="input",
                   help="input (default): records in input order; completion: batch by batch as Ray finishes them")
    p.add_argument("--explain", metavar="DIR", help="also save a Grad-CAM overlay PNG per image into DIR")
    p.set_defaults(func=_predict, rest="paths")

    p = command("audit", help="find the pictures of a labelled data set that are not what their label says",
                description="One row per flagged picture, most suspicious first: neither, both, label_error, "
                            "conflict, duplicate, leak, low_quality, unreadable, each with a score and a reason.")
    p.add_argument("data", metavar="DATA", help="train.zip or a folder, in any layout `prepare` accepts")
    p.add_argument("settings", help="val_fraction=, test_fraction=, split_seed=, near_duplicate_bits= (the split "
                                    "the leak check judges, as `prepare` makes it), batch_size=", **settings)
    p.add_argument("--model", help="run folder or .keras file whose ImageNet side looks (default: the shipped model)")
    p.add_argument("--runtime", choices=["auto", "keras"], default="auto",
                   help="auto (default): LiteRT, the model's view converted once and cached; keras: no conversion")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--fine-tune", action="store_true",
                   help="label errors from the ImageNet top blocks fine-tuned on each of 5 folds, instead of a linear "
                        "model on their features (slower: about 10 min more on train.zip's 22,500 pictures, and 4 "
                        "min once for the maps they train on)")
    p.add_argument("--batch-size", metavar="N", help="same as batch_size=N (64)")
    p.add_argument("--report", metavar="DIR", help="also write DIR/audit.html: thumbnails by issue, with neighbours")
    p.add_argument("--exclude-out", metavar="FILE", help="also write the pictures to leave out, for "
                                                         "`catdog train exclude=FILE` (and prepare)")
    p.add_argument("--relabel-out", metavar="FILE", help="also write the labels to change (the label errors), for "
                                                         "`catdog train relabel=FILE`; they leave the exclusion list")
    p.set_defaults(func=_audit, rest="settings")

    p = command("report", help="HTML report with plots of a run or an evaluation (self-contained)")
    p.add_argument("path", metavar="RUN_OR_EVAL_DIR",
                   help="run folder (its test split, scored if not yet) or a folder from `evaluate --data`")
    p.add_argument("--out", help="folder for report.html and its PNGs (default: PATH/report)")
    p.set_defaults(func=_report)

    p = command("augment-preview", help="a grid of one picture under the training augmentation")
    p.add_argument("image")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. zoom=0.3")
    p.add_argument("--preset", default="scratch", help=f"{preset_names} (default scratch)")
    p.add_argument("--out", help="PNG to write (default: IMAGE-augmented.png in the current folder)")
    p.add_argument("--count", type=int, default=11, help="augmented draws beside the original")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_augment_preview, rest="overrides")

    p = command("merge", help="join the outputs of predict --shard 0/N ... N-1/N in input order")
    p.add_argument("shards", nargs="+", metavar="FILE", help="shard outputs, shard 0 first")
    p.set_defaults(func=_merge, rest="shards")

    p = command("serve", help="REST API and web page over the model (FastAPI + uvicorn)")
    p.add_argument("--model", help="run folder or .keras file (default: the shipped model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--runtime", choices=["auto", "keras", "tflite", "tflite-int8"], default="auto",
                   help="as for predict: auto (default) runs LiteRT float32 where the model has that export")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (default: $CATDOG_API_KEY)")
    p.add_argument("--max-upload-mb", type=float, default=10, help="largest image accepted, in MiB")
    p.add_argument("--max-files", type=int, default=16, help="most images in one request")
    p.add_argument("--timeout", type=float, default=30, help="seconds before a request is answered 504")
    p.add_argument("--read-timeout", type=float, default=30,
                   help="seconds a client has to send a whole request, from its first byte, before 408")
    p.add_argument("--queue-size", type=int, default=64, help="images waiting for the model before 503")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow this browser origin (repeatable); CORS is off without it")
    p.set_defaults(func=_serve)

    p = command("export", help="write SavedModel / TFLite, checked against the Keras model")
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


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but key=value items (and paths) may also come after options: `train --data X epochs=2`."""
    args, extras = parser.parse_known_args(argv)
    rest = getattr(args, "rest", None)
    if rest and extras and not any(item.startswith("-") for item in extras):
        setattr(args, rest, list(getattr(args, rest) or []) + extras)
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _one_line(error: BaseException) -> tuple[int, str]:
    """The exit status and the one line that report `error` (see catdog.errors)."""
    # Ctrl-C inside a C extension's call (numpy's __array__, say) can reach us as a SystemError caused by it.
    if isinstance(error, KeyboardInterrupt) or isinstance(error.__cause__, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, CatdogError):
        return error.exit_code, str(error)
    from catdog.data.images import ImageError

    if isinstance(error, ImageError):  # one picture asked for by name (augment-preview, explain)
        return EXIT_USAGE, str(error)
    if isinstance(error, _PATH_ERRORS):
        text = f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
        return EXIT_USAGE, text
    if isinstance(error, OSError):  # a full disk, a lost mount: not catdog's fault, not the user's input
        return 1, f"{error.filename + ': ' if error.filename else ''}{error.strerror or error}"
    return EXIT_BUG, (f"internal error ({type(error).__name__}: {error}); this is a bug: rerun with --debug "
                      f"(or CATDOG_DEBUG=1) and report the traceback")


def main(argv: list[str] | None = None) -> int:
    """Runs one `catdog` command; returns its exit status. Every error is one line on stderr."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    debug = os.environ.get("CATDOG_DEBUG", "") not in ("", "0") or "--debug" in argv
    try:
        args = _parse(build_parser(), argv)
        console.set_verbose(getattr(args, "verbose", False))  # before TensorFlow is first imported
        console.set_quiet(getattr(args, "quiet", False))
        return args.func(args) or 0
    except SystemExit:
        raise  # --help, --version
    except BaseException as error:  # noqa: BLE001  (the one place every error becomes one line)
        if debug:
            traceback.print_exc()
        code, text = _one_line(error)
        text = "; ".join([str(text), *getattr(error, "__notes__", ())])  # e.g. how to resume a failed run
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        print(f"catdog: {' '.join(str(text).split())}", file=sys.stderr, flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
