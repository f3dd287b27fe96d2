"""export(model, fmt): a SavedModel, TFLite float32 or TFLite int8 file, checked against the Keras model.

    >>> export("runs/NAME", "tflite")        # runs/NAME/model_float.tflite + model_float.json
    >>> export(None, "tflite-int8", data="train.zip")   # the shipped model, into $CATDOG_HOME/exports

Every format takes raw uint8 pixels (N, S, S, 3), since resizing and scaling are layers of the
model, and keeps every output (the unknown detector's `p_pet` and `pet_energy` too), so an
export answers what `catdog predict` answers. int8 is full-integer post-training quantisation
calibrated on images of the training split. Right after writing, the export and the Keras model
score the same labelled pictures (`catdog.export.parity`); the figures go into the metadata JSON beside
the export (`model_float.json`: the model's calibration, output names, image size, parity).
A failed check raises `ParityError` and leaves the export marked `"parity": {"passed": false}`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from catdog.console import quiet_stderr
from catdog.data.images import load_image
from catdog.errors import ModelError
from catdog.export import parity
from catdog.inference import model_files
from catdog.inference.predictor import Predictor

FORMATS = ("savedmodel", "tflite", "tflite-int8")
REPRESENTATIVE_IMAGES = 200  # int8 calibration: enough for stable activation ranges


class ParityError(ModelError):
    """The export was written but does not answer like the Keras model."""


def export(model: str | os.PathLike | None = None, fmt: str = "tflite", out: str | os.PathLike | None = None,
           data: str | os.PathLike | None = None, check_images: int = 0) -> dict:
    """Writes `model` (run folder, .keras file, None for the shipped model) as `fmt`; returns its metadata.

    `data` (a zip or folder of labelled pictures, split as `catdog prepare` splits it) replaces the
    run's own splits, and is needed for a model without a run folder. The check runs on the whole
    test split, or on a seeded sample of `check_images` > 0 of it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    reference = Predictor(model_files.resolve(model, "keras"))
    out = Path(out) if out else _default_out(model, reference.path, fmt)
    try:
        representative, labelled = parity.examples(
            model, data, REPRESENTATIVE_IMAGES if fmt == "tflite-int8" else 0, check_images)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error} (the parity check and int8 calibration need labelled pictures: "
                                "a run folder's splits, or --data train.zip / a folder)") from None
    _write(reference, fmt, out, [path for path, _ in representative])
    meta_path = out.with_suffix(".json")
    meta = {**reference.meta, "image_size": reference.image_size, "output_names": reference.runtime.output_names,
            "export": dict(format=fmt, file=out.name, bytes=_size(out), source=_source(reference.path, out),
                           representative_images=len(representative))}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")  # the export's own calibration, read by Predictor
    meta["parity"] = parity.check(reference, out, fmt, labelled)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if not meta["parity"]["passed"]:
        p = meta["parity"]
        int8 = f" (int8 may lose at most {parity.INT8_ACCURACY_DROP * 100:.1f} point)" if "int8" in fmt else ""
        raise ParityError(f"{out}: parity check failed on {p['images']} images: answers agree on "
                          f"{p['agreement']:.2%} (need {parity.AGREEMENT:.1%}), accuracy {p['accuracy_export']:.2%} "
                          f"vs Keras {p['accuracy_keras']:.2%}{int8}; kept, marked \"passed\": false in "
                          f"{meta_path.name}")
    return meta


def _default_out(model, keras_path: Path, fmt: str) -> Path:
    """Beside a run's model.keras, where `catdog predict --runtime` finds it; `$CATDOG_HOME/exports`
    for the shipped model (the package folder may be read-only)."""
    name = model_files.EXPORT_FILES[fmt]
    return model_files.exports_home() / name if keras_path == model_files.SHIPPED_MODEL else keras_path.parent / name


def _source(model: Path, out: Path) -> str:
    """The model file, by name where the export sits beside it (as shipped exports do)."""
    return model.name if model.parent.resolve() == out.parent.resolve() else str(model)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def _write(reference: Predictor, fmt: str, out: Path, representative: list[str]) -> None:
    with quiet_stderr():  # the converter logs to fd 2; shown if it fails
        from catdog.export import converters

    model = converters.float32_copy(reference.model)
    size = reference.image_size
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "savedmodel":
        converters.write_savedmodel(model, out, None)  # any size in: the model resizes
        return
    pixels = (load_image(path, size=size)[None] for path in representative)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), quiet_stderr():
        warnings.simplefilter("ignore")  # tf.lite's deprecation notices, not the user's concern
        converters.write_savedmodel(model, Path(tmp) / "saved", size)  # fixed size: XNNPACK plans once
        flat = converters.convert(Path(tmp) / "saved", int8_data=pixels if fmt == "tflite-int8" else None)
    out.write_bytes(flat)


def summary(meta: dict) -> str:
    """One line per figure, for the terminal."""
    p, e = meta["parity"], meta["export"]
    return "\n".join([
        f"{e['format']}: {e['file']} ({e['bytes'] / 2**20:.1f} MiB)",
        f"parity on {p['images']} images: answers agree {p['agreement']:.2%}, accuracy {p['accuracy_export']:.2%} "
        f"(Keras {p['accuracy_keras']:.2%}), unknown {p['unknown_rate_export']:.2%} "
        f"(Keras {p['unknown_rate_keras']:.2%}), largest logit gap {p['max_abs_logit_difference']:.3g}: "
        + ("passed" if p["passed"] else "FAILED"),
    ])

