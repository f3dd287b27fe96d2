"""`catdog predict`'s front (catdog.inference.engines): inputs from a list, the --max-errors policy,
and the Python function the flags mirror. The Ray engine itself is tested in test_ray_engine.py."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import synthetic_image

from catdog import cli
from catdog.errors import InputsFailed, UsageError
from catdog.inference import engines
from catdog.inference.records import Tally


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    rng = np.random.default_rng(0)
    for i in range(6):
        synthetic_image(i % 2, rng).save(root / f"{i}.png")
    (root / "broken.jpg").write_text("not a picture")
    return root


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_list_file_adds_its_lines_as_written_after_the_paths(photos, capsys, monkeypatch):
    monkeypatch.chdir(photos)
    listing = photos / "list.txt"
    listing.write_text("3.png\n\n  \r\nbroken.jpg\r\n*.png\n5.png")  # a glob in a list is a name, not a pattern
    code, out, err = run(capsys, "predict", "0.png", "--from-list", listing, "--format", "csv")
    rows = out.splitlines()
    assert code == 1 and rows[0].startswith("path,label,p_dog")
    assert [r.split(",")[0] for r in rows[1:]] == ["0.png", "3.png", "broken.jpg", "*.png", "5.png"]
    assert "*.png: No such file or directory" in rows[4]
    assert "2 of 5 file(s) could not be read" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("1.png\n2.png\n"))
    code, out, _ = run(capsys, "predict", "--from-list", "-", "--shard", "1/2")
    assert code == 0 and [json.loads(line)["path"] for line in out.splitlines()] == ["2.png"]


def test_max_errors_lets_a_finished_run_exit_0(photos, capsys):
    inputs = [photos / "0.png", photos / "broken.jpg", photos / "gone.png", photos / "1.png"]
    code, out, err = run(capsys, "predict", *inputs, "--max-errors", "2")
    assert code == 0 and len(out.splitlines()) == 4  # every input answered
    assert err.startswith("catdog: 2 of 4 file(s) could not be read, within --max-errors 2 (first: ")
    assert run(capsys, "predict", *inputs, "--max-errors", "2", "-q")[2] == ""
    code, out, err = run(capsys, "predict", *inputs, "--max-errors", "1")
    assert code == 1 and len(out.splitlines()) == 4 and "more than --max-errors 1 allows" in err
    assert run(capsys, "predict", *inputs, "--max-errors", "50%")[0] == 0
    assert run(capsys, "predict", *inputs, "--max-errors", "49%")[0] == 1


@pytest.mark.parametrize("text, allowed", [(None, 0), ("0", 0), ("3", 3), ("0.1%", 0.001), ("100%", 1.0)])
def test_max_errors_is_a_count_or_a_share(text, allowed):
    assert engines.parse_max_errors(text) == allowed


@pytest.mark.parametrize("text", ["-1", "1.5", "lots", "101%", "x%", "nan%"])
def test_max_errors_refuses_what_is_neither(text):
    with pytest.raises(UsageError, match="--max-errors"):
        engines.parse_max_errors(text)


def test_the_share_counts_the_inputs_answered():
    assert engines.check_failures(Tally(1000, 0), 0) is None
    assert "within --max-errors 0.5%" in engines.check_failures(Tally(1000, 5, "x: bad"), 0.005)
    with pytest.raises(InputsFailed, match="6 of 1000 .* more than --max-errors 0.5% allows"):
        engines.check_failures(Tally(1000, 6, "x: bad"), 0.005)
    with pytest.raises(InputsFailed, match=r"^1 of 1 file\(s\) could not be read \(first: x: bad\)$"):
        engines.check_failures(Tally(1, 1, "x: bad"), 0)  # the message scripts already know


def test_the_python_function_mirrors_the_flags(photos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / '4.png'}\n{photos / 'broken.jpg'}\n")
    records = engines.predict([photos / "0.png"], from_list=listing, batch_size=2)
    assert records.total is None  # a list file is not read ahead
    assert [r["path"] for r in records] == [str(photos / p) for p in ("0.png", "4.png", "broken.jpg")]
    shard = engines.predict([photos], shard=(0, 3))
    assert shard.total == 3 and [r["path"] for r in shard] == [str(photos / p) for p in ("0.png", "3.png", "broken.jpg")]
    with pytest.raises(UsageError, match="--workers goes with --engine ray"):
        engines.predict([photos], workers=2)
