"""Fixed-size rows of one shape and dtype in one file, written and read by index.

The disk cache of decoded pixels (`catdog.data.pipeline`) and the cached views of fine-tuning
(`catdog.training.views`) keep their rows so. Rows are read and written with pread / pwrite,
not a memory map: the pages stay in the kernel's page cache, reclaimable, instead of counting
in the process's memory, so a file far larger than RAM is read at the speed of the disk.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np


class RowsFile:
    """`rows` rows of `shape` and `dtype` in `path`; `create=True` makes (or truncates) the file first.

        >>> f = RowsFile("x.f16", (7, 7, 192), np.float16, rows=1000, create=True)
        >>> f.write(0, batch)            # rows 0..len(batch)-1
        >>> f.read([5, 2]).shape
        (2, 7, 7, 192)

    Safe to share between threads (pread and pwrite take the offset, not a file position).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype, rows: int, create: bool = False):
        self.path, self.shape, self.dtype, self.rows = Path(path), tuple(shape), np.dtype(dtype), rows
        self.row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if create:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fd, rows * self.row_bytes)
        else:
            if self.path.stat().st_size != rows * self.row_bytes:
                raise ValueError(f"{self.path}: {self.path.stat().st_size} bytes, expected {rows} rows "
                                 f"of {self.shape} {self.dtype} ({rows * self.row_bytes} bytes)")
            fd = os.open(self.path, os.O_RDONLY)
        self.fd = fd
        weakref.finalize(self, os.close, fd)

    def write(self, first: int, rows: np.ndarray) -> None:
        """Writes `rows` (shape (n, *shape)) as rows first..first+n-1."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape or not 0 <= first <= self.rows - len(rows):
            raise ValueError(f"{self.path}: cannot write {rows.shape} at row {first} of {self.rows} x {self.shape}")
        os.pwrite(self.fd, rows.tobytes(), first * self.row_bytes)

    def row(self, index: int) -> np.ndarray:
        data = os.pread(self.fd, self.row_bytes, int(index) * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(self.shape)

    def read(self, indices) -> np.ndarray:
        """The rows at `indices`, in that order, as one array."""
        indices = np.asarray(indices, np.int64).ravel()
        out = np.empty((len(indices), *self.shape), self.dtype)
        for k, index in enumerate(indices):
            out[k] = self.row(index)
        return out
