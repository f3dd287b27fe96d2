"""A run folder's bookkeeping: its status in `state.json`, the pieces it must hold, and its name.

    state.json  {"status": "running" | "failed" | "interrupted" | "finished", "epochs_done": N, ...}

A run that failed or was interrupted says so here and stays resumable (`train --resume`); one
that finished no epoch may be replaced by a new `train` of the same name. A light module: no
TensorFlow, so the CLI checks folders before importing it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from catdog.errors import DataError

STATE = "state.json"
# What `evaluate`, `calibrate`, `predict --model`, `export` read from a run folder.
PIECES = ("config.json", "data.json", "manifest.csv", "model.keras")


def read_state(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / STATE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable state file ({error})") from None
    return state if isinstance(state, dict) else {}


def write_state(run_dir: str | os.PathLike, state: dict) -> None:
    """Writes state.json whole or not at all (a kill mid-write leaves the previous one)."""
    path = Path(run_dir) / STATE
    partial = path.with_name(STATE + ".partial")
    partial.write_text(json.dumps(state) + "\n")
    os.replace(partial, path)


def has_progress(run_dir: Path, state: dict) -> bool:
    """True when resuming would keep something: a finished epoch or a fitted head."""
    return bool(state.get("epochs_done") or "head_val_loss" in state or (run_dir / "backup").exists()
                or (run_dir / "history.csv").exists() and len((run_dir / "history.csv").read_text().splitlines()) > 1)


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def check_not_running(run_dir: Path, state: dict) -> None:
    """Refuses a folder another live process is training (its pid in state.json)."""
    pid = state.get("pid")
    if state.get("status") == "running" and pid != os.getpid() and _alive(pid):
        raise DataError(f"run folder {run_dir} is being trained by process {pid}: wait for it, or stop it first")


def claim(run_dir: Path) -> None:
    """Makes sure `run_dir` can be created: absent, or a run that kept nothing (then removed).

    Called after every other check, so a refused start leaves the folder as it was.
    """
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: exists and is not a folder; pick another name=")
    state = read_state(run_dir)
    status = state.get("status")
    if status == "finished" or (not state and (run_dir / "model.json").exists()):
        raise DataError(f"run folder {run_dir} holds a finished run: pick another name=")
    check_not_running(run_dir, state)
    if has_progress(run_dir, state):
        done = state.get("epochs_done", 0)
        raise DataError(f"run folder {run_dir} exists with {done} finished epoch(s) ({status or 'no status'}): "
                        f"continue it with --resume {run_dir}, or pick another name=")
    shutil.rmtree(run_dir)  # a start that kept nothing (failed or interrupted before an epoch)


def check_run(run: str | os.PathLike, needs: tuple[str, ...] = PIECES) -> Path:
    """`run` as a run folder holding `needs`, or a DataError naming what is missing."""
    run_dir = Path(run)
    if not run_dir.exists():
        raise DataError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: expected a run folder (runs/NAME), got a file")
    missing = [name for name in needs if not (run_dir / name).is_file()]
    if missing:
        hint = "not a run folder" if "config.json" in missing else "an incomplete run folder"
        raise DataError(f"{run_dir}: {hint}, missing {', '.join(missing)}")
    return run_dir
