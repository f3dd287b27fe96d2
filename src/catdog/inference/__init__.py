"""Inference: `Predictor`, the runtime seam (Keras | LiteRT), the answer arithmetic, records and writers, Grad-CAM."""
