"""Where the data is, which files are cats and dogs, and a deterministic train/val/test split.

`prepare` decodes every image once, reports the unreadable ones (skipped, never fatal) and
writes `manifest.csv` (path, label, split) plus `report.json` into a work folder under the
catdog home (`$CATDOG_HOME`, default `~/.cache/catdog`). Accepted sources, as a zip or a folder:

- Kaggle's layout: `train/cat.0.jpg`, `train/dog.0.jpg` (label = file-name prefix);
- a folder per class: `cat/`, `Cats/`, `dog/`, ... at any depth;
- Microsoft's `PetImages/Cat`, `PetImages/Dog`.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import re
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog.data.archive import extract_zip
from catdog.data.corrections import Corrections
from catdog.data.images import ImageError, is_image_name, load_image
from catdog.data.similar import phash
from catdog.data.splits import split_pictures
from catdog.errors import DataError
from catdog.home import home

CLASS_NAMES = ("cat", "dog")  # label 0, label 1: the model's logit is the evidence for "dog"
SPLITS = ("train", "val", "test")
_FOLDER_LABELS = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}
_KAGGLE_NAME = re.compile(r"^(cat|dog)[._\- ]", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    path: Path
    label: int
    split: str


def resolve_source(data: str | os.PathLike | None = None) -> Path:
    """`data` if given, else `$CATDOG_DATA`, else the first dataset found in `home()/downloads`."""
    chosen = data or os.environ.get("CATDOG_DATA")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data source {path} does not exist")
        return path
    downloads = home() / "downloads"
    found = sorted(downloads.glob("*.zip")) if downloads.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"no data: pass --data PATH (Kaggle train.zip, or a folder), set CATDOG_DATA, "
            f"or run `catdog download` to fill {downloads}"
        )
    return found[0]


def label_of(relative: Path) -> str | None:
    """'cat', 'dog' or None, from the folder names first, then Kaggle's file-name prefix."""
    for part in reversed(relative.parts[:-1]):
        if part.lower() in _FOLDER_LABELS:
            return _FOLDER_LABELS[part.lower()]
    match = _KAGGLE_NAME.match(relative.name)
    return match.group(1).lower() if match else None


def _check(path: Path, near_duplicate_bits: int = 0) -> tuple[str | None, str | None, int | None]:
    """(sha256 of the bytes, None, perceptual hash where asked for) for a usable image, else (None, reason, None)."""
    try:
        pixels = load_image(path)
        return hashlib.sha256(path.read_bytes()).hexdigest(), None, phash(pixels) if near_duplicate_bits else None
    except ImageError as error:
        return None, error.reason, None
    except OSError as error:
        return None, error.strerror or str(error), None


def _work_dir(source: Path) -> Path:
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:10]
    return home() / "prepared" / f"{source.stem}-{key}"


def _fingerprint(source: Path) -> list[int]:
    """File count, total bytes and newest mtime: any added, removed or edited file changes it."""
    stats = [source.stat()] if source.is_file() else [p.stat() for p in source.rglob("*") if p.is_file()]
    return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]


def source_root(source: Path) -> Path:
    """The folder of a source's files: a folder itself, or a zip extracted under its work folder (once)."""
    if source.is_dir():
        return source
    if not (source.is_file() and zipfile.is_zipfile(source)):
        raise DataError(f"{source}: expected a zip archive or a folder of pictures")
    work = _work_dir(source)
    made = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _extracted(source, work)
    except BaseException:
        if made:
            shutil.rmtree(work, ignore_errors=True)  # a failed start leaves nothing, in the cache too
        raise


def _extracted(archive: Path, work: Path) -> Path:
    """The zip's files under `work/images`, extracted again only when the zip itself changed.

    A change of split settings re-reads the files but does not replace them, so another
    process reading the images (training, evaluation) is not pulled from under.
    """
    root, stamp = work / "images", work / "images.json"
    fingerprint = json.dumps(_fingerprint(archive))
    if not (root.is_dir() and stamp.exists() and stamp.read_text() == fingerprint):
        stamp.unlink(missing_ok=True)
        # Kaggle's "Download All" zip holds train.zip (unpacked in place) and the unlabelled test1.zip.
        extract_zip(archive, root, unpack=("train.zip",), skip=("test1.zip",))
        stamp.write_text(fingerprint)
    return root


def scan(root: Path) -> tuple[list[tuple[Path, str]], list[tuple[str, str]], int]:
    """(labelled files, skipped files with reasons, count of ignored non-image files)."""
    labelled, skipped, ignored = [], [], 0
    # Symlinks too: a dangling one is a broken file to report, not nothing.
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts) or not is_image_name(rel):
            ignored += 1  # Thumbs.db, README.txt, resource forks: not pictures, not errors
        elif path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            skipped.append((str(rel), "a symlink out of the data folder"))  # never read what it points at
        elif (label := label_of(rel)) is None:
            skipped.append((str(rel), "no label: neither a cat/dog folder nor a cat./dog. name"))
        else:
            labelled.append((rel, label))
    return labelled, skipped, ignored


