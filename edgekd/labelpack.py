"""Label packs: class names + L2-normalised text embeddings + where they came from, in one .npz (numpy only).

Written by `edgekd labels` (with the teacher), read by training, eval, export and the on-device runtime.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_write_bytes

FORMAT = "edgekd.labels"
VERSION = 1


class LabelPackMismatchError(EdgekdError):
    """Label pack made by another teacher or with another embedding size than the model it is used with."""


@dataclass
class LabelPack:
    """class_names [C]; embeddings float32 [C, D] with unit rows; prompts per class; meta (teacher_id, ...)."""

    class_names: list[str]
    embeddings: np.ndarray
    prompts: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        emb = np.asarray(self.embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(self.class_names):
            raise EdgekdError(f"label embeddings must be [C, D] with C={len(self.class_names)}, got {emb.shape}")
        if len(set(self.class_names)) != len(self.class_names):
            raise EdgekdError("label pack has duplicate class names")
        if not np.all(np.isfinite(emb)):
            raise EdgekdError("label embeddings contain NaN/Inf")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.embeddings = emb / np.maximum(norms, 1e-12)
        self.meta.setdefault("embed_dim", int(emb.shape[1]))

    @property
    def teacher_id(self) -> str:
        return str(self.meta.get("teacher_id", ""))

    @property
    def embed_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def logit_scale(self) -> float:
        return float(self.meta.get("logit_scale", 100.0))

    def __len__(self) -> int:
        return len(self.class_names)

    def check_compatible(self, teacher_id: str | None, embed_dim: int, what: str = "the model") -> None:
        """Refuse packs from another teacher or embedding size (a teacher_id of None/'' skips the teacher check)."""
        if self.embed_dim != embed_dim:
            raise LabelPackMismatchError(
                f"label pack has {self.embed_dim}-d embeddings but {what} produces {embed_dim}-d ones; "
                "make the pack with the same teacher (`edgekd labels --teacher ...`)")
        if teacher_id and self.teacher_id and self.teacher_id != teacher_id:
            raise LabelPackMismatchError(
                f"label pack was made by teacher {self.teacher_id} but {what} was distilled from {teacher_id}; "
                "re-run `edgekd labels` with that teacher")

    def subset(self, names: list[str]) -> LabelPack:
        missing = [n for n in names if n not in self.class_names]
        if missing:
            raise EdgekdError(f"classes not in the label pack: {', '.join(missing[:5])}")
        idx = [self.class_names.index(n) for n in names]
        return LabelPack([self.class_names[i] for i in idx], self.embeddings[idx],
                         {n: self.prompts.get(n, []) for n in names}, dict(self.meta))

    def merged(self, other: LabelPack) -> LabelPack:
        """Classes of both packs; `other` wins on name clashes."""
        names = [n for n in self.class_names if n not in other.class_names] + list(other.class_names)
        emb = {**dict(zip(self.class_names, self.embeddings)), **dict(zip(other.class_names, other.embeddings))}
        return LabelPack(names, np.stack([emb[n] for n in names]), {**self.prompts, **other.prompts}, dict(self.meta))

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        meta = {"format": FORMAT, "version": VERSION, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                **self.meta, "embed_dim": self.embed_dim, "num_classes": len(self)}
        buf = io.BytesIO()
        np.savez(buf, class_names=np.array(self.class_names, dtype=np.str_),
                 embeddings=self.embeddings.astype(np.float32),
                 prompts=np.array(json.dumps(self.prompts)), meta=np.array(json.dumps(meta)))
        atomic_write_bytes(path, buf.getvalue())
        return path


def load_label_pack(path: str | os.PathLike) -> LabelPack:
    """Read a .npz label pack; clear errors for missing files and files that are not label packs."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: no such label pack (make one with `edgekd labels`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise EdgekdError(f"{path}: not an edgekd label pack (format {meta.get('format')!r})")
            return LabelPack([str(n) for n in z["class_names"]], z["embeddings"], json.loads(str(z["prompts"])), meta)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{path}: not a readable edgekd label pack ({type(e).__name__}: {e})") from e
