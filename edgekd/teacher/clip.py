"""The open_clip teacher: frozen, eval mode, L2-normalised image and text embeddings."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgekd import EdgekdError
from edgekd.devices import autocast, resolve_device
from edgekd.preprocess import Preprocess
from edgekd.teacher import tiny  # noqa: F401  (registers the tiny test configs with open_clip)

log = logging.getLogger(__name__)

RANDOM_SEED = 0  # random teachers are seeded so that two processes build the same "random" teacher
# create_model(load_weights=, weights_only=) first appear in open_clip 3.0.0 (2.x: load_weights_only=, and a
# random init that cannot skip the text tower's default weights). Keep in sync with pyproject.toml.
OPEN_CLIP_MIN = (3, 0)


@dataclass(frozen=True)
class TeacherSpec:
    """Which teacher: an open_clip model name plus one weight source (a hub tag, a local file, or random init)."""

    name: str = "ViT-B-32"
    pretrained: str | None = "openai"
    weights: str | None = None
    random_init: bool = False

    def source(self) -> str:
        if self.random_init:
            return f"random(seed={RANDOM_SEED})"
        if self.weights:
            return f"file:{Path(self.weights).name}"
        return f"pretrained:{self.pretrained}"


class Teacher:
    """A frozen open_clip model. `encode_images` [B,3,H,W] -> [B,D] and `encode_texts` list[str] -> [N,D], both
    L2-normalised float32 on the CPU-side caller's device."""

    def __init__(self, spec: TeacherSpec, model: torch.nn.Module, tokenizer: Any, device: torch.device):
        self.spec = spec
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        self.preprocess = Preprocess(
            size=tuple(cfg.get("size", (224, 224))) if not isinstance(cfg.get("size"), int) else cfg["size"],
            mean=tuple(cfg.get("mean", Preprocess().mean)),
            std=tuple(cfg.get("std", Preprocess().std)),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill=int(cfg.get("fill_color", 0)),
        )
        with torch.no_grad():
            self.embed_dim = int(self.encode_texts(["a photo"]).shape[1])
        self.logit_scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
        self.weights_hash = state_dict_hash(model)

    @property
    def teacher_id(self) -> str:
        """Names the teacher and its exact weights: '<model>@<weights-hash[:16]>'."""
        return f"{self.spec.name}@{self.weights_hash[:16]}"

    def describe(self) -> dict[str, Any]:
        """What a manifest records about this teacher."""
        return {
            "id": self.teacher_id,
            "name": self.spec.name,
            "source": self.spec.source(),
            "pretrained": self.spec.pretrained if not (self.spec.random_init or self.spec.weights) else None,
            "weights_file": self.spec.weights,
            "random_init": self.spec.random_init,
            "weights_sha256": self.weights_hash,
            "embed_dim": self.embed_dim,
            "logit_scale": self.logit_scale,
            "preprocess": self.preprocess.to_dict(),
        }

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] normalised pixels -> [B,D] unit vectors (float32)."""
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            emb = self.model.encode_image(images)
        return F.normalize(emb.float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """list of N strings -> [N,D] unit vectors (float32, on CPU)."""
        if not texts:
            raise EdgekdError("no texts to encode")
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            with autocast(self.device):
                emb = self.model.encode_text(tokens)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out)

    def encode_pixels(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 [B,H,W,3] rendered views -> [B,D]."""
        return self.encode_images(torch.from_numpy(self.preprocess.normalize(pixels)))


def state_dict_hash(model: torch.nn.Module) -> str:
    """sha256 over parameter names, shapes and bytes: identifies the weights whatever file they came from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_open_clip_version(version: str) -> None:
    """Raise EdgekdError when open_clip `version` predates the create_model() arguments load_teacher passes."""
    parts = []
    for p in version.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit()) if p else ""
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < OPEN_CLIP_MIN:
        need = ".".join(map(str, OPEN_CLIP_MIN))
        raise EdgekdError(f"open_clip_torch {version} is too old for edgekd's teacher (needs >= {need}); "
                          f"run: pip install 'open_clip_torch>={need}'")


def load_teacher(
    name: str = "ViT-B-32",
    pretrained: str | None = "openai",
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    device: str | torch.device = "auto",
) -> Teacher:
    """Build an open_clip teacher from a hub tag, a local weights file (safetensors or a torch state dict,
    loaded with weights_only=True), or random weights (seeded; for tests and smoke runs)."""
    import open_clip

    check_open_clip_version(open_clip.__version__)
    dev = resolve_device(device)
    if name not in open_clip.list_models():
        raise EdgekdError(f"--teacher {name!r} is not an open_clip model; see open_clip.list_models()")
    spec = TeacherSpec(name=name, pretrained=pretrained, weights=str(weights) if weights else None,
                       random_init=random_init)
    if weights is not None and not Path(weights).is_file():
        raise EdgekdError(f"--teacher-weights {weights}: no such file")
    if random_init:
        log.warning("teacher %s has RANDOM weights: embeddings are meaningless for accuracy (fine for tests, speed, "
                    "export and fidelity studies)", name)
        torch.manual_seed(RANDOM_SEED)
        model = open_clip.create_model(name, pretrained=None, load_weights=False)
    else:
        source = str(weights) if weights else pretrained
        if not source:
            raise EdgekdError("no teacher weights: pass --pretrained TAG, --teacher-weights FILE or --random-teacher")
        try:
            model = open_clip.create_model(name, pretrained=source, weights_only=True)
        except RuntimeError as e:
            raise EdgekdError(
                f"could not load teacher {name} weights {source!r} ({str(e).splitlines()[0]}). Without access to the "
                "model hub, download the weights elsewhere and pass --teacher-weights FILE, or use --random-teacher"
            ) from e
    model = model.to(dev)
    tokenizer = open_clip.get_tokenizer(name)
    return Teacher(spec, model, tokenizer, dev)
