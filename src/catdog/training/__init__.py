"""Training: `train`, resume, calibration (the fitting side), multi-worker training and its launcher."""
