"""catdog: tell dogs from cats, with calibrated probabilities."""

__version__ = "0.1.0"
