"""Every subcommand once, end to end, through a subprocess, as a user would run it."""

import csv
import functools
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
from conftest import synthetic_image, write_kaggle_tree


def catdog(*args, env=None):
    return subprocess.run([sys.executable, "-m", "catdog.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture
def zipped_tree(tmp_path):
    tree = write_kaggle_tree(tmp_path / "tree", per_class=12)
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tree / "train").iterdir()):
            zf.write(path, f"train/{path.name}")
        zf.writestr("train/dog.99.jpg", b"")  # one broken entry
    return archive


def test_prepare_train_evaluate_predict(tmp_path, zipped_tree):
    out = catdog("prepare", "--data", zipped_tree)
    assert out.returncode == 0, out.stderr
    assert "24 images" in out.stdout and "skipped 1: empty file" in out.stdout

    out = catdog("train", "--preset", "tiny", "--data", zipped_tree, f"runs_dir={tmp_path / 'runs'}", "name=cli")
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "runs" / "cli"
    assert out.stdout.splitlines() == [str(run_dir)]  # stdout: the result only; Keras's epoch lines on stderr
    assert "val_loss" in out.stderr  # not a terminal: a line per epoch, no bar

    out = catdog("evaluate", run_dir)
    assert out.returncode == 0, out.stderr
    assert "log_loss" in out.stdout and "confusion" in out.stdout
    assert json.loads((run_dir / "metrics_test.json").read_text())["n"] == 2  # round(10% of 12) per class

    out = catdog("calibrate", run_dir)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads((run_dir / "model.json").read_text())
    out = catdog("calibrate", run_dir, "--unknown-budget", "2")
    assert out.returncode == 2 and "unknown_budget" in out.stderr and "Traceback" not in out.stderr

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in (3, 1, 2):
        synthetic_image(i % 2, rng).save(images / f"{i}.jpg")
    out = catdog("predict", images, "--model", run_dir, "--kaggle-submission", tmp_path / "sub.csv")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [os.path.basename(r["path"]) for r in records] == ["1.jpg", "2.jpg", "3.jpg"]
    with open(tmp_path / "sub.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"] and [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert all(0 <= float(r[1]) <= 1 for r in rows[1:])

    (images / "broken.jpg").write_text("not an image")
    out = catdog("predict", images / "broken.jpg", images / "1.jpg", "--model", run_dir / "model.keras",
                 "--format", "csv")
    assert out.returncode == 1  # a file failed, the other was still predicted
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert "not a recognised image format" in rows[0]["error"] and rows[1]["label"] in ("cat", "dog")
    assert "1 of 2 file(s) could not be read" in out.stderr


def test_resume_with_overrides_is_refused(tmp_path):
    out = catdog("train", "--resume", tmp_path, "epochs=3")
    assert out.returncode == 2 and "drop the overrides" in out.stderr


def test_clear_errors_without_traceback(tmp_path):
    out = catdog("train", "epoch=3")
    assert out.returncode == 2 and "unknown config key 'epoch' (did you mean epochs?)" in out.stderr and "Traceback" not in out.stderr
    out = catdog("prepare", "--data", tmp_path / "missing.zip")
    assert out.returncode == 2 and "does not exist" in out.stderr
    out = catdog("predict", "x.jpg", "--model", tmp_path / "nothing")
    assert out.returncode == 2 and "not found" in out.stderr


@pytest.fixture
def file_server(tmp_path):
    """A plain HTTP server on 127.0.0.1 serving tmp_path/www, stopped after the test."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_and_keeps_no_partial_file(tmp_path, file_server, zipped_tree):
    www, url = file_server
    (www / "pets.zip").write_bytes(zipped_tree.read_bytes())
    import hashlib
    digest = hashlib.sha256(zipped_tree.read_bytes()).hexdigest()
    dest = tmp_path / "downloads"

    out = catdog("download", "--url", f"{url}/pets.zip", "--dest", dest, "--sha256", "0" * 64)
    assert out.returncode == 2 and "does not match" in out.stderr
    assert not dest.exists()  # no half-written or unverified file, nor the folder made for it

    out = catdog("download", "--url", f"{url}/missing.zip", "--dest", dest)
    assert out.returncode == 2 and "404" in out.stderr and not dest.exists()

    out = catdog("download", "--url", f"{url}/pets.zip", "--dest", dest, "--sha256", digest)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{dest / 'pets.zip'}\n"  # the file's path, for a script to use
    assert (dest / "pets.zip").read_bytes() == zipped_tree.read_bytes()

    (www / "fake.zip").write_text("<html>a login page, not a zip</html>")
    out = catdog("download", "--url", f"{url}/fake.zip", "--dest", dest)
    assert out.returncode == 2 and "not a zip" in out.stderr and not (dest / "fake.zip").exists()

    # A failed download into folders it had to make leaves none of them behind; a folder that was there stays.
    out = catdog("download", "--url", f"{url}/missing.zip", "--dest", tmp_path / "new" / "deeper")
    assert out.returncode == 2 and "404" in out.stderr and not (tmp_path / "new").exists()
    assert list(dest.iterdir()) == [dest / "pets.zip"]


def test_downloaded_zip_is_found_by_prepare(tmp_path, file_server, zipped_tree, catdog_home):
    www, url = file_server
    (www / "kagglecatsanddogs.zip").write_bytes(zipped_tree.read_bytes())
    out = catdog("download", "--url", f"{url}/kagglecatsanddogs.zip")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{catdog_home / 'downloads' / 'kagglecatsanddogs.zip'}\n"
    assert (catdog_home / "downloads" / "kagglecatsanddogs.zip").read_bytes() == zipped_tree.read_bytes()
    out = catdog("prepare")  # no --data: the cache is the last place looked
    assert out.returncode == 0 and "24 images" in out.stdout, out.stderr
