"""Save/load students as safetensors + timm-style config.json (no pickles), atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from edgekd import EdgekdError
from edgekd._io import atomic_path, atomic_write_json, read_json, sha256_file
from edgekd.students.model import Student, StudentConfig, create_student

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def student_config_json(student: Student, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """timm-style config (architecture + pretrained_cfg) with edgekd's own block, so timm users can reload the trunk."""
    cfg = student.cfg
    pp = cfg.get_preprocess()
    return {
        "architecture": cfg.arch,
        "num_classes": 0,
        "num_features": cfg.embed_dim,
        "pretrained_cfg": {
            "input_size": [3, *pp.size],
            "mean": list(pp.mean),
            "std": list(pp.std),
            "interpolation": pp.interpolation,
            "crop_pct": 1.0,
            "crop_mode": "center" if pp.resize_mode == "shortest" else pp.resize_mode,
        },
        "edgekd": {"student": cfg.to_dict(), "state_dict_prefix": {"trunk": "trunk.", "head": "head."},
                   **(extra or {})},
    }


def save_student(run_dir: str | os.PathLike, student: Student, extra: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` and `config.json` into `run_dir` (each atomically). Returns the weights path."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "edgekd": json.dumps(student.cfg.to_dict())})
    atomic_write_json(run_dir / CONFIG_FILE, student_config_json(student, extra))
    return run_dir / WEIGHTS_FILE


def load_student_config(path: str | os.PathLike) -> StudentConfig:
    path = _run_dir(path)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise EdgekdError(f"{path}: no {CONFIG_FILE}; is this a run directory written by `edgekd distill`?")
    try:
        return StudentConfig.from_dict(read_json(cfg_path)["edgekd"]["student"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{cfg_path}: not an edgekd student config ({e})") from e


def load_student(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Student:
    """Rebuild a student from a run directory (or its model.safetensors), in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = _run_dir(path)
    cfg = load_student_config(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise EdgekdError(f"{run_dir}: no {WEIGHTS_FILE}; the run has not saved a checkpoint yet")
    student = create_student(cfg.arch, cfg.embed_dim, cfg.img_size, cfg.head, cfg.head_hidden,
                             preprocess=cfg.get_preprocess(), teacher_id=cfg.teacher_id)
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise EdgekdError(f"{weights}: unreadable or corrupt weights file ({e})") from e
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EdgekdError(f"{weights}: weights do not match {cfg.arch} (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]})")
    return student.eval()


def weights_hash(path: str | os.PathLike) -> str:
    return sha256_file(_run_dir(path) / WEIGHTS_FILE)


def _run_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise EdgekdError(f"{path}: no such run directory")
    return path.parent if path.is_file() else path
