"""`catdog predict --engine ray` through the CLI, each run a subprocess as a user's would be: the same
bytes as plain predict, an actor killed mid-run, no process left by a local Ray, the driver's
memory over 20,000 inputs, the missing extra, and plain predict never importing Ray.

One Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs) serves the module through $RAY_ADDRESS;
one test starts and stops a Ray of its own. Ray comes with the `test` extra (as `catdog[ray]`):
these tests fail, never skip, where it is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image

RAY = Path(sys.executable).with_name("ray")
MARK = "CATDOG_TEST_RAY_MARK"  # in the environment of every Ray process a test starts


def _catdog(*args, env=None, stdout=subprocess.PIPE, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "CATDOG_DEBUG": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "catdog.cli", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=300, **kwargs)


def _marked(mark: str) -> list[int]:
    """Processes whose environment carries `mark`: the Ray processes one test started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A run-like folder with a 32 px LiteRT model (the shipped one runs at 224 px: 40x the work)."""
    from conftest import write_kaggle_tree
    from test_export import SIZE, detector_model

    from catdog.export.exporter import export

    root = tmp_path_factory.mktemp("ray-model")
    folder = root / "model"
    folder.mkdir()
    detector_model().save(folder / "model.keras")
    meta = dict(class_names=["cat", "dog"], image_size=SIZE, temperature=1.5,
                unknown_thresholds={"p_pet": 0.5, "pet_energy": -100.0})
    (folder / "model.json").write_text(json.dumps(meta))
    export(folder / "model.keras", "tflite", out=folder / "model_float.tflite",
           data=write_kaggle_tree(root / "data", per_class=10))
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """300 synthetic pictures in two folders, one unreadable file and one empty one."""
    root = tmp_path_factory.mktemp("ray-photos")
    rng = np.random.default_rng(0)
    for i in range(300):
        folder = root / ("a" if i % 3 else "b")
        folder.mkdir(exist_ok=True)
        synthetic_image(i % 2, rng).save(folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    (root / "a" / "150.jpg").write_text("not a picture")
    (root / "b" / "151.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def cluster():
    """`ray start --head --block` on 127.0.0.1: the environment that points `catdog` at it.

    Its folder is under /tmp, not pytest's: Ray's socket paths must fit in 107 bytes.
    """
    mark, temp = secrets.token_hex(8), tempfile.mkdtemp(prefix="cdr-", dir="/tmp")
    port = _free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **auth, MARK: mark, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log = Path(temp) / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                                 "--include-dashboard=false", f"--object-store-memory={100 * 2**20}",
                                 f"--temp-dir={temp}", "--disable-usage-stats"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        while "will now block" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield {**auth, "RAY_ADDRESS": f"127.0.0.1:{port}", "head": head, "mark": mark}
    finally:
        head.send_signal(signal.SIGINT)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in _marked(mark):  # anything it left behind, by pid
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _joined(cluster: dict, **extra) -> dict:
    return {k: v for k, v in cluster.items() if k.startswith("RAY_")} | extra


def test_same_bytes_as_plain_predict_errors_included(model, photos, cluster):
    args = [photos, "--model", model, "--format", "csv", "--batch-size", "16"]
    plain = _catdog("predict", *args)
    assert plain.returncode == 1 and plain.stdout.count("\n") == 303, plain.stderr  # header + 302 inputs
    ray = _catdog("predict", *args, "--engine", "ray", "--workers", "2", env=_joined(cluster))
    assert ray.returncode == 1, ray.stderr
    assert ray.stdout == plain.stdout  # input order, every digit, the error rows
    assert ray.stderr == plain.stderr == "catdog: 2 of 302 file(s) could not be read (first: " \
        f"{photos / 'a' / '150.jpg'}: not a recognised image format)\n"
    done = _catdog("predict", *args, "--engine", "ray", "--workers", "2", "--order", "completion",
                   env=_joined(cluster))
    assert done.returncode == 1 and sorted(done.stdout.splitlines()) == sorted(plain.stdout.splitlines())
    assert cluster["head"].poll() is None and _marked(cluster["mark"])  # the cluster is left running


def test_an_actor_killed_mid_run_has_its_batches_answered_again(model, photos, cluster, tmp_path):
    listing = tmp_path / "inputs.txt"  # relative paths, from a list: the actors work in the driver's folder
    listing.write_text("".join(f"{p.relative_to(photos)}\n" for p in sorted(photos.rglob("*.*"))))
    args = ["--from-list", listing, "--model", model, "--batch-size", "8"]
    plain = _catdog("predict", *args, cwd=photos)
    killed = tmp_path / "killed"
    ray = _catdog("predict", *args, "--engine", "ray", "--workers", "2", cwd=photos,
                  env=_joined(cluster, CATDOG_TEST_KILL_ACTOR_AFTER=f"2:{killed}"))
    assert killed.exists()  # an actor did exit after its second batch, that batch unreturned
    assert ray.returncode == plain.returncode == 1, ray.stderr
    assert ray.stdout == plain.stdout  # every input answered once, in order
    assert len(ray.stdout.splitlines()) == 302 and ray.stderr == plain.stderr


def test_a_local_ray_is_started_and_stopped_with_no_process_left(photos, tmp_path):
    """No $RAY_ADDRESS: the shipped model (LiteRT, the default runtime) on a Ray of its own."""
    inputs = [*sorted((photos / "b").iterdir())[:20], photos / "a" / "150.jpg", photos / "gone.jpg",
              (photos / "a" / "001.jpg").as_uri(), "file:///nowhere/gone.png"]  # URIs are read by the actors
    plain = _catdog("predict", *inputs, "--batch-size", "8")
    mark, temp = secrets.token_hex(8), tempfile.mkdtemp(prefix="cdl-", dir="/tmp")
    token_file = Path.home() / ".ray" / "auth_token"
    had_token = token_file.exists()
    env = {MARK: mark, "RAY_TMPDIR": temp, "RAY_ADDRESS": ""}
    try:
        ray = _catdog("predict", *inputs, "--batch-size", "8", "--engine", "ray", "--workers", "2",
                      "--max-errors", "3", env=env)
        assert ray.returncode == 0 and plain.returncode == 1, ray.stderr
        assert ray.stdout == plain.stdout
        assert ray.stderr.startswith("catdog: 3 of 24 file(s) could not be read, within --max-errors 3")
        assert '"path": "file:///nowhere/gone.png", "error": "file:///nowhere/gone.png: No such file' in ray.stdout
        assert _marked(mark) == []  # raylet, GCS, workers: all gone when catdog returns
        assert os.listdir(temp) == []  # its session folder removed
        assert token_file.exists() == had_token  # its token was its own, not written to ~/.ray
    finally:
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


# A small parent for the driver: a child's peak RSS counts its parent's pages from before its exec,
# and pytest's process (TensorFlow loaded) would outweigh the driver.
MEASURE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def _driver(inputs: Path, cluster: dict, model: Path) -> tuple[float, list[str], float]:
    """(peak RSS of the `catdog predict --engine ray` process in MB, its stdout lines, the share of
    its run time still ahead when its first record came out)."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", MEASURE, sys.executable, "-m", "catdog.cli", "predict",
                                inputs, "--model", model, "--engine", "ray", "--workers", "2", "--format", "csv"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **_joined(cluster)})
    lines = [process.stdout.readline(), process.stdout.readline()]  # the header comes with the first record
    first = time.monotonic()
    lines += process.stdout.read().splitlines(keepends=True)
    err = process.stderr.read()
    assert process.wait(timeout=300) == 0, err
    ahead = (time.monotonic() - first) / (time.monotonic() - started)
    return int(err.split()[-1]) / 1024, lines, ahead


