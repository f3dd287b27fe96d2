import csv
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image

from catdog.data import prepare as data


@pytest.mark.parametrize("relative, label", [
    ("train/cat.12.jpg", "cat"), ("train/dog.7.jpg", "dog"), ("Dog.7.JPG", "dog"),
    ("PetImages/Cat/1.jpg", "cat"), ("PetImages/Dog/9.jpg", "dog"),
    ("pets/cats/x.png", "cat"), ("pets/Dogs/x.png", "dog"), ("dog/sub/cat.1.jpg", "dog"),
    ("train/catalog.jpg", None), ("train/hotdog.1.jpg", None), ("other/1.jpg", None),
])
def test_label_of(relative, label):
    assert data.label_of(Path(relative)) == label


def _manifest(work):
    with open(work / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_prepare_reports_bad_files_and_splits(kaggle_tree):
    train = kaggle_tree / "train"
    (train / "cat.900.jpg").write_bytes(b"")
    (train / "dog.901.jpg").write_text("not a picture")
    (train / "dog.902.jpg").write_bytes((train / "dog.1.jpg").read_bytes()[:300])
    shutil.copy(train / "cat.1.jpg", train / "cat.903.jpg")  # an exact duplicate
    (train / "notes.txt").write_text("ignored, not an image name")
    (train / "mystery.jpg").write_bytes((train / "cat.2.jpg").read_bytes())
    work = data.prepare(kaggle_tree)
    report = json.loads((work / "report.json").read_text())
    assert report["images"] == 80
    assert report["skipped_by_reason"] == {
        "empty file": 1, "not a recognised image format": 1, "corrupt or truncated image": 1,
        "duplicate": 1, "no label: neither a cat/dog folder nor a cat./dog. name": 1}
    assert report["ignored_non_images"] == 1
    assert {f["path"] for f in report["skipped_files"]} >= {"train/cat.900.jpg", "train/dog.901.jpg"}
    rows = _manifest(work)
    counts = {(s, c): sum(r["split"] == s and r["label"] == c for r in rows)
              for s in data.SPLITS for c in data.CLASS_NAMES}
    assert counts == {("train", "cat"): 32, ("val", "cat"): 4, ("test", "cat"): 4,
                      ("train", "dog"): 32, ("val", "dog"): 4, ("test", "dog"): 4}


def test_split_is_the_same_from_a_zip_in_another_place(kaggle_tree, tmp_path):
    first = {r["path"]: r["split"] for r in _manifest(data.prepare(kaggle_tree))}
    archive = tmp_path / "elsewhere" / "train.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((kaggle_tree / "train").iterdir(), reverse=True):  # another order
            zf.write(path, f"train/{path.name}")
    second = {r["path"]: r["split"] for r in _manifest(data.prepare(archive))}
    assert first == second


def _split_by_content(work):
    """{sha256 of a picture's bytes: its split}, whatever the picture is called."""
    root = Path(data.read_report(work)["root"])
    return {hashlib.sha256((root / r["path"]).read_bytes()).hexdigest(): r["split"] for r in _manifest(work)}


def test_split_follows_each_pictures_content_not_its_name_or_place(kaggle_tree, tmp_path):
    """The same pictures under other names, so listed in another order, land in the same splits.

    Catches a split keyed on a file's position in the listing (or on its name): the zip test
    above keeps every name, so its listing, sorted by name, is the same in both runs.
    """
    first = _split_by_content(data.prepare(kaggle_tree))
    renamed = tmp_path / "renamed"
    for label in data.CLASS_NAMES:
        (renamed / f"{label}s").mkdir(parents=True)
        pictures = sorted((kaggle_tree / "train").glob(f"{label}.*.jpg"))
        for new_number, picture in zip(np.random.default_rng(7).permutation(len(pictures)), pictures, strict=True):
            shutil.copy(picture, renamed / f"{label}s" / f"photo-{new_number:03d}.jpg")
    second = _split_by_content(data.prepare(renamed))
    assert len(first) == 80 and set(first.values()) == set(data.SPLITS)
    assert second == first


def test_split_seed_changes_the_split(kaggle_tree):
    first = {r["path"]: r["split"] for r in _manifest(data.prepare(kaggle_tree))}
    other = {r["path"]: r["split"] for r in _manifest(data.prepare(kaggle_tree, split_seed="other"))}
    assert first != other


def test_class_folders_and_petimages(tmp_path):
    rng = np.random.default_rng(0)
    for folder, label in [("PetImages/Cat", 0), ("PetImages/Dog", 1)]:
        (tmp_path / folder).mkdir(parents=True)
        for i in range(10):
            synthetic_image(label, rng).save(tmp_path / folder / f"{i}.jpg")
    (tmp_path / "PetImages/Cat/Thumbs.db").write_bytes(b"\0" * 10)
    report = json.loads((data.prepare(tmp_path / "PetImages") / "report.json").read_text())
    assert report["images"] == 20 and report["ignored_non_images"] == 1
    assert report["counts"] == {"test/cat": 1, "test/dog": 1, "train/cat": 8, "train/dog": 8,
                                "val/cat": 1, "val/dog": 1}


def test_resolve_source(tmp_path, monkeypatch, catdog_home):
    with pytest.raises(FileNotFoundError, match="catdog download"):
        data.resolve_source()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.resolve_source(tmp_path / "missing.zip")
    monkeypatch.setenv("CATDOG_DATA", str(tmp_path))
    assert data.resolve_source() == tmp_path
    monkeypatch.delenv("CATDOG_DATA")
    (catdog_home / "downloads").mkdir(parents=True)
    (catdog_home / "downloads" / "kagglecatsanddogs_5340.zip").write_bytes(b"")
    assert data.resolve_source().name == "kagglecatsanddogs_5340.zip"


def test_load_split_sample_is_seeded_and_mixed(kaggle_tree):
    work = data.prepare(kaggle_tree)
    root = json.loads((work / "report.json").read_text())["root"]
    sample = data.load_split(work / "manifest.csv", root, "train", max_images=10, seed=3)
    assert sample == data.load_split(work / "manifest.csv", root, "train", max_images=10, seed=3)
    assert len(sample) == 10 and {e.label for e in sample} == {0, 1}
    assert all(e.path.exists() for e in sample)


def test_prepare_is_reused_until_the_source_changes(kaggle_tree):
    work = data.prepare(kaggle_tree)
    stamp = (work / "report.json").stat().st_mtime_ns
    assert data.prepare(kaggle_tree) == work and (work / "report.json").stat().st_mtime_ns == stamp
    synthetic_image(0, np.random.default_rng(5)).save(kaggle_tree / "train" / "cat.500.jpg")
    report = json.loads((data.prepare(kaggle_tree) / "report.json").read_text())
    assert report["images"] == 81


def test_new_split_settings_do_not_re_extract_the_zip(kaggle_tree, tmp_path):
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((kaggle_tree / "train").iterdir()):
            zf.write(path, f"train/{path.name}")
    work = data.prepare(archive)
    marker = work / "images" / "train" / "cat.0.jpg"
    inode = marker.stat().st_ino
    data.prepare(archive, split_seed="another")
    assert marker.stat().st_ino == inode  # same file: nobody reading the images lost them
    archive.write_bytes(archive.read_bytes())  # touched: a new mtime means a new zip
    data.prepare(archive)
    assert marker.exists()


def test_kaggle_download_all_zip_is_understood(kaggle_tree, tmp_path):
    """Kaggle's "Download All": train.zip and test1.zip inside one zip, with sampleSubmission.csv."""
    train = tmp_path / "train.zip"
    with zipfile.ZipFile(train, "w") as zf:
        for path in sorted((kaggle_tree / "train").iterdir()):
            zf.write(path, f"train/{path.name}")
    test1 = tmp_path / "test1.zip"
    with zipfile.ZipFile(test1, "w") as zf:
        zf.write(kaggle_tree / "train" / "cat.0.jpg", "test1/1.jpg")
    everything = tmp_path / "dogs-vs-cats.zip"
    with zipfile.ZipFile(everything, "w") as zf:
        zf.write(train, "train.zip")
        zf.write(test1, "test1.zip")
        zf.writestr("sampleSubmission.csv", "id,label\n1,0.5\n")
    report = json.loads((data.prepare(everything) / "report.json").read_text())
    plain = json.loads((data.prepare(train) / "report.json").read_text())
    assert report["images"] == plain["images"] == 80 and report["counts"] == plain["counts"]
    assert report["skipped"] == 0  # test1 (no labels) left out, not 'skipped: no label'


def test_a_symlink_out_of_the_data_folder_is_skipped_not_read(kaggle_tree, tmp_path):
    outside = tmp_path / "secret.jpg"
    shutil.copy(kaggle_tree / "train" / "cat.0.jpg", outside)
    (kaggle_tree / "train" / "cat.500.jpg").symlink_to(outside)
    (kaggle_tree / "train" / "cat.501.jpg").symlink_to(kaggle_tree / "train" / "cat.1.jpg")  # inside: fine
    report = json.loads((data.prepare(kaggle_tree) / "report.json").read_text())
    assert {"path": "train/cat.500.jpg", "reason": "a symlink out of the data folder"} in report["skipped_files"]
    assert not any(item["path"] == "train/cat.501.jpg" and "symlink" in item["reason"]
                   for item in report["skipped_files"])


def test_a_copy_under_the_other_label_is_a_conflict_naming_both_files(kaggle_tree):
    shutil.copy(kaggle_tree / "train" / "cat.3.jpg", kaggle_tree / "train" / "dog.900.jpg")
    work = data.prepare(kaggle_tree)
    report = data.read_report(work)
    assert report["conflicts"] == [dict(paths=["train/cat.3.jpg", "train/dog.900.jpg"], labels=["cat", "dog"])]
    assert report["skipped_by_reason"] == {"conflict": 1}
    assert "train/cat.3.jpg (cat) and train/dog.900.jpg (dog)" in data.format_summary(work, report)
    # The first copy keeps its place, so that a split made before the check stays as it was.
    assert {r["path"] for r in _manifest(work)} == {f"train/{n}.{i}.jpg" for n in ("cat", "dog") for i in range(40)}


def test_excluded_pictures_are_left_out_and_the_others_keep_their_splits(kaggle_tree, tmp_path):
    before = {r["path"]: r["split"] for r in _manifest(data.prepare(kaggle_tree))}
    digest = hashlib.sha256((kaggle_tree / "train" / "dog.5.jpg").read_bytes()).hexdigest()
    listed = tmp_path / "exclude.csv"
    listed.write_text(f"path,sha256,issue\ntrain/cat.7.jpg,,neither\nelsewhere/dog.5.jpg,{digest},label_error\n")
    work = data.prepare(kaggle_tree, exclude=listed)
    after = {r["path"]: r["split"] for r in _manifest(work)}
    assert set(before) - set(after) == {"train/cat.7.jpg", "train/dog.5.jpg"}
    assert all(before[path] == split for path, split in after.items())
    report = data.read_report(work)
    assert report["skipped_by_reason"] == {"excluded": 2} and report["settings"]["exclude_sha256"]
    plain = tmp_path / "plain.txt"  # one path or digest a line
    plain.write_text(f"# by hand\n{digest}\n")
    assert "train/dog.5.jpg" not in {r["path"] for r in _manifest(data.prepare(kaggle_tree, exclude=plain))}
    assert data.read_report(data.prepare(kaggle_tree))["images"] == 80  # without the list, all again


def _near_copy_in_another_split(tree: Path) -> tuple[str, str]:
    """(original, copy): a slightly resized, recompressed copy of a cat that the default split puts elsewhere."""
    splits = {r["path"]: r["split"] for r in _manifest(data.prepare(tree))}
    for i in range(40):
        original = f"train/cat.{i}.jpg"
        from PIL import Image

        Image.open(tree / original).resize((44, 44)).save(tree / "train" / "cat.950.jpg", quality=85)
        copy = {r["path"]: r["split"] for r in _manifest(data.prepare(tree))}
        if copy["train/cat.950.jpg"] != splits[original]:
            return original, "train/cat.950.jpg"
    raise AssertionError("no near copy landed in another split")


def test_near_duplicates_go_into_one_split_only_when_asked(kaggle_tree):
    original, copy = _near_copy_in_another_split(kaggle_tree)
    default = {r["path"]: r["split"] for r in _manifest(data.prepare(kaggle_tree))}
    assert default[original] != default[copy]  # off by default: existing splits stay as they are
    together = {r["path"]: r["split"] for r in _manifest(data.prepare(kaggle_tree, near_duplicate_bits=6))}
    assert together[original] == together[copy]
    assert sum(default[p] != together[p] for p in default) <= 2  # only the group moved


def test_relabelled_pictures_change_label_and_keep_their_split(kaggle_tree, tmp_path):
    before = {r["path"]: (r["label"], r["split"]) for r in _manifest(data.prepare(kaggle_tree))}
    digest = hashlib.sha256((kaggle_tree / "train" / "dog.8.jpg").read_bytes()).hexdigest()
    listed = tmp_path / "relabel.csv"
    listed.write_text(f"path,sha256,label,new_label\ntrain/cat.2.jpg,,cat,dog\nmoved/x.jpg,{digest.upper()},dog,cat\n")
    work = data.prepare(kaggle_tree, relabel=listed)
    after = {r["path"]: (r["label"], r["split"]) for r in _manifest(work)}
    assert after["train/cat.2.jpg"] == ("dog", before["train/cat.2.jpg"][1])
    assert after["train/dog.8.jpg"] == ("cat", before["train/dog.8.jpg"][1])
    assert {p for p in after if after[p] != before[p]} == {"train/cat.2.jpg", "train/dog.8.jpg"}
    assert len(data.read_report(work)["relabelled"]) == 2
    listed.write_text("path,new_label\ntrain/cat.2.jpg,horse\n")
    with pytest.raises(data.DataError, match="new_label 'horse'"):
        data.prepare(kaggle_tree, relabel=listed)
