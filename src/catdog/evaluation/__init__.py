"""Evaluation: metrics of a run or of any labelled pictures, calibration measures, provenance, plots, the report."""