def test_the_driver_memory_does_not_grow_with_the_inputs(model, photos, cluster, tmp_path):
    sources = sorted((photos / "a").glob("*.jpg"))[:50]
    for count in (200, 20_000):
        folder = tmp_path / str(count)
        folder.mkdir()
        for i in range(count):  # links: 20,000 inputs in a blink, each read and answered
            os.link(sources[i % len(sources)], folder / f"{i:05d}.jpg")
    small, _, _ = _driver(tmp_path / "200", cluster, model)
    large, lines, ahead = _driver(tmp_path / "20000", cluster, model)
    print(f"driver peak RSS: {small:.1f} MB for 200 inputs, {large:.1f} MB for 20,000; "
          f"{ahead:.0%} of the run still ahead at the first record")
    assert len(lines) == 20_001 and lines[1].startswith(str(tmp_path / "20000" / "00000.jpg"))
    assert large - small <= 100, (small, large)  # the bound: 5 kB an input
    assert large - small <= 30, (small, large)  # 1.5 kB an input: pixels held would show
    assert ahead > 0.25  # records are written as batches finish, not gathered first


def test_without_ray_installed_the_engine_is_one_line_naming_the_extra(photos):
    code = ("import sys; sys.modules['ray'] = None; from catdog.cli import main; "  # as if not installed
            f"sys.exit(main(['predict', {str(photos / 'b')!r}, '--engine', 'ray']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("catdog: --engine ray needs Ray Data")
    assert "pip install 'catdog[ray]'" in done.stderr


def test_plain_predict_and_import_catdog_never_import_ray(model, photos):
    code = ("import sys, catdog, catdog.inference.engines; from catdog.cli import main; "
            f"code = main(['predict', {str(photos / 'b' / '000.png')!r}, '--model', {str(model)!r}]); "
            "assert code == 0, code; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'pandas', 'fsspec')); "
            "assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label"] in ("cat", "dog", "unknown")