def _content_hash(seen: dict[str, tuple[str, str]]) -> str:
    """One SHA-256 of the usable pictures: each one's bytes, name and label. The same data gives
    the same hash on any machine, in any folder, from a zip or unpacked."""
    lines = sorted(f"{digest} {rel} {label}" for digest, (rel, label) in seen.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def prepare(data=None, val_fraction=0.1, test_fraction=0.1, split_seed="catdog-v1", force=False,
            exclude: str | os.PathLike = "", relabel: str | os.PathLike = "", near_duplicate_bits: int = 0) -> Path:
    """Makes (or reuses) the manifest for a data source and returns its work folder.

    Reused only while the source and the split settings are unchanged. `exclude` names a list of
    pictures to leave out, `relabel` one of labels to change (`catdog audit --exclude-out`,
    `--relabel-out`): both apply after the split is made, so every other picture keeps its split.
    `near_duplicate_bits` > 0 keeps pictures whose perceptual hashes differ by at most that many
    bits in one split (0: only exact copies).
    """
    source = resolve_source(data)
    work = _work_dir(source)
    settings = dict(source=str(source.resolve()), fingerprint=_fingerprint(source),
                    val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed)
    corrections = Corrections(exclude, relabel)
    settings.update(corrections.settings)  # only what is set: earlier splits' settings, and their reuse, stay
    if near_duplicate_bits:
        settings["near_duplicate_bits"] = near_duplicate_bits
    report_path = work / "report.json"
    if not force and report_path.exists() and json.loads(report_path.read_text())["settings"] == settings:
        return work
    root = source_root(source)
    work.mkdir(parents=True, exist_ok=True)
    labelled, skipped, ignored = scan(root)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        checks = list(pool.map(lambda item: _check(root / item[0], near_duplicate_bits), labelled))
    seen, dropped, conflicts, split_of = split_pictures(labelled, checks, split_seed, val_fraction, test_fraction,
                                                        near_duplicate_bits)
    excluded, relabelled = corrections.apply(seen)
    skipped += dropped + excluded
    rows = sorted((rel, label, split_of[d]) for d, (rel, label) in seen.items())
    with open(work / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    counts = collections.Counter(f"{split}/{label}" for _, label, split in rows)
    reasons = collections.Counter(_reason_key(reason) for _, reason in skipped)
    report = dict(settings=settings, root=str(root.resolve()), images=len(rows), counts=dict(sorted(counts.items())),
                  content_sha256=_content_hash(seen), ignored_non_images=ignored, skipped=len(skipped),
                  skipped_by_reason=dict(reasons), skipped_files=[dict(path=p, reason=r) for p, r in skipped],
                  conflicts=conflicts, relabelled=relabelled)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return work


def _reason_key(reason: str) -> str:
    """What a skip reason is counted under: its kind, without the file it names."""
    named = re.match(r"(conflict|excluded) (with|by) ", reason)
    return named.group(1) if named else reason.split(" (")[0].split(" of ")[0]


def load_split(manifest: Path, root: Path, split: str, max_images: int = 0, seed: int = 0) -> list[Example]:
    """The examples of one split ("all": every row), in manifest order; `max_images` > 0 takes a seeded sample."""
    with open(manifest, newline="") as f:
        examples = [Example(Path(root) / r["path"], CLASS_NAMES.index(r["label"]), r["split"])
                    for r in csv.DictReader(f) if split in ("all", r["split"])]
    if max_images and len(examples) > max_images:
        # A seeded sample, not the first N: the manifest is sorted, so its head is all cats.
        picks = np.random.default_rng(seed).choice(len(examples), max_images, replace=False)
        examples = [examples[i] for i in sorted(picks)]
    return examples


def read_report(work: str | os.PathLike) -> dict:
    """The `report.json` that `prepare` wrote into its work folder."""
    return json.loads((Path(work) / "report.json").read_text())


def format_summary(work: str | os.PathLike, report: dict) -> str:
    """What `catdog prepare` prints: the number of images, then one line per split/class and skip reason."""
    lines = [f"{report['images']} images from {report['settings']['source']} -> {work}/manifest.csv"]
    lines += [f"  {key:<10} {count}" for key, count in report["counts"].items()]
    lines += [f"  skipped {count}: {reason}" for reason, count in report["skipped_by_reason"].items()]
    lines += [f"  conflict: {a} ({la}) and {b} ({lb}) are the same picture"
              for (a, b), (la, lb) in ((c["paths"], c["labels"]) for c in report.get("conflicts", []))]
    if report.get("relabelled"):
        lines.append(f"  relabelled {len(report['relabelled'])}, as listed in {report['settings']['relabel']}")
    return "\n".join(lines)


def skipped_lines(work: str | os.PathLike, report: dict, shown: int = 20) -> list[str]:
    """The first `shown` skipped files, one line each, and where the rest are listed."""
    skipped = report["skipped_files"]
    lines = [f"skipped {item['path']}: {item['reason']}" for item in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"... and {len(skipped) - shown} more skipped files, listed in {work}/report.json")
    return lines
