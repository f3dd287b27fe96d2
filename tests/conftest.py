"""Synthetic image trees and shared fixtures; no test reads a real photo except those marked slow."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KAGGLE_ZIP = SHARED / "datasets" / "dogs-vs-cats" / "train.zip"
MOBILENET_WEIGHTS = SHARED / "keras" / "models"


def synthetic_image(label: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """Class 0 ("cat"): horizontal stripes; class 1 ("dog"): vertical. Random colours and phase."""
    period = rng.integers(4, 9)
    phase = rng.integers(0, period)
    wave = ((np.arange(size) + phase) // (period // 2)) % 2
    mask = np.tile(wave[:, None], (1, size)) if label == 0 else np.tile(wave[None, :], (size, 1))
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(fg - bg).sum() < 150:
        fg = rng.integers(0, 256, 3)
    pixels = np.where(mask[..., None] == 1, fg, bg) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def smooth_photo(seed: int, size: int = 160) -> np.ndarray:
    """Smooth random blobs: a picture with structure at several scales, unlike noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def dtype_policies(model) -> set[str]:
    """The dtype policies of a classifier's layers ({"float32"} for a model saved in float32)."""
    return {layer.dtype_policy.name for sub in ("features", "head") for layer in model.get_layer(sub).layers}


def write_kaggle_tree(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """root/train/cat.N.jpg and dog.N.jpg, as in Kaggle's train.zip."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            synthetic_image(label, rng).save(root / "train" / f"{name}.{i}.jpg", quality=95)
    return root


@contextlib.contextmanager
def module_workspace(tmp_path_factory, name: str, per_class: int):
    """(root, Kaggle-style tree) for a module-scoped fixture, with its own CATDOG_HOME while the
    block runs (the per-test `catdog_home` is not set up for module fixtures)."""
    root = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CATDOG_HOME", str(root / "home"))
        yield root, write_kaggle_tree(root / "data", per_class=per_class)


@pytest.fixture(autouse=True)
def catdog_home(tmp_path, monkeypatch):
    """Every test gets its own cache folder, never the user's."""
    home = tmp_path / "catdog-home"
    monkeypatch.setenv("CATDOG_HOME", str(home))
    monkeypatch.delenv("CATDOG_DATA", raising=False)
    return home


@pytest.fixture
def kaggle_tree(tmp_path) -> Path:
    return write_kaggle_tree(tmp_path / "kaggle")


def pytest_configure(config):
    """Points Keras at a private cache before anything imports it (Keras reads KERAS_HOME once).

    The cache holds the offline MobileNet ImageNet weights when ../shared has them.
    """
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="catdog-keras-home-"))
    if MOBILENET_WEIGHTS.is_dir():
        shutil.copytree(MOBILENET_WEIGHTS, home / "models")
    os.environ["KERAS_HOME"] = str(home)
    config.catdog_keras_home = home


def pytest_unconfigure(config):
    """Removes that cache (about 90 MB of weights a run) once the tests are done."""
    home = getattr(config, "catdog_keras_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


def require_data(found: bool, what: str) -> None:
    """Skips the test where `what` (the real Kaggle zip or weights from ../shared, the packages of
    an extra) is missing, except under CATDOG_REQUIRE_DATA=1 (set by `.ci/run`), where a missing
    one fails the test instead of hiding it."""
    if not found:
        if os.environ.get("CATDOG_REQUIRE_DATA") == "1":
            pytest.fail(f"{what} (CATDOG_REQUIRE_DATA=1: this run must have it)")
        pytest.skip(what)


def mobilenet_weights() -> Path:
    """The Keras cache folder with MobileNet's ImageNet weights, as `require_data` finds them."""
    models = Path(os.environ["KERAS_HOME"]) / "models"
    require_data((models / "mobilenet_1_0_224_tf_no_top.h5").exists(),
                 f"offline ImageNet weights not found in {MOBILENET_WEIGHTS}")
    return models


@pytest.fixture
def imagenet_weights() -> Path:
    """The Keras cache folder with MobileNet's ImageNet weights (a skip or a failure without them)."""
    return mobilenet_weights()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CATDOG_REQUIRE_DATA=1 (CI) no test may skip, by any path: CI has ../shared, Chromium
    and every package of the [test] extra, so a skip there is a test that did not run."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CATDOG_REQUIRE_DATA") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and CATDOG_REQUIRE_DATA=1 allows no skip: {reason}"
    return report


CHROMIUM = Path(os.environ.get("CATDOG_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture
def browser_page():
    """A Playwright page in Debian's headless Chromium (no browser download, no network).

    Skips where Chromium is not installed, except under CATDOG_REQUIRE_BROWSER=1 (set by
    `.ci/run`), where a missing browser fails the test instead of hiding it.
    """
    if not CHROMIUM.exists():
        if os.environ.get("CATDOG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.console_errors = errors
        try:
            yield page
        finally:
            browser.close()


def wait_until_ready(url: str, alive=lambda: None, timeout: float = 120) -> None:
    """Polls `url`/readyz until it answers 200; `alive()` may assert the server process still runs."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "catdog serve never became ready"
        time.sleep(0.2)
