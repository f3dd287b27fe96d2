"""The seam under `Predictor`: Keras or LiteRT behind one small interface.

    >>> runtime = load_runtime("runs/NAME", "tflite")   # or "keras", "tflite-int8", a .tflite path
    >>> runtime.run(pixels)            # uint8 (N, S, S, 3) -> {"logit": (N,), "p_pet": (N,), ...}

`runtime.image_size` is the side the pixels must have, `runtime.output_names` the outputs,
`runtime.name` what runs them ("keras", "savedmodel", "tflite", "tflite-int8").
Nothing else in catdog branches on the runtime. The LiteRT path never imports TensorFlow:
`import ai_edge_litert` takes 0.1 s, TensorFlow about 3 s.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from catdog.console import quiet_stderr
from catdog.errors import ModelError
from catdog.inference.model_files import resolve


def load_runtime(path: str | os.PathLike | None = None, runtime: str = "keras", detector: bool = True,
                 threads: int | None = None):
    """A `KerasRuntime` or `LiteRTRuntime` for `path` (see `resolve`).

    `detector=False` lets the Keras runtime skip the unknown detector's work (LiteRT always runs
    the whole graph). `threads` is LiteRT's (default: every core); TensorFlow keeps its own.
    """
    resolved = resolve(path, runtime)
    if resolved.suffix == ".tflite":
        return LiteRTRuntime(resolved, threads=threads)
    from catdog.inference import keras_runtime  # imports TensorFlow: only when asked for

    if resolved.is_dir():
        return keras_runtime.SavedModelRuntime(resolved)
    return keras_runtime.KerasRuntime(resolved, detector=detector)


class LiteRTRuntime:
    """A `.tflite` export run by LiteRT with XNNPACK on `threads` (every core); outputs named by its signature."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            with quiet_stderr():
                self.interpreter = Interpreter(str(self.path), num_threads=threads or os.cpu_count() or 1)
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
        with quiet_stderr():  # the first allocation logs the XNNPACK delegate's creation; later ones say nothing
            self.interpreter.allocate_tensors()
        self._batch = int(self._input["shape"][0])

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Named outputs, each (N,) or (N, ...), for uint8 pixels (N, S, S, 3); other dtypes are rounded to uint8."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        if len(pixels) != self._batch:  # re-plan only when the batch size changes
            self.interpreter.resize_tensor_input(self._input["index"], list(pixels.shape))
            self.interpreter.allocate_tensors()
            self._batch = len(pixels)
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(pixels))
        self.interpreter.invoke()
        outputs = {name: self.interpreter.get_tensor(i) for name, i in self._outputs.items()}
        # One number per image as (N,); wider outputs (features, all 1000 logits) keep their shape.
        return {name: value.reshape(len(pixels)) if value.size == len(pixels) else value
                for name, value in outputs.items()}
