"""Run-directory checkpoints: model.safetensors + config.json (edgekd.students.io) and train_state.pt.

train_state.pt holds tensors, numbers, strings, lists and dicts only (optimizer state, raw and EMA weights, RNG
states, position in the schedule) and is read back with `torch.load(weights_only=True)`. Every file is written
atomically; resuming reads train_state.pt only, so a crash between two files never mixes two steps.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from edgekd import EdgekdError
from edgekd._io import atomic_path
from edgekd.students.io import save_student
from edgekd.students.model import Student

TRAIN_STATE = "train_state.pt"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | os.PathLike, student: Student, train_state: dict[str, Any],
                    extra: dict[str, Any]) -> None:
    """Write train_state.pt, then model.safetensors + config.json (`student` = the weights to publish, e.g. EMA)."""
    run_dir = Path(run_dir)
    with atomic_path(run_dir / TRAIN_STATE) as tmp:
        torch.save(train_state, tmp)
    save_student(run_dir, student, extra)


def load_train_state(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(run_dir) / TRAIN_STATE
    if not path.is_file():
        raise EdgekdError(f"--resume: {path} does not exist; the run has no checkpoint yet (drop --resume)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise EdgekdError(f"{path}: unreadable training state ({str(e).splitlines()[0]}); start a new run") from e
