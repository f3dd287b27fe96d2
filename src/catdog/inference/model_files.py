"""Where a model's files are: the shipped model, a run's `model.keras`, the exports beside it.

    >>> resolve("runs/NAME", "auto")     # runs/NAME/model_float.tflite where it is current, else model.keras
    >>> keras_source("runs/NAME/model_float.tflite")   # the .keras it was exported from

No TensorFlow here: `catdog predict` finds its file before deciding whether it needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from catdog.errors import ModelError
from catdog.home import home

RUNTIMES = ("keras", "tflite", "tflite-int8")
# What `catdog export` writes beside a run's model.keras (and what ships beside the packaged one).
EXPORT_FILES = {"savedmodel": "model_savedmodel", "tflite": "model_float.tflite", "tflite-int8": "model_int8.tflite"}
SHIPPED_MODEL = Path(__file__).parents[1] / "assets" / "model.keras"


def resolve(model: str | os.PathLike | None = None, runtime: str = "keras") -> Path:
    """The file `runtime` runs: from a run folder, a .keras / .tflite / SavedModel path, or None (shipped).

    A `.tflite` file is run by LiteRT whatever `runtime` says. Exports sit beside the model
    (`catdog export`); the shipped model's also in `$CATDOG_HOME/exports`. "auto" is "tflite"
    where that export exists and is not older than the model, else "keras".
    """
    if runtime not in (*RUNTIMES, "auto"):
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    path = Path(model) if model else SHIPPED_MODEL
    if model and not path.exists():
        raise FileNotFoundError(f"model {path} not found: expected a run folder, a .keras or a .tflite file")
    if path.suffix == ".tflite" or (path.is_dir() and (path / "saved_model.pb").exists()):
        return path
    if (path.is_file() and path.suffix != ".keras") or not (path.is_file() or path.is_dir()):
        raise ModelError(f"{path}: expected a run folder, a .keras or a .tflite file")
    folder, keras_file = (path, path / "model.keras") if path.is_dir() else (path.parent, path)
    if not keras_file.is_file():
        if not model:
            raise FileNotFoundError(f"no shipped model in this install ({keras_file}): pass --model RUN_OR_FILE")
        raise FileNotFoundError(f"not a run folder: no model.keras in {folder}")
    if runtime == "keras":
        return keras_file
    export = find_export(keras_file, "tflite" if runtime == "auto" else runtime)
    if export:
        return export
    if runtime == "auto":
        return keras_file
    raise FileNotFoundError(f"{folder} has no {EXPORT_FILES[runtime]}: run `catdog export {model or ''} --format "
                            f"{runtime}`".replace("  ", " ") + ", or use --runtime keras")


def keras_source(path: str | os.PathLike) -> Path:
    """The `.keras` model an export (`.tflite`, SavedModel folder) was made from; a `.keras` path itself.

    Exports sit beside their model (`catdog export`); the shipped model's may also sit in
    `exports_home()`. Grad-CAM needs the Keras model: LiteRT gives no gradients.
    """
    path = Path(path)
    if path.suffix == ".keras":
        return path
    if path.parent.resolve() in (SHIPPED_MODEL.parent.resolve(), exports_home().resolve()):
        return SHIPPED_MODEL
    beside = path.parent / "model.keras"
    if beside.is_file():
        return beside
    raise ModelError(f"{path}: no model.keras beside this export (Grad-CAM needs the Keras model)")


def exports_home() -> Path:
    """Where `catdog export` puts the shipped model's exports (the package folder may be read-only)."""
    return home() / "exports"


def find_export(keras_file: Path, fmt: str) -> Path | None:
    """The `fmt` export of `keras_file` that is not older than it (and its calibration), if any."""
    candidates = [keras_file.parent / EXPORT_FILES[fmt]]
    if keras_file == SHIPPED_MODEL:
        if candidates[0].exists():
            return candidates[0]  # shipped together: file times mean nothing after a checkout
        candidates.append(exports_home() / EXPORT_FILES[fmt])
    sources = [s for s in (keras_file, keras_file.with_suffix(".json")) if s.exists()]
    for export in candidates:
        if export.exists() and all(export.stat().st_mtime >= s.stat().st_mtime for s in sources):
            return export
    return None
