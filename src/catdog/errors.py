"""Exceptions the CLI reports as one line (a light module: importing it loads no TensorFlow)."""


class ModelError(Exception):
    """A model that cannot do what was asked of it; `str()` names the model file."""
