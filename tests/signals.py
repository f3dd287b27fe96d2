"""Callbacks that signal the test process mid-training, for the resume tests."""

import os
import signal

import keras


class TermAt(keras.callbacks.Callback):
    """SIGTERM to this process after batch `batch` of epoch `epoch`, as Kubernetes or Slurm send it
    before an eviction or a preemption; counts the batches trained."""

    def __init__(self, epoch=-1, batch=-1):
        super().__init__()
        self.at, self.trained = (epoch, batch), 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.trained += 1
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
