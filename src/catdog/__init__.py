"""catdog: tell dogs from cats, with calibrated probabilities.

    >>> import catdog
    >>> for record in catdog.Predictor().predict_paths(["photo.jpg", "photos/"]):
    ...     print(record)

The package is grouped by stage: `data`, `models`, `inference`, `training`, `evaluation`,
`export`, `serving` (README: "How it is built"). The names below are its face, imported on
first use, so `import catdog` stays instant and loads no TensorFlow.
"""

__version__ = "0.1.0"

_FACE = {  # name -> the module that defines it
    "Predictor": "catdog.inference.predictor",
    "predict": "catdog.inference.engines",  # `catdog predict`'s flags as arguments; engine="ray" for Ray Data
    "Explainer": "catdog.inference.gradcam",
    "prepare": "catdog.data.prepare",
    "train": "catdog.training.train",
    "calibrate": "catdog.training.calibrate",
    "evaluate": "catdog.evaluation.evaluate",
    "report": "catdog.evaluation.report",
}
__all__ = ["__version__", *_FACE]


def __getattr__(name: str):
    if name in _FACE:
        import importlib

        return getattr(importlib.import_module(_FACE[name]), name)
    raise AttributeError(f"module 'catdog' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_FACE))
