"""Data: find and unpack it, the one image loader, the split (`prepare`), a run's data, the tf.data pipeline."""
