"""The package layout's promises: old models still load, a light face, no private names across modules.

The layering itself (a room imports only the rooms below it, no circle inside a room) is
checked by `lint-imports` against the contracts in pyproject.toml.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import catdog

DATA = Path(__file__).parent / "data"
PACKAGE = Path(catdog.__file__).parent


def test_a_model_saved_before_the_subpackage_move_loads_and_answers_the_same():
    """tests/data/legacy_model.keras was saved by catdog at c8598dc, when its layers lived in
    catdog.model (ImageNetScaling) and catdog.unknown (PetEvidence, DogOdds); the file still
    names those modules. It holds every custom layer catdog has."""
    from catdog.inference.runtime import load_runtime

    expected = np.load(DATA / "legacy_model_outputs.npz")
    runtime = load_runtime(DATA / "legacy_model.keras", "keras")
    outputs = runtime.run(expected["pixels"])
    assert sorted(outputs) == ["dog_odds", "logit", "p_pet", "pet_energy"]
    for name, values in outputs.items():
        np.testing.assert_allclose(values, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_package_face_is_lazy_and_light():
    code = ("import sys, catdog; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "from catdog.inference.predictor import Predictor; assert catdog.Predictor is Predictor; "
            "import catdog.data, catdog.models, catdog.inference, catdog.training, catdog.evaluation, catdog.export; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'a room imports TensorFlow'; "
            "print(sorted(catdog.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Predictor" in done.stdout and "train" in done.stdout
    with pytest.raises(AttributeError, match="no attribute 'predictor'"):
        catdog.predictor  # noqa: B018


def test_the_export_room_still_offers_export_and_summary():
    import catdog.export
    from catdog.export import exporter

    assert catdog.export.export is exporter.export and catdog.export.summary is exporter.summary


def _private_imports(path: Path) -> list[str]:
    """`from catdog.x import _name` lines in one file: another module's private name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("catdog"):
            found += [f"{path.name}:{node.lineno} {node.module}.{alias.name}"
                      for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
    return found


def test_no_module_imports_another_modules_private_name():
    roots = [PACKAGE, PACKAGE.parents[1] / "benchmarks", PACKAGE.parents[1] / "scripts"]
    offenders = [hit for root in roots if root.is_dir() for path in sorted(root.rglob("*.py"))
                 for hit in _private_imports(path)]
    assert offenders == []


def test_the_private_name_check_catches_one(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from catdog.training.train import _start\nfrom catdog import __version__\n")
    assert _private_imports(sample) == ["sample.py:1 catdog.training.train._start"]
