"""The seam under `Predictor`: Keras or LiteRT behind one small interface.

    >>> runtime = load_runtime("runs/NAME", "tflite")   # or "keras", "tflite-int8", a .tflite path
    >>> runtime.run(pixels)            # uint8 (N, S, S, 3) -> {"logit": (N,), "p_pet": (N,), ...}

`runtime.image_size` is the side the pixels must have, `runtime.output_names` the outputs,
`runtime.name` what runs them ("keras", "savedmodel", "tflite", "tflite-int8").
Nothing else in catdog branches on the runtime. The LiteRT path never imports TensorFlow:
`import ai_edge_litert` takes 0.1 s, TensorFlow about 3 s.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from catdog.errors import ModelError

RUNTIMES = ("keras", "tflite", "tflite-int8")
# What `catdog export` writes beside a run's model.keras (and what ships beside the packaged one).
EXPORT_FILES = {"savedmodel": "model_savedmodel", "tflite": "model_float.tflite", "tflite-int8": "model_int8.tflite"}
SHIPPED_MODEL = Path(__file__).parent / "assets" / "model.keras"
# Outputs that make the cat-or-dog answer; any other output is an unknown-detector score.
ANSWER_OUTPUTS = ("logit", "dog_odds")
_verbose = False


def set_verbose(verbose: bool) -> None:
    """Lets TensorFlow's and LiteRT's native log lines through (`catdog --verbose`)."""
    global _verbose
    _verbose = verbose
    # Read by TensorFlow and LiteRT as they load: 3 hides even LiteRT's "Created XNNPACK delegate".
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """Holds native writes to fd 2 back (TensorFlow logs at import despite TF_CPP_MIN_LOG_LEVEL).

    What was held back is written out after all if the block fails, so a real error still shows.
    """
    if _verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


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
    return Path(os.environ.get("CATDOG_HOME", Path.home() / ".cache" / "catdog")).expanduser() / "exports"


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


def load_runtime(path: str | os.PathLike | None = None, runtime: str = "keras", detector: bool = True):
    """A `KerasRuntime` or `LiteRTRuntime` for `path` (see `resolve`).

    `detector=False` lets the Keras runtime skip the unknown detector's work (LiteRT always runs
    the whole graph).
    """
    resolved = resolve(path, runtime)
    if resolved.suffix == ".tflite":
        return LiteRTRuntime(resolved)
    from catdog import keras_runtime  # imports TensorFlow: only when asked for

    if resolved.is_dir():
        return keras_runtime.SavedModelRuntime(resolved)
    return keras_runtime.KerasRuntime(resolved, detector=detector)


class LiteRTRuntime:
    """A `.tflite` export run by LiteRT with XNNPACK on every core; outputs named by its signature."""

    def __init__(self, path: str | os.PathLike):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            with quiet_stderr():
                self.interpreter = Interpreter(str(self.path), num_threads=os.cpu_count() or 1)
        except (ValueError, RuntimeError) as error:
            reason = " ".join(str(error).split())[:200]
            raise ModelError(f"{self.path}: not a loadable TFLite model ({reason})") from None
        runner = self.interpreter.get_signature_runner()
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        del runner  # it holds views into the interpreter, which would forbid resizing it
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input (pixels), found {sorted(inputs)}")
        (self._input,) = inputs.values()
        self.image_size = int(self._input["shape_signature"][1])
        self.output_names = sorted(outputs)
        quantized = any(t["dtype"] == np.int8 for t in self.interpreter.get_tensor_details())
        self.name = "tflite-int8" if quantized else "tflite"  # what `--runtime` would name it
        self._outputs = {name: detail["index"] for name, detail in outputs.items()}
        self._batch = None

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Named outputs, each (N,), for uint8 pixels (N, S, S, 3); other dtypes are rounded to uint8."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        if len(pixels) != self._batch:  # re-plan only when the batch size changes
            self.interpreter.resize_tensor_input(self._input["index"], list(pixels.shape))
            with quiet_stderr():
                self.interpreter.allocate_tensors()
            self._batch = len(pixels)
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(pixels))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(i).reshape(len(pixels)) for name, i in self._outputs.items()}
