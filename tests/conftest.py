"""Synthetic image trees and shared fixtures; no test reads a real photo except those marked slow."""

from __future__ import annotations

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


def write_kaggle_tree(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """root/train/cat.N.jpg and dog.N.jpg, as in Kaggle's train.zip."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            synthetic_image(label, rng).save(root / "train" / f"{name}.{i}.jpg", quality=95)
    return root


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


@pytest.fixture
def imagenet_weights() -> Path:
    """The Keras cache folder with MobileNet's ImageNet weights; skips where ../shared lacks them."""
    models = Path(os.environ["KERAS_HOME"]) / "models"
    if not (models / "mobilenet_1_0_224_tf_no_top.h5").exists():
        pytest.skip(f"offline ImageNet weights not found in {MOBILENET_WEIGHTS}")
    return models
