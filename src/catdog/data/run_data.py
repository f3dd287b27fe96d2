"""A run's data: checked before the run starts, recorded into its folder, read back by every later step.

    runs/NAME/manifest.csv   the exact split (a copy of `prepare`'s)
    runs/NAME/excluded.csv   the exclusion list it was given (`exclude=FILE`), if any
    runs/NAME/relabelled.csv the relabel list it was given (`relabel=FILE`), if any
    runs/NAME/data.json      the source the user gave (a zip or folder), the content hash of its
                             usable pictures, where they were unpacked (`root`), counts and skips

Training, resume, distributed workers, calibration, evaluation and export all read a run's
split through `split`, so where the pictures are found is decided here alone: where the
recorded `root` is on this machine, there; otherwise (another machine, another $CATDOG_HOME)
the source is prepared again here, and its pictures must hash the same.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from catdog.config import Config
from catdog.data import shards
from catdog.data.prepare import Example, load_split, prepare, read_report
from catdog.errors import DataError

EXCLUDED, RELABELLED = "excluded.csv", "relabelled.csv"  # a run's copies of the lists it was trained with
LISTS = {"exclude": EXCLUDED, "relabel": RELABELLED}


def check(cfg: Config) -> tuple[Path, dict]:
    """The data's work folder and report (`prepare`), checked to give usable train and val splits."""
    for key, listed in (("exclude", cfg.exclude), ("relabel", cfg.relabel)):
        if listed and not Path(listed).is_file():
            raise DataError(f"{key}={listed}: no such file (expected the list `catdog audit --{key}-out` wrote)")
    work = prepare(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, exclude=cfg.exclude,
                   relabel=cfg.relabel, near_duplicate_bits=cfg.near_duplicate_bits)
    report = read_report(work)
    source = report["settings"]["source"]
    if not report["images"]:
        raise DataError(f"{source}: no usable cat or dog pictures (expected train/cat.N.jpg, cat/ and dog/ "
                        f"folders, or PetImages/Cat and PetImages/Dog)")
    if cfg.shards:
        shards.check(cfg.shards, work, cfg.image_size)
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
    for key, copy in LISTS.items():
        if listed := report["settings"].get(key):
            shutil.copy(listed, run_dir / copy)  # the list itself; data.json keeps its name and hash
    summary = {k: report[k] for k in ("settings", "content_sha256", "root", "images", "counts", "skipped_by_reason")}
    (run_dir / "data.json").write_text(json.dumps(summary, indent=2) + "\n")
    return tuple(split(run_dir, name, cfg.max_images, cfg.seed) for name in ("train", "val"))


def root(run_dir: str | os.PathLike, own_copy: bool = False) -> str:
    """Where this machine finds the run's pictures (the folder its manifest's paths are relative to).

    The recorded `root`, where it is on this machine; otherwise, or with `own_copy` (a worker of a
    multi-machine run, which must not read another machine's folder), the recorded source
    prepared here (a zip unpacked under this $CATDOG_HOME), checked to hold the same pictures.
    """
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "data.json").read_text())
    recorded = summary["root"]
    if not own_copy and Path(recorded).is_dir():
        return recorded
    settings = summary["settings"]
    source = Path(settings["source"])
    if not source.exists():
        raise DataError(f"{run_dir}: its data {source} is not on this machine"
                        f"{'' if own_copy else f' (nor its unpacked copy {recorded})'}: has the data moved? "
                        f"Give every machine the same path (a shared mount), or copy the data there")
    # The run's own copies of its lists: the files it was given may not be on this machine.
    kept = {key: run_dir / copy if settings.get(key) else "" for key, copy in LISTS.items()}
    work = prepare(source, settings["val_fraction"], settings["test_fraction"], settings["split_seed"],
                   near_duplicate_bits=settings.get("near_duplicate_bits", 0), **kept)
    report = read_report(work)
    if not _same_pictures(summary, report, work, run_dir):
        raise DataError(f"{run_dir}: {source} on this machine does not hold the pictures the run was made from "
                        f"(another content hash); give every machine the same data")
    return report["root"]


def _same_pictures(summary: dict, report: dict, work: Path, run_dir: Path) -> bool:
    if "content_sha256" in summary:
        return summary["content_sha256"] == report["content_sha256"]
    # A run recorded before content hashes: its manifest names the same files in the same splits.
    return (work / "manifest.csv").read_bytes() == (run_dir / "manifest.csv").read_bytes()


def split(run_dir: str | os.PathLike, name: str, max_images: int = 0, seed: int = 0,
          own_copy: bool = False, pictures: bool = True) -> list[Example]:
    """One split ("train", "val", "test", "all") of a run folder's data, as `load_split` gives it.

    With `pictures=False` (a worker that reads the run's shards), the examples keep the
    recorded paths, which need not be on this machine.
    """
    run_dir = Path(run_dir)
    where = root(run_dir, own_copy) if pictures else json.loads((run_dir / "data.json").read_text())["root"]
    return load_split(run_dir / "manifest.csv", where, name, max_images, seed)
