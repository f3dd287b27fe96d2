"""Read a PyTorch checkpoint's tensors into NumPy arrays without PyTorch.

Both of PyTorch's formats: the zip archive of `torch.save` since 1.6 (`data.pkl` beside one
file per storage) and the older single pickle stream followed by the raw storages. Only a
state dict of plain tensors is read: the unpickler resolves an allow-list of names (ordered
dict, tensor rebuild, storage types) and refuses every other, so a checkpoint cannot run code.

    >>> state = load_state_dict("efficientnet-lite0-57934424.pth")
    >>> state["_conv_stem.weight"].shape
    (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import BinaryIO, NamedTuple

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, dtype):
        self.dtype, self.array = np.dtype(dtype), None


class _Tensor(NamedTuple):
    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple

    def numpy(self) -> np.ndarray:
        item = self.storage.dtype.itemsize
        flat = self.storage.array[self.offset:]
        strides = tuple(s * item for s in self.stride)
        return np.lib.stride_tricks.as_strided(flat, self.shape, strides).copy()


def _rebuild_tensor(storage, offset, shape, stride, *_):
    return _Tensor(storage, offset, tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only a state dict of tensors is read")

    def persistent_load(self, saved_id):
        kind, dtype, key, *_ = saved_id  # ("storage", storage type, key, device, size[, view])
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        return self.storages.setdefault(str(key), _Storage(dtype))


def _arrays(state) -> dict[str, np.ndarray]:
    if not isinstance(state, dict) or not all(isinstance(v, _Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors")
    return {key: tensor.numpy() for key, tensor in state.items()}


def _load_legacy(file: BinaryIO) -> dict[str, np.ndarray]:
    if pickle.load(file) != LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    pickle.load(file), pickle.load(file)  # protocol version, system info
    unpickler = _Unpickler(file)
    state = unpickler.load()
    for key in pickle.load(file):  # the storages' raw bytes follow, in this order
        storage = unpickler.storages[str(key)]
        count = int.from_bytes(file.read(8), "little")
        raw = file.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise ValueError("truncated checkpoint")
        storage.array = np.frombuffer(raw, storage.dtype)
    return _arrays(state)


def _load_zip(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickle_name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
    root = pickle_name[: -len("data.pkl")]
    with archive.open(pickle_name) as f:
        unpickler = _Unpickler(f)
        state = unpickler.load()
    for key, storage in unpickler.storages.items():
        storage.array = np.frombuffer(archive.read(f"{root}data/{key}"), storage.dtype)
    return _arrays(state)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state-dict checkpoint, by name, as NumPy arrays, in file order."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _load_zip(archive)
        with open(path, "rb") as file:
            return _load_legacy(file)
    except (pickle.UnpicklingError, ValueError, EOFError, KeyError, StopIteration) as error:
        raise ValueError(f"{path}: cannot read as a PyTorch state dict ({error or type(error).__name__})") from None
