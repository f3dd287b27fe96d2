"""The CLI's contract, one bad invocation or input per row: the documented exit status, exactly
one line on stderr (`catdog: ...`) naming the culprit, no traceback, nothing created or changed.

Rows run in-process through `cli.main(argv)` (a subprocess costs ~4 s of TensorFlow import);
the few that need a real process (SIGINT, import-time noise) run as one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image, write_kaggle_tree

from catdog import cli, config, presets


@dataclass
class Ctx:
    root: Path  # everything the rows use; snapshotted around each row
    data: Path  # a Kaggle-style folder of 2 x 20 synthetic pictures
    run: Path  # a finished tiny run
    runs: Path  # runs_dir for new runs (empty)
    image: Path  # one good picture
    files: dict[str, Path]


def _zip(path: Path, entries: dict[str, bytes], deflate: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)
    return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    root = tmp_path_factory.mktemp("contract")
    saved_home = os.environ.get("CATDOG_HOME")
    os.environ["CATDOG_HOME"] = str(root / "catdog-home")
    try:
        data = write_kaggle_tree(root / "data", per_class=20)
        from catdog.training.train import train

        run = train(config.resolve("tiny", [f"data={data}", f"runs_dir={root / 'done'}", "name=run"]))
    finally:
        if saved_home is None:
            os.environ.pop("CATDOG_HOME", None)
        else:
            os.environ["CATDOG_HOME"] = saved_home
    (root / "runs").mkdir()
    f = {}
    jpg = (data / "train" / "cat.0.jpg").read_bytes()
    f["notes"] = root / "notes.txt"
    f["notes"].write_text("not a zip, not a picture\n")
    f["empty_dir"] = root / "empty"
    f["empty_dir"].mkdir()
    f["no_images"] = root / "no-images" / "train"
    f["no_images"].mkdir(parents=True)
    (f["no_images"] / "cat.1.jpg").write_text("not a jpeg")
    (f["no_images"] / "README.txt").write_text("hello")
    f["truncated_zip"] = root / "truncated.zip"
    whole = _zip(root / "whole.zip", {f"train/cat.{i}.jpg": jpg for i in range(3)}).read_bytes()
    f["truncated_zip"].write_bytes(whole[: len(whole) // 2])
    f["slip_zip"] = _zip(root / "slip.zip", {"train/cat.1.jpg": jpg, "../../evil.jpg": jpg})
    f["bomb_zip"] = _zip(root / "bomb.zip", {"train/cat.1.jpg": jpg, "train/dog.1.jpg": b"\0" * 5_000_000}, True)
    f["fifo"] = root / "pipe.zip"
    os.mkfifo(f["fifo"])
    f["symlinked"] = root / "symlinked"
    shutil.copytree(data, f["symlinked"])
    (root / "outside.jpg").write_bytes(jpg)
    (f["symlinked"] / "train" / "cat.999.jpg").symlink_to(root / "outside.jpg")
    f["bad_json"] = root / "bad.json"
    f["bad_json"].write_text("{not json")
    f["colour_json"] = root / "colour.json"
    f["colour_json"].write_text('{"epochs": 2, "colour": "red"}')
    f["typed_json"] = root / "typed.json"
    f["typed_json"].write_text('{"epochs": "five"}')
    f["no_config_run"] = root / "no-config"
    shutil.copytree(run, f["no_config_run"])
    (f["no_config_run"] / "config.json").unlink()
    f["no_model_run"] = root / "no-model"
    shutil.copytree(run, f["no_model_run"])
    (f["no_model_run"] / "model.keras").unlink()
    f["corrupt_keras"] = root / "corrupt.keras"
    f["corrupt_keras"].write_bytes((run / "model.keras").read_bytes()[:3000])
    f["busy_run"] = root / "busy" / "started"
    f["busy_run"].mkdir(parents=True)
    (f["busy_run"] / "state.json").write_text('{"status": "interrupted", "epochs_done": 2}')
    f["live_run"] = root / "live"
    shutil.copytree(f["no_model_run"], f["live_run"])
    (f["live_run"] / "state.json").write_text('{"status": "running", "pid": 1, "epochs_done": 1}')  # pid 1 lives
    f["empty_jpg"] = root / "empty.jpg"
    f["empty_jpg"].write_bytes(b"")
    f["dir_jpg"] = root / "folder.jpg"  # a folder named like a file: unreadable as one, even by root
    f["dir_jpg"].mkdir()
    f["out_dir"] = root / "out"
    f["out_dir"].mkdir()
    f["runs_file"] = root / "runs-file"
    f["runs_file"].write_text("")
    f["empty_keras_home"] = root / "keras-home"
    f["empty_keras_home"].mkdir()
    f["corrupt_tflite"] = root / "broken.tflite"
    f["corrupt_tflite"].write_bytes(b"TFL3" + b"\0" * 100)
    f["no_manifest_run"] = root / "no-manifest"
    shutil.copytree(run, f["no_manifest_run"])
    (f["no_manifest_run"] / "manifest.csv").unlink()
    f["moved_run"] = root / "moved"
    shutil.copytree(run, f["moved_run"])
    summary = json.loads((run / "data.json").read_text())
    gone = {"root": str(root / "gone-data"), "settings": {**summary["settings"], "source": str(root / "gone-source")}}
    (f["moved_run"] / "data.json").write_text(json.dumps({**summary, **gone}))  # the source and its copy
    inner = _zip(root / "train.zip", {"train/cat.1.jpg": b"\0" * 5_000_000}, deflate=True)
    f["nested_bomb"] = root / "all.zip"
    with zipfile.ZipFile(f["nested_bomb"], "w") as zf:
        zf.write(inner, "train.zip")
    inner.unlink()
    image = root / "photo.jpg"
    image.write_bytes(jpg)
    return Ctx(root, data, run, root / "runs", image, f)


def T(c: Ctx, *extra, data=True):
    """A tiny `train` into the empty runs folder, with `extra` last (so it wins)."""
    return ["train", "--preset", "tiny", f"runs_dir={c.runs}", "name=t",
            *(["--data", c.data] if data else []), *extra]


# (id, argv builder, exit status, the culprit the one stderr line must name, environment)
CASES = [
    # config keys and values
    ("unknown-key", lambda c: T(c, "epoch=3"), 2, "'epoch' (did you mean epochs?)", {}),
    ("unknown-key-far", lambda c: T(c, "colour=red"), 2, "'colour'", {}),
    ("not-key-value", lambda c: T(c, "epochs"), 2, "'epochs' is not of the form key=value", {}),
    ("wrong-type-int", lambda c: T(c, "epochs=three"), 2, "epochs: expected int", {}),
    ("wrong-type-fraction", lambda c: T(c, "epochs=2.5"), 2, "epochs: expected int", {}),
    ("wrong-type-bool", lambda c: T(c, "augment=maybe"), 2, "augment: expected true or false", {}),
    ("not-finite", lambda c: T(c, "learning_rate=nan"), 2, "learning_rate: expected a finite number", {}),
    ("out-of-range-zero", lambda c: T(c, "epochs=0"), 2, "epochs: expected a value in", {}),
    ("out-of-range-negative", lambda c: T(c, "learning_rate=-1"), 2, "learning_rate: expected a value in", {}),
    ("out-of-range-dropout", lambda c: T(c, "dropout=1"), 2, "dropout: expected a value in", {}),
    ("out-of-range-fractions", lambda c: T(c, "val_fraction=0.6", "test_fraction=0.5"), 2,
     "val_fraction + test_fraction", {}),
    ("bad-choice", lambda c: T(c, "cache=dsk"), 2,
     "cache: expected one of auto, memory, disk, none, got 'dsk' (did you mean disk?)", {}),
    ("bad-name", lambda c: T(c, "name=../escape"), 2, "name: expected a folder name", {}),
    ("unknown-preset", lambda c: ["train", "--preset", "huge"], 2, "unknown preset 'huge'", {}),
    ("misspelt-preset", lambda c: ["config", "--preset", "tinyy"], 2, "(did you mean tiny?)", {}),
    ("unknown-model", lambda c: T(c, "model=ResNet9000"), 2, "'ResNet9000' (did you mean ResNet50?)", {}),
    ("no-offline-weights", lambda c: T(c, "model=mobilenet"), 2, "mobilenet_1_0_224_tf_no_top.h5",
     {"KERAS_HOME": "{empty_keras_home}"}),
    ("missing-weights-file", lambda c: T(c, "model=MobileNet", "weights=/nowhere/w.h5"), 2, "/nowhere/w.h5", {}),
    ("missing-non-pets", lambda c: T(c, "unknown_non_pets=/nowhere/photos"), 2,
     "unknown_non_pets: /nowhere/photos is not a folder", {}),
    # --config, --resume
    ("config-missing", lambda c: ["train", "--config", c.root / "nope.json"], 2, "nope.json: no such file", {}),
    ("config-is-folder", lambda c: ["train", "--config", c.run], 2, "done/run: is a folder", {}),
    ("config-not-json", lambda c: ["train", "--config", c.files["bad_json"]], 2, "bad.json: not a readable", {}),
    ("config-unknown-key", lambda c: ["config", "--config", c.files["colour_json"]], 2, "'colour'", {}),
    ("config-wrong-type", lambda c: ["config", "--config", c.files["typed_json"]], 2, "epochs: expected int", {}),
    ("config-and-preset", lambda c: ["train", "--config", c.run / "config.json", "--preset", "tiny"], 2,
     "--preset or --config", {}),
    ("resume-with-overrides", lambda c: ["train", "--resume", c.run, "epochs=3"], 2, "--resume takes", {}),
    ("resume-missing", lambda c: ["train", "--resume", c.root / "gone"], 2, "gone: no such run folder", {}),
    ("resume-missing-pieces", lambda c: ["train", "--resume", c.files["no_config_run"]], 2,
     "no-config: not a run folder, missing config.json", {}),
    ("resume-finished", lambda c: ["train", "--resume", c.run], 2, "has finished", {}),
    ("resume-while-running", lambda c: ["train", "--resume", c.files["live_run"]], 2,
     "is being trained by process 1", {}),
    # data
    ("data-missing", lambda c: T(c, "--data", c.root / "missing.zip", data=False), 2, "missing.zip", {}),
    ("data-empty-folder", lambda c: T(c, "--data", c.files["empty_dir"], data=False), 2, "no usable", {}),
    ("data-no-images", lambda c: T(c, "--data", c.files["no_images"].parent, data=False), 2,
     "no-images: no usable", {}),
    ("data-not-a-zip", lambda c: T(c, "--data", c.files["notes"], data=False), 2, "notes.txt: expected a zip", {}),
    ("data-fifo", lambda c: T(c, "--data", c.files["fifo"], data=False), 2, "pipe.zip: expected a zip", {}),
    ("data-truncated-zip", lambda c: T(c, "--data", c.files["truncated_zip"], data=False), 2, "truncated.zip", {}),
    ("data-zip-slip", lambda c: T(c, "--data", c.files["slip_zip"], data=False), 2, "climbs out", {}),
    ("data-ratio-bomb", lambda c: T(c, "--data", c.files["bomb_zip"], data=False), 2, "dog.1.jpg declares", {}),
    ("run-has-epochs", lambda c: T(c, f"runs_dir={c.files['busy_run'].parent}", "name=started"), 2,
     "2 finished epoch(s)", {}),
    ("runs-dir-is-file", lambda c: T(c, f"runs_dir={c.files['runs_file']}"), 2, "runs_dir", {}),
    ("prepare-flag-type", lambda c: ["prepare", "--data", c.data, "--val-fraction", "abc"], 2,
     "val_fraction: expected float", {}),
    ("prepare-out-of-range", lambda c: ["prepare", "--data", c.data, "test_fraction=1.5"], 2, "test_fraction", {}),
    ("prepare-foreign-key", lambda c: ["prepare", "--data", c.data, "epochs=3"], 2,
     "epochs: not a setting of this command", {}),
    ("prepare-twice", lambda c: ["prepare", "--data", c.data, "val_fraction=0.2", "--val-fraction", "0.2"], 2,
     "val_fraction is given twice", {}),
    ("prepare-symlink-out", lambda c: ["prepare", "--data", c.files["symlinked"]], 0,
     "cat.999.jpg: a symlink out of the data folder", {}),
    ("audit-missing-data", lambda c: ["audit", c.root / "missing.zip"], 2, "missing.zip", {}),
    ("audit-not-a-zip", lambda c: ["audit", c.files["notes"]], 2, "notes.txt: expected a zip", {}),
    ("audit-out-of-range", lambda c: ["audit", c.data, "test_fraction=1.5"], 2, "test_fraction", {}),
    ("audit-foreign-key", lambda c: ["audit", c.data, "epochs=3"], 2, "epochs: not a setting of this command", {}),
    ("audit-exclude-out-folder", lambda c: ["audit", c.data, "--exclude-out", c.files["empty_dir"]], 2,
     "--exclude-out", {}),
    ("audit-model-without-detector", lambda c: ["audit", c.data, "--model", c.run], 2,
     "no ImageNet pet detector", {}),
    # run folders and models
    ("evaluate-missing-run", lambda c: ["evaluate", c.root / "gone"], 2, "gone: no such run folder", {}),
    ("evaluate-missing-model", lambda c: ["evaluate", c.files["no_model_run"]], 2, "missing model.keras", {}),
    ("evaluate-file-for-folder", lambda c: ["evaluate", c.run / "config.json"], 2, "expected a run folder", {}),
    ("evaluate-bad-batch", lambda c: ["evaluate", c.run, "batch_size=0"], 2, "batch_size", {}),
    ("evaluate-foreign-key", lambda c: ["evaluate", c.run, "epochs=2"], 2, "epochs: not a setting", {}),
    ("calibrate-bad-budget", lambda c: ["calibrate", c.run, "unknown_budget=2"], 2, "unknown_budget", {}),
    ("predict-missing-model", lambda c: ["predict", c.image, "--model", c.root / "nothing"], 2, "nothing", {}),
    ("predict-corrupt-keras", lambda c: ["predict", c.image, "--model", c.files["corrupt_keras"]], 2,
     "corrupt.keras: not a loadable Keras model", {}),
    ("predict-not-a-model", lambda c: ["predict", c.image, "--model", c.files["notes"]], 2,
     "notes.txt: expected a run folder", {}),
    ("predict-bad-batch", lambda c: ["predict", c.image, "--model", c.run, "--batch-size", "-3"], 2, "batch_size", {}),
    ("predict-submission-folder", lambda c: ["predict", c.image, "--model", c.run, "--kaggle-submission",
                                             c.files["out_dir"]], 2, "--kaggle-submission", {}),
    ("predict-bad-format", lambda c: ["predict", c.image, "--format", "xml"], 2, "'xml'", {}),
    # inputs that fail while the others are answered: exit 1
    ("predict-missing-input", lambda c: ["predict", c.root / "missing.jpg", c.image, "--model", c.run], 1,
     "missing.jpg", {}),
    ("predict-empty-input", lambda c: ["predict", c.files["empty_jpg"], c.image, "--model", c.run], 1,
     "empty.jpg: empty file", {}),
    ("predict-folder-for-file", lambda c: ["predict", c.files["dir_jpg"], c.image, "--model", c.run], 1,
     "folder.jpg: is a directory", {}),
    ("predict-non-image", lambda c: ["predict", c.files["notes"], c.image, "--model", c.run], 1,
     "notes.txt: not a recognised image", {}),
    ("predict-fifo-input", lambda c: ["predict", c.files["fifo"], c.image, "--model", c.run], 1,
     "pipe.zip: empty file", {}),
    ("predict-run-without-model", lambda c: ["predict", c.image, "--model", c.files["no_model_run"]], 2,
     "no model.keras in", {}),
    ("predict-corrupt-tflite", lambda c: ["predict", c.image, "--model", c.files["corrupt_tflite"]], 2,
     "broken.tflite: not a loadable TFLite model", {}),
    # predict's inputs, engines and exit policy
    ("predict-no-inputs", lambda c: ["predict", "--model", c.run], 2, "give the pictures", {}),
    ("predict-list-missing", lambda c: ["predict", "--from-list", c.root / "nolist.txt"], 2,
     "nolist.txt: No such file", {}),
    ("predict-list-is-folder", lambda c: ["predict", "--from-list", c.files["empty_dir"]], 2, "empty: is a folder", {}),
    ("predict-bad-max-errors", lambda c: ["predict", c.image, "--max-errors", "lots"], 2, "--max-errors", {}),
    ("predict-workers-without-ray", lambda c: ["predict", c.image, "--workers", "2"], 2,
     "--workers goes with --engine ray", {}),
    ("predict-ray-no-workers", lambda c: ["predict", c.image, "--engine", "ray", "--workers", "0"], 2,
     "--workers: expected 1 or more", {}),
    ("predict-explain-on-ray", lambda c: ["predict", c.image, "--engine", "ray", "--explain", c.root / "cams"], 2,
     "--explain needs --engine local", {}),
    ("predict-ray-unreachable", lambda c: ["predict", c.image, "--model", c.run, "--engine", "ray", "--format", "csv"],
     2, "RAY_ADDRESS=127.0.0.1:9: no Ray cluster answers there", {"RAY_ADDRESS": "127.0.0.1:9"}),
    ("predict-within-max-errors", lambda c: ["predict", c.root / "missing.jpg", c.image, "--model", c.run,
                                             "--max-errors", "1"], 0, "within --max-errors 1", {}),
    ("predict-beyond-max-errors", lambda c: ["predict", c.root / "missing.jpg", c.files["empty_jpg"], c.image,
                                             "--model", c.run, "--max-errors", "1"], 1,
     "more than --max-errors 1 allows", {}),
    ("calibrate-missing-manifest", lambda c: ["calibrate", c.files["no_manifest_run"]], 2, "missing manifest.csv", {}),
    ("evaluate-data-moved", lambda c: ["evaluate", c.files["moved_run"]], 2, "has the data moved", {}),
    ("prepare-kaggle-download-all-bomb", lambda c: ["prepare", "--data", c.files["nested_bomb"]], 2,
     "all.zip!train.zip: refused", {}),
    ("export-missing-run", lambda c: ["export", c.root / "gone", "--format", "tflite"], 2, "gone", {}),
    ("serve-corrupt-model", lambda c: ["serve", "--model", c.files["corrupt_keras"]], 2, "corrupt.keras", {}),
    ("serve-bad-port", lambda c: ["serve", "--port", "70000"], 2, "--port: expected 0 to 65535", {}),
    ("serve-bad-limit", lambda c: ["serve", "--max-files", "0"], 2, "max_files must be positive", {}),
    ("launch-no-workers", lambda c: ["launch", "--workers", "0", "--", "train"], 2, "--workers", {}),
    ("augment-preview-non-image", lambda c: ["augment-preview", c.files["notes"], "--out", c.root / "x.png"], 2,
     "notes.txt: not a recognised image", {}),
    ("augment-preview-bad-key", lambda c: ["augment-preview", c.image, "--out", c.root / "x.png", "zom=0.3"], 2,
     "'zom' (did you mean zoom?)", {}),
    ("report-not-a-run", lambda c: ["report", c.files["empty_dir"]], 2, "empty", {}),
    ("evaluate-model-and-run", lambda c: ["evaluate", c.run, "--model", c.run, "--data", c.data], 2,
     "give the model once", {}),
    # the command line itself
    ("no-command", lambda c: [], 2, "required", {}),
    ("unknown-command", lambda c: ["trian"], 2, "invalid choice: 'trian'", {}),
    ("unknown-flag", lambda c: ["predict", c.image, "--fast"], 2, "--fast", {}),
    ("merge-missing", lambda c: ["merge", c.root / "part-0.jsonl"], 2, "part-0.jsonl", {}),
    ("download-unreachable", lambda c: ["download", "--url", "http://127.0.0.1:9/pets.zip", "--dest",
                                        c.files["out_dir"]], 2, "127.0.0.1:9/pets.zip: download failed", {}),
]


def _snapshot(root: Path) -> dict:
    """Every path under `root` but the data cache, with its size and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in root.rglob("*") if "catdog-home" not in p.parts and not p.is_dir()} | {
            str(p.relative_to(root)): "dir" for p in root.rglob("*") if p.is_dir() and "catdog-home" not in p.parts}


