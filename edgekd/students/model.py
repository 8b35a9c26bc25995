"""Student = timm trunk (num_classes=0) + projection head -> L2-normalised embedding of the teacher's size."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd import EdgekdError
from edgekd.preprocess import Preprocess

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


def load_trunk_weights(trunk: nn.Module, path: str | os.PathLike) -> None:
    """Load a local timm checkpoint (safetensors or torch state dict) into the trunk, ignoring its classifier."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"--student-weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = trunk.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise EdgekdError(f"--student-weights {path}: no tensor matches the {type(trunk).__name__} trunk")
    trunk.load_state_dict(usable, strict=False)


def reparameterize(student: Student) -> Student:
    """Fuse re-parameterisable blocks (MobileOne, FastViT, RepViT, ...) with timm's own utility, for export."""
    from timm.utils.model import reparameterize_model

    student.trunk = reparameterize_model(student.trunk)
    return student
