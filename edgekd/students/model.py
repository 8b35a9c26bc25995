"""Student = timm trunk (num_classes=0) + projection head -> L2-normalised embedding of the teacher's size."""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd import EdgekdError
from edgekd.preprocess import Preprocess

log = logging.getLogger(__name__)

HEADS = ("linear", "mlp")


@dataclass(frozen=True)
class StudentConfig:
    """Everything needed to rebuild a student (stored in a run's config.json under "edgekd")."""

    arch: str
    embed_dim: int
    img_size: int = 224
    head: str = "linear"
    head_hidden: int = 0  # mlp hidden width; 0 -> trunk width
    preprocess: dict[str, Any] = field(default_factory=dict)  # Preprocess.to_dict() at img_size
    teacher_id: str = ""

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise EdgekdError(f"--head {self.head!r}: use one of {HEADS}")
        if self.img_size < 16:
            raise EdgekdError(f"--img-size {self.img_size} is too small (>= 16)")

    def get_preprocess(self) -> Preprocess:
        pp = Preprocess.from_dict(self.preprocess) if self.preprocess else Preprocess()
        return pp.with_size(self.img_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Student(nn.Module):
    """[B,3,H,W] -> [B,D] unit vectors. The normalisation is part of the module (and of every exported graph)."""

    def __init__(self, cfg: StudentConfig, trunk: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.trunk = trunk
        width = getattr(trunk, "head_hidden_size", None) or trunk.num_features  # pooled output width
        if cfg.head == "linear":
            self.head = nn.Linear(width, cfg.embed_dim)
        else:
            hidden = cfg.head_hidden or width
            self.head = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, cfg.embed_dim))

    def forward_unnormalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_unnormalized(x), dim=-1)


def create_student(
    arch: str,
    embed_dim: int,
    img_size: int = 224,
    head: str = "linear",
    head_hidden: int = 0,
    preprocess: Preprocess | None = None,
    teacher_id: str = "",
    trunk_weights: str | os.PathLike | None = None,
) -> Student:
    """Build a randomly initialised student (or a trunk from a local timm checkpoint via `trunk_weights`)."""
    import timm

    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise EdgekdError(f"student {arch!r} is not a timm model{hint}")
    pp = (preprocess or Preprocess()).with_size(img_size)
    cfg = StudentConfig(arch=arch, embed_dim=embed_dim, img_size=img_size, head=head, head_hidden=head_hidden,
                        preprocess=pp.to_dict(), teacher_id=teacher_id)
    try:  # ViT-like models fix position embeddings at build time and need img_size; CNNs reject the argument
        trunk = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size)
    except TypeError:
        trunk = timm.create_model(arch, pretrained=False, num_classes=0)
    if trunk_weights is not None:
        load_trunk_weights(trunk, trunk_weights)
    return Student(cfg, trunk)


MIN_TRUNK_MATCH = 0.5  # --student-weights must cover at least this share of the trunk's tensors and of its weights


def load_trunk_weights(trunk: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load a local timm checkpoint (safetensors or torch state dict) into the trunk, ignoring its classifier.

    Returns (and logs) a report: tensors loaded / missing / unexpected / with another shape. Raises EdgekdError
    when the loaded tensors cover less than MIN_TRUNK_MATCH of the trunk's tensors or of its weights (elements):
    a checkpoint of another architecture or variant shares a few norm layers by name, which is not a warm start.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"--student-weights {path}: no such file")
    state = _read_state_dict(path)
    own = trunk.state_dict()
    report = trunk_match_report(own, state)
    counted = [k for k in own if not k.endswith("num_batches_tracked")]  # BN counters: often absent, no weights
    total_el = sum(own[k].numel() for k in counted) or 1
    frac_t = sum(k in report["loaded"] for k in counted) / max(1, len(counted))
    frac_el = sum(own[k].numel() for k in counted if k in report["loaded"]) / total_el
    report.update({"file": str(path), "tensor_fraction": round(frac_t, 4), "weight_fraction": round(frac_el, 4)})
    summary = (f"{len(report['loaded'])} of {len(own)} trunk tensors ({frac_t:.0%} of tensors, {frac_el:.0%} of "
               f"weights); missing {len(report['missing'])}{_eg(report['missing'])}, unexpected "
               f"{len(report['unexpected'])}{_eg(report['unexpected'])}, shape mismatch "
               f"{len(report['mismatched'])}{_eg(report['mismatched'])}")
    if min(frac_t, frac_el) < MIN_TRUNK_MATCH:
        raise EdgekdError(f"--student-weights {path}: too little matches the {type(trunk).__name__} trunk (need >= "
                          f"{MIN_TRUNK_MATCH:.0%} of its tensors and weights; is it a checkpoint of this --student "
                          f"architecture?): only {summary}")
    trunk.load_state_dict({k: state[k] for k in report["loaded"]}, strict=False)
    (log.warning if report["missing"] or report["mismatched"] or report["unexpected"] else log.info)(
        "--student-weights %s: loaded %s", path, summary)
    return report


def trunk_match_report(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Compare a checkpoint with the trunk's state dict -> {"loaded", "missing", "unexpected", "mismatched"}
    (key lists; mismatched entries read "key: checkpoint shape vs trunk shape")."""
    loaded = [k for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)]
    mismatched = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and tuple(own[k].shape) != tuple(v.shape)]
    return {"loaded": loaded, "missing": [k for k in own if k not in state],
            "unexpected": [k for k in state if k not in own], "mismatched": mismatched}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from safetensors or a torch file ({"state_dict": ...} / {"model": ...} and a
    DistributedDataParallel "module." prefix are unwrapped)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise EdgekdError(f"--student-weights {path}: unreadable ({str(e).splitlines()[0]})") from e
        if isinstance(state, dict):
            for key in ("state_dict", "model"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgekdError(f"--student-weights {path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _eg(keys: list[str]) -> str:
    return f" (e.g. {', '.join(keys[:3])})" if keys else ""


def reparameterize(student: Student) -> Student:
    """Fuse re-parameterisable blocks (MobileOne, FastViT, RepViT, ...) with timm's own utility, for export."""
    from timm.utils.model import reparameterize_model

    student.trunk = reparameterize_model(student.trunk)
    return student