@pytest.mark.parametrize("name, argv, code, culprit, env", CASES, ids=[c[0] for c in CASES])
def test_bad_invocation(ctx, capsys, monkeypatch, name, argv, code, culprit, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(**{k: str(v) for k, v in ctx.files.items()}))
    before = _snapshot(ctx.root)
    assert cli.main([str(a) for a in argv(ctx)]) == code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("catdog: ") and "Traceback" not in err
    assert culprit in lines[0], lines[0]
    assert _snapshot(ctx.root) == before  # nothing created, removed or changed
    if code == 2:
        assert out == ""  # stdout is for results only


def test_every_command_has_a_row(ctx):
    """A command added to the parser comes with its rows here."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    covered = {str(argv(ctx)[0]) for _, argv, *_ in CASES if argv(ctx)}
    assert sorted(set(commands) - covered) == []


def test_debug_shows_the_traceback(ctx, capsys):
    assert cli.main(["--debug", "train", "epoch=3"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_is_exit_70_with_a_hint(ctx, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_config", lambda args: 1 / 0)
    assert cli.main(["config"]) == 70
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ZeroDivisionError" in err and "--debug" in err


def test_a_run_that_fails_says_so_and_how_to_resume(ctx, capsys, monkeypatch):
    from catdog.training import train as train_lib

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_lib, "calibrate", broken)
    assert cli.main([str(a) for a in T(ctx, "name=full", "--quiet")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "No space left on device" in err and f"--resume {ctx.runs / 'full'}" in err
    state = json.loads((ctx.runs / "full" / "state.json").read_text())
    assert state["status"] == "failed" and "No space left" in state["error"] and state["epochs_done"] == 1
    shutil.rmtree(ctx.runs / "full")


def test_train_with_a_same_name_after_a_failed_start_works(ctx, capsys):
    """The issue's first report: a bad model name used to leave runs/x behind, refusing the fixed command."""
    assert cli.main([str(a) for a in T(ctx, "model=ResNet9000", "name=x")]) == 2
    assert not (ctx.runs / "x").exists()
    assert cli.main([str(a) for a in T(ctx, "name=x", "--quiet")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == str(ctx.runs / "x") and out.count("\n") == 1  # the run path, nothing else
    shutil.rmtree(ctx.runs / "x")


def test_config_prints_every_key_explained(capsys):
    assert cli.main(["config", "--preset", "MOBILENET", "epochs=2", "model=efficientnetb0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(config.Config.__dataclass_fields__)
    assert "model=EfficientNetB0" in lines[0] and all("  # " in line and line.split("# ")[1] for line in lines)
    assert any(line.startswith("epochs=2 ") for line in lines)


def test_train_config_reruns_a_run_under_a_new_name(ctx, capsys):
    cfg = config.resolve_file(ctx.run / "config.json", ["epochs=2"])
    assert cfg.name == "" and cfg.epochs == 2 and cfg.image_size == 32
    assert config.resolve_file(ctx.run / "config.json", ["name=again"]).name == "again"


def test_config_from_a_run_folder(ctx, capsys):
    assert cli.main(["config", "--config", ctx.run / "config.json", "epochs=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "epochs=2" in [line.split()[0] for line in lines] and "name=" in [line.split()[0] for line in lines]


def test_help_lists_exit_codes_and_presets(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "130" in out and "70" in out and all(name in out for name in presets.PRESETS)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _catdog(*args, **kwargs):
    """catdog in a child whose SIGINT is at its default, as under a terminal: a shell's `cmd &`
    without job control ignores it, and the child would inherit that (and never see Ctrl-C)."""
    env = {**os.environ, "CATDOG_DEBUG": "", **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "catdog.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint, **kwargs)


def test_one_line_even_through_tensorflow_import(ctx):
    """In a fresh process TensorFlow's import-time log lines must not reach stderr either."""
    done = _catdog("predict", ctx.image, "--model", ctx.files["corrupt_keras"])
    out, err = done.communicate(timeout=120)
    assert done.returncode == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("catdog: ") and "corrupt.keras" in err, err


def _wait_for(predicate, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_sigint_during_train_leaves_a_resumable_run(ctx, tmp_path):
    runs = tmp_path / "runs"
    process = _catdog(*T(ctx, f"runs_dir={runs}", "name=stopped", "epochs=200", "patience=200", "max_images=0",
                         "--quiet"))
    state_file = runs / "stopped" / "state.json"

    def one_epoch_done():
        try:
            return json.loads(state_file.read_text()).get("epochs_done", 0) >= 1
        except (OSError, ValueError):
            return False

    _wait_for(one_epoch_done, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    # What it printed, if the interrupt was lost (seen once, under load; 12 tries under load did not repeat it).
    assert process.returncode == 130 and out == "", (process.returncode, out[-300:], err[-3000:])
    assert err.count("\n") == 1 and "--resume" in err and str(runs / "stopped") in err, err
    state = json.loads((runs / "stopped" / "state.json").read_text())
    assert state["status"] == "interrupted" and state["epochs_done"] >= 1
    assert (runs / "stopped" / "backup").is_dir()


def test_sigint_during_predict(ctx, tmp_path):
    images = tmp_path / "many"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3000):
        synthetic_image(i % 2, rng, size=16).save(images / f"{i}.png")
    process = _catdog("predict", images, "--model", ctx.run, "--batch-size", "1", "--quiet")
    first = process.stdout.readline()
    assert json.loads(first)["label"] in ("cat", "dog")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (process.returncode, err[-2000:])
    assert err.strip() == "catdog: interrupted", err
    lines = out.splitlines()
    assert all(re.fullmatch(r"\{.*\}", line) for line in lines), lines[-3:]  # whole lines only


def test_ctrl_c_inside_a_c_call_is_an_interruption_not_a_bug():
    """Seen in CI: SIGINT while numpy converted an array gave a SystemError caused by KeyboardInterrupt."""
    from catdog.cli import _one_line

    error = SystemError("<built-in method __array__> returned a result with an exception set")
    error.__cause__ = KeyboardInterrupt()
    assert _one_line(error) == (130, "interrupted")
    assert _one_line(SystemError("other"))[0] == 70
