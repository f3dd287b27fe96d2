"""What a model was trained on: its run folder, data source and split settings.

`catdog evaluate --data` asks this to know whether some labelled pictures are the model's own
training data (then only its test split is fair to score) and how to split them the same way.
A run folder says so in `config.json` and `data.json`; the shipped model in its `model.json`
(`source.config`, whose `data` is relative to the checkout it was trained in).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from catdog import config as config_lib
from catdog.inference import model_files


def trained_on(model: str | os.PathLike | None = None) -> dict:
    """{"name", "run", "sources", "val_fraction", "test_fraction", "split_seed", "max_images", "seed"}.

    `sources` are the absolute paths the training data may have had (empty when unknown); `run`
    is the run folder, or None for a bare `.keras` file or the shipped model.
    """
    keras_file = model_files.keras_source(model_files.resolve(model, "keras"))
    folder = keras_file.parent
    cfg, sources, run, test_images = config_lib.Config(), [], None, None
    if (folder / "config.json").exists() and (folder / "data.json").exists():
        cfg = config_lib.load(folder / "config.json")
        summary = json.loads((folder / "data.json").read_text())
        sources = [Path(summary["settings"]["source"])]
        test_images = sum(n for key, n in summary.get("counts", {}).items() if key.startswith("test/")) or None
        run, name = folder, folder.name
    else:
        meta_path = keras_file.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        origin = meta.get("source", {})
        if "config" in origin:
            cfg = config_lib.override(cfg, {k: v for k, v in origin["config"].items() if k in config_lib.KEYS})
        if cfg.data:
            checkout = Path(__file__).resolve().parents[2]  # src/catdog/ -> the checkout
            sources = [Path(cfg.data).expanduser(), checkout / cfg.data]
        test_images = origin.get("test", {}).get("n")
        name = "shipped" if keras_file == model_files.SHIPPED_MODEL else keras_file.stem
    return dict(name=name, run=str(run) if run else None, sources=[str(s.resolve()) for s in sources],
                test_images=test_images,
                val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, split_seed=cfg.split_seed,
                max_images=cfg.max_images, seed=cfg.seed)


def same_source(source: str | os.PathLike, origin: dict, counts: dict[str, int]) -> bool:
    """True when `source` (split into `counts`, {"test/cat": n, ...}) is the data the model was trained on.

    The same path; or, where the model was trained elsewhere (another checkout, an installed
    package), the same file name giving a test split of the recorded size.
    """
    source = Path(source).resolve()
    if str(source) in origin["sources"]:
        return True
    test = sum(n for key, n in counts.items() if key.startswith("test/"))
    names = {Path(s).name for s in origin["sources"]}
    return bool(origin["test_images"]) and source.name in names and test == origin["test_images"]
