"""Copies a trained run's model into the package, so `catdog predict` works after installation.

    python scripts/ship_model.py runs/mobilenet-224 --data ../shared/datasets/dogs-vs-cats/train.zip

Writes src/catdog/assets/model.keras (weights only, no optimizer state, rounded to float16 values,
deflated) and model.json (the run's calibration plus where the model came from: config and test
metrics), then the LiteRT float export beside it (model_float.tflite + .json, checked for parity
on the test split of --data), so `catdog predict` starts in a fraction of a second without importing TensorFlow.

    python scripts/ship_model.py runs/mobilenet-224 --calibration-only

after a `catdog calibrate` (and `catdog evaluate`) of the shipped run: its new calibration
(and test metrics) go into the shipped model.json and the exports' .json, and the model files
stay as they are (no new binaries).
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from catdog.export.exporter import export, summary  # noqa: E402
from catdog.inference.model_files import EXPORT_FILES, SHIPPED_MODEL  # noqa: E402
from catdog.models.builders import load_model  # noqa: E402

LIMIT_BYTES = 25_000_000  # the largest file the repository takes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", help="the run's data (zip or folder): its test split checks the export")
    parser.add_argument("--calibration-only", action="store_true",
                        help="update the shipped calibration from the run's model.json; keep the model files")
    args = parser.parse_args()
    run = args.run
    if args.calibration_only:
        return _update_calibration(run)
    if not args.data:
        parser.error("--data is needed to check the export")
    model = load_model(run / "model.keras")
    to_float16_values(model)
    SHIPPED_MODEL.parent.mkdir(parents=True, exist_ok=True)
    model.save(SHIPPED_MODEL)
    deflate(SHIPPED_MODEL)
    meta = json.loads((run / "model.json").read_text())
    meta["source"] = dict(
        run=run.name, config=json.loads((run / "config.json").read_text()),
        test=json.loads((run / "metrics_test.json").read_text()) if (run / "metrics_test.json").exists() else None,
    )
    SHIPPED_MODEL.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{SHIPPED_MODEL} ({SHIPPED_MODEL.stat().st_size / 2**20:.1f} MiB)")
    print(summary(export(None, "tflite", out=SHIPPED_MODEL.parent / EXPORT_FILES["tflite"], data=args.data)))
    check_sizes(SHIPPED_MODEL, SHIPPED_MODEL.parent / EXPORT_FILES["tflite"])


def check_sizes(*files: Path) -> None:
    """Stops with the files over the repository's limit for one committed file (25 MB)."""
    over = [f"{f} ({f.stat().st_size:,} bytes)" for f in files if f.stat().st_size >= LIMIT_BYTES]
    if over:
        raise SystemExit(f"over the {LIMIT_BYTES:,}-byte limit of a committed file: {', '.join(over)}")


def to_float16_values(model: keras.Model) -> None:
    """Rounds every float32 weight to the nearest float16 value (kept as float32: the model computes
    as before). Deflating then stores each weight in about 20 bits instead of 32 (the 13 low bits are
    zero): EfficientNet-Lite1 with its ImageNet side and prototypes is 27 MB deflated as trained,
    under the 25 MB limit rounded. The rounding moves a weight by at most 1/2048 of itself; the
    shipped model's figures (`catdog evaluate --data ...`) are measured after it."""
    for weight in model.weights:
        if weight.dtype == "float32":
            weight.assign(np.asarray(weight.numpy(), np.float16).astype(np.float32))


def deflate(keras_file: Path) -> None:
    """Rewrites a .keras file (a zip Keras writes uncompressed) with its members deflated: the shipped
    model with its prototypes is 25.9 MiB stored, 22.2 MiB deflated; Keras reads either, the same weights."""
    with zipfile.ZipFile(keras_file) as stored:
        members = [(info.filename, stored.read(info)) for info in stored.infolist()]
    partial = keras_file.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as deflated:
        for name, data in members:
            deflated.writestr(name, data)
    partial.replace(keras_file)


def _update_calibration(run: Path) -> None:
    calibration = json.loads((run / "model.json").read_text())
    for model in [SHIPPED_MODEL, *(SHIPPED_MODEL.parent / f for f in EXPORT_FILES.values())]:
        path = model.with_suffix(".json")
        if not path.exists():
            continue
        shipped = json.loads(path.read_text())
        if shipped.get("source", {}).get("run") != run.name:
            raise SystemExit(f"{path} was shipped from {shipped.get('source', {}).get('run')!r}, not {run.name!r}")
        if (run / "metrics_test.json").exists():  # evaluated again under the new calibration
            shipped["source"]["test"] = json.loads((run / "metrics_test.json").read_text())
        path.write_text(json.dumps({**shipped, **calibration}, indent=2) + "\n")
        print(f"{path}: calibration from {run / 'model.json'}")


if __name__ == "__main__":
    main()
