"""A run's data: checked before the run starts, recorded into its folder, read back by every later step.

    runs/NAME/manifest.csv   the exact split (a copy of `prepare`'s)
    runs/NAME/data.json      the source, where its pictures are (`root`), counts and skips

Training, resume, distributed workers, calibration, evaluation and export all read a run's
split through `split`, so where the pictures are found is decided here alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from catdog.config import Config
from catdog.data.prepare import Example, load_split, prepare, read_report
from catdog.errors import DataError


def check(cfg: Config) -> tuple[Path, dict]:
    """The data's work folder and report (`prepare`), checked to give usable train and val splits."""
    work = prepare(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    report = read_report(work)
    source = report["settings"]["source"]
    if not report["images"]:
        raise DataError(f"{source}: no usable cat or dog pictures (expected train/cat.N.jpg, cat/ and dog/ "
                        f"folders, or PetImages/Cat and PetImages/Dog)")
    for name in ("train", "val"):
        examples = load_split(work / "manifest.csv", report["root"], name, cfg.max_images, cfg.seed)
        if len({e.label for e in examples}) < (2 if name == "train" else 1):
            raise DataError(f"{source}: {report['images']} usable images leave the {name} split without "
                            f"{'both classes' if name == 'train' else 'any image'}; add pictures or change "
                            f"val_fraction / test_fraction")
    return work, report


def record(run_dir: Path, cfg: Config, checked: tuple[Path, dict] | None = None) -> tuple[list[Example], ...]:
    """Copies the split and its summary into the run folder; returns its (train, val) examples."""
    work, report = checked or check(cfg)
    shutil.copy(work / "manifest.csv", run_dir / "manifest.csv")
    summary = {k: report[k] for k in ("settings", "root", "images", "counts", "skipped_by_reason")}
    (run_dir / "data.json").write_text(json.dumps(summary, indent=2) + "\n")
    return tuple(split(run_dir, name, cfg.max_images, cfg.seed) for name in ("train", "val"))


def root(run_dir: str | os.PathLike) -> str:
    """The folder that a run's manifest paths are relative to."""
    return json.loads((Path(run_dir) / "data.json").read_text())["root"]


def split(run_dir: str | os.PathLike, name: str, max_images: int = 0, seed: int = 0) -> list[Example]:
    """One split ("train", "val", "test", "all") of a run folder's data, as `load_split` gives it."""
    return load_split(Path(run_dir) / "manifest.csv", root(run_dir), name, max_images, seed)
