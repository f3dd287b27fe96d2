"""A run's data found again: on this machine as recorded, or prepared anew from its source and checked."""

import json
import shutil

import pytest

from catdog import config
from catdog.data import run_data
from catdog.errors import DataError


@pytest.fixture
def run_dir(tmp_path, kaggle_tree):
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    run_data.record(run_dir, config.resolve("tiny", [f"data={kaggle_tree}"]))
    return run_dir


def test_the_run_records_its_source_and_the_content_hash_of_its_pictures(run_dir, kaggle_tree, tmp_path):
    summary = json.loads((run_dir / "data.json").read_text())
    assert summary["settings"]["source"] == str(kaggle_tree.resolve())
    assert len(summary["content_sha256"]) == 64
    moved = shutil.copytree(kaggle_tree, tmp_path / "elsewhere")  # the same pictures in another folder
    other = tmp_path / "runs" / "other"
    other.mkdir()
    run_data.record(other, config.resolve("tiny", [f"data={moved}"]))
    assert json.loads((other / "data.json").read_text())["content_sha256"] == summary["content_sha256"]


def test_a_worker_prepares_its_own_copy_and_reads_the_same_split(run_dir, catdog_home, monkeypatch, tmp_path):
    recorded = run_data.root(run_dir)
    assert recorded == json.loads((run_dir / "data.json").read_text())["root"]
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / "another-home"))
    own = run_data.root(run_dir, own_copy=True)
    names = [[e.path.name for e in run_data.split(run_dir, "val", own_copy=flag)] for flag in (False, True)]
    assert names[0] == names[1] and names[0]
    # A folder source is read in place, by every machine that has it at that path.
    assert own == recorded


def test_a_recorded_root_gone_from_this_machine_is_prepared_again_from_the_source(tmp_path, kaggle_tree, monkeypatch):
    import zipfile

    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(kaggle_tree.rglob("*.jpg")):
            z.write(path, path.relative_to(kaggle_tree))
    run_dir = tmp_path / "runs" / "z"
    run_dir.mkdir(parents=True)
    run_data.record(run_dir, config.resolve("tiny", [f"data={archive}"]))
    recorded = run_data.root(run_dir)
    shutil.rmtree(recorded)  # another machine, or a cleared cache: the unpacked copy is not here
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / "machine-2"))
    again = run_data.root(run_dir)
    assert again != recorded and again.startswith(str(tmp_path / "machine-2"))
    assert all(e.path.is_file() for e in run_data.split(run_dir, "all"))


def test_a_machine_without_the_source_or_with_other_pictures_is_refused_by_name(run_dir, kaggle_tree):
    moved = kaggle_tree.with_name("moved")
    kaggle_tree.rename(moved)
    with pytest.raises(DataError, match=f"its data {kaggle_tree} is not on this machine"):
        run_data.root(run_dir, own_copy=True)
    shutil.copytree(moved, kaggle_tree)
    next(kaggle_tree.rglob("cat.*.jpg")).unlink()  # one picture fewer: not the run's data
    with pytest.raises(DataError, match="does not hold the pictures the run was made from"):
        run_data.root(run_dir, own_copy=True)


def test_the_lists_are_recorded_and_used_again_from_the_run_folder(tmp_path, kaggle_tree, monkeypatch):
    listed, relabel = tmp_path / "exclude.csv", tmp_path / "relabel.csv"
    listed.write_text("path,sha256\ntrain/cat.4.jpg,\n")
    relabel.write_text("path,new_label\ntrain/cat.5.jpg,dog\n")
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    run_data.record(run_dir, config.resolve("tiny", [f"data={kaggle_tree}", f"exclude={listed}",
                                                     f"relabel={relabel}", "max_images=0"]))
    assert (run_dir / run_data.EXCLUDED).read_text() == listed.read_text()
    assert (run_dir / run_data.RELABELLED).read_text() == relabel.read_text()
    assert json.loads((run_dir / "data.json").read_text())["settings"]["exclude"] == str(listed.resolve())

    def labels(**kw):
        return {e.path.name: e.label for e in run_data.split(run_dir, "all", **kw)}

    assert "cat.4.jpg" not in labels() and labels()["cat.5.jpg"] == 1
    listed.unlink()  # gone from where they were: another machine prepares the data with the run's own copies
    relabel.unlink()
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / "another-home"))
    assert "cat.4.jpg" not in labels(own_copy=True) and labels(own_copy=True)["cat.5.jpg"] == 1
    with pytest.raises(DataError, match="exclude=.*no such file"):
        run_data.check(config.resolve("tiny", [f"data={kaggle_tree}", f"exclude={listed}"]))
