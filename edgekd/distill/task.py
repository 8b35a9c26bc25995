"""DistillTask: student + frozen targets -> {"loss", parts}. The training loop only ever sees this dict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from edgekd.distill import losses as L
from edgekd.distill.config import LossConfig
from edgekd.students.model import Student

Gather = Callable[[torch.Tensor], torch.Tensor]


class _Ctx(NamedTuple):
    s: torch.Tensor  # [B,D] student
    t: torch.Tensor  # [B,D] teacher
    y: torch.Tensor  # [B] labels, -1 unlabeled
    cap: torch.Tensor | None  # [B,D] caption embeddings
    has_cap: torch.Tensor | None  # [B] bool
    w: torch.Tensor | None  # [C,D] label text embeddings
    log_prior: torch.Tensor | None  # [C]
    cfg: LossConfig


# term -> loss of the batch context; one entry per name in edgekd.distill.config.TERMS
TERM_FNS: dict[str, Callable[[_Ctx], torch.Tensor]] = {
    "cos": lambda c: L.cosine_loss(c.s, c.t),
    "mse": lambda c: L.mse_loss(c.s, c.t),
    "cls": lambda c: L.cls_loss(c.s, c.w, c.y, c.cfg.temperature, c.cfg.ce_lt, c.log_prior, c.cfg.la_tau),
    "kl": lambda c: L.kd_loss(c.s, c.t, c.w, c.cfg.temperature, c.cfg.kd_temperature),
    "vlalign": lambda c: L.vl_align_loss(c.s, c.t, c.w, c.cfg.temperature, c.cfg.topk, c.y, c.cfg.teacher_correct),
    "cst": lambda c: L.contrastive_loss(c.s, c.t, c.cfg.temperature),
    "rel": lambda c: L.affinity_loss(c.s, c.t, c.cfg.temperature),
    "cap": lambda c: L.caption_ood_loss(c.s, c.cap, c.has_cap, c.y),
    "capcon": lambda c: L.caption_contrastive_loss(c.s, c.cap, c.has_cap, c.cfg.temperature),
}


class DistillTask(nn.Module):
    """Owns the student and the loss terms.

    forward(batch) with batch keys:
        pixels [B,3,H,W] (student input), labels int64 [B] (-1 = unlabeled),
        teacher [B,D] cached teacher embeddings, or teacher_pixels [B,3,h,w] (online teacher),
        caption [B,D] + has_caption bool [B] (optional)
    returns {"loss": weighted sum, "<term>": unweighted value, ...} (all scalars).

    `gather` (DDP) concatenates a rank-local tensor over all ranks in rank order, keeping the gradient of the local
    slice only; the loss is then the exact global-batch loss on every rank (see edgekd.distill.ddp).
    """

    def __init__(
        self,
        student: Student,
        loss: LossConfig,
        label_embeds: torch.Tensor | None = None,
        class_counts: torch.Tensor | None = None,
        teacher: Any = None,
        gather: Gather | None = None,
    ):
        super().__init__()
        self.student = student
        self.loss_cfg = loss
        self.weights = loss.active
        # non-persistent: the run's state dict is the student's only
        self.register_buffer("label_embeds", label_embeds.float() if label_embeds is not None else None,
                             persistent=False)
        log_prior = L.class_log_prior(class_counts) if class_counts is not None else None
        self.register_buffer("log_prior", log_prior, persistent=False)
        self.teacher = teacher  # edgekd.teacher.clip.Teacher (not an nn.Module: frozen, never saved)
        self.gather = gather

    def teacher_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "teacher" in batch:
            return batch["teacher"].float()
        if self.teacher is None:
            raise RuntimeError("batch has teacher_pixels but the task has no online teacher")
        return self.teacher.encode_images(batch["teacher_pixels"]).to(batch["pixels"].device)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = self.student(batch["pixels"]).float()  # [B,D] unit rows (fp32 for the losses, even under autocast)
        t = self.teacher_targets(batch)
        y = batch["labels"]
        cap, has_cap = batch.get("caption"), batch.get("has_caption")
        if self.gather is not None:
            s, t, y = self.gather(s), self.gather(t), self.gather(y)
            if cap is not None:
                cap, has_cap = self.gather(cap), self.gather(has_cap)
        ctx = _Ctx(s, t, y, cap, has_cap, self.label_embeds, self.log_prior, self.loss_cfg)
        parts = {term: TERM_FNS[term](ctx) for term in self.weights}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return {"loss": total, **parts}
