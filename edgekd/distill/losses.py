"""Distillation losses as pure functions of embeddings (no state, no config objects).

Notation (docs/distill.md, ../shared/METHODS.md): `s` student embeddings [B, D] and `t` teacher image embeddings
[B, D], both unit rows; `w` label text embeddings [C, D], unit rows; `y` int64 labels [B] with -1 = unlabeled;
`c` caption text embeddings [B, D] with a bool `has_cap` [B]. Every function returns a scalar tensor that stays in
the autograd graph even when no row qualifies (then it is an exact 0), so any combination can be summed.

Terms (the issue's numbering): 1. feature imitation `cosine_loss`, `mse_loss`; 2. vision-language alignment
`cls_loss`, `vl_align_loss` (OOD-2023, top-k), `kd_loss` (VLM-KD, T^2-scaled KL); 3. relational `contrastive_loss`
(OOD-2023 L_cst) and `affinity_loss`; 4. captions `caption_ood_loss` (OOD-2023 L_cap), `caption_contrastive_loss`
(VLM-KD).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CE_LT_MODES = ("plain", "balanced", "logit-adjust")


def _zero(x: torch.Tensor) -> torch.Tensor:
    """An exact 0 that keeps `x` in the graph (so backward/DDP see every parameter)."""
    return x.sum() * 0.0


def cosine_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """mean_i (1 - cos(s_i, t_i)). [B,D],[B,D] -> []; 0 when s == t."""
    return (1.0 - F.cosine_similarity(s, t.to(s.dtype), dim=-1)).mean()


def mse_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """L_mse = mean_i ||s_i - t_i||^2 (on unit vectors = 2 - 2 cos). [B,D],[B,D] -> []."""
    return (s - t.to(s.dtype)).pow(2).sum(-1).mean()


def class_log_prior(counts: torch.Tensor) -> torch.Tensor:
    """Per-class training counts [C] -> log prior [C] (empty classes counted as 1 so the log stays finite)."""
    counts = counts.float().clamp_min(1.0)
    return torch.log(counts / counts.sum())


def cls_loss(
    s: torch.Tensor,
    w: torch.Tensor,
    y: torch.Tensor,
    temperature: float = 0.07,
    mode: str = "plain",
    log_prior: torch.Tensor | None = None,
    tau: float = 1.0,
) -> torch.Tensor:
    """L_cls = CE(s @ w.T / T, y) over labeled rows (y >= 0). [B,D],[C,D],[B] -> [].

    mode (VLM-KD's CE_LT): 'plain'; 'balanced' (balanced softmax: logits + log prior); 'logit-adjust'
    (logits + tau * log prior). Both long-tail modes need `log_prior` [C] from the training label counts.
    """
    if mode not in CE_LT_MODES:
        raise ValueError(f"unknown CE mode {mode!r}; use one of {CE_LT_MODES}")
    keep = y >= 0
    if not bool(keep.any()):
        return _zero(s)
    logits = s[keep] @ w.to(s.dtype).T / temperature
    if mode != "plain":
        if log_prior is None:
            raise ValueError(f"CE mode {mode!r} needs the class log prior")
        logits = logits + (1.0 if mode == "balanced" else tau) * log_prior.to(logits.dtype)
    return F.cross_entropy(logits, y[keep])


def vl_align_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    w: torch.Tensor,
    temperature: float = 0.07,
    k: int = 256,
    y: torch.Tensor | None = None,
    teacher_correct: bool = False,
) -> torch.Tensor:
    """OOD-2023 L_vlalign: KL(teacher || student) over the k classes the teacher finds closest. [B,D],[B,D],[C,D] -> [].

        z_t = t @ w.T; idx = topk(z_t, k); p = softmax(z_t[idx] / T); q = log_softmax(z_s[idx]), z_s = s @ w.T / T
        loss = mean_i sum_k p * (log p - q)

    teacher_correct: drop labeled rows whose teacher zero-shot prediction is wrong (unlabeled rows cannot be judged
    and are kept). When every row is filtered out the loss is 0 (the original code returned NaN there).
    """
    w = w.to(s.dtype)
    z_t = t.to(s.dtype) @ w.T  # [B,C]
    z_s = s @ w.T / temperature
    if teacher_correct:
        if y is None:
            raise ValueError("teacher_correct filtering needs labels")
        keep = (y < 0) | (z_t.argmax(-1) == y)
        if not bool(keep.any()):
            return _zero(s)
        z_t, z_s = z_t[keep], z_s[keep]
    k = min(k, w.shape[0])
    idx = z_t.topk(k, dim=-1).indices  # [B',k]
    log_p = F.log_softmax(z_t.gather(1, idx) / temperature, dim=-1)
    log_q = F.log_softmax(z_s.gather(1, idx), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def kd_loss(
    s: torch.Tensor, t: torch.Tensor, w: torch.Tensor, temperature: float = 0.07, kd_temperature: float = 2.0
) -> torch.Tensor:
    """VLM-KD: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) with zero-shot logits z = x @ w.T / temperature.

    [B,D],[B,D],[C,D] -> []. Uses every row (no labels needed).
    """
    w = w.to(s.dtype)
    z_t = t.to(s.dtype) @ w.T / temperature
    z_s = s @ w.T / temperature
    log_p = F.log_softmax(z_t / kd_temperature, dim=-1)
    log_q = F.log_softmax(z_s / kd_temperature, dim=-1)
    return kd_temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def contrastive_loss(s: torch.Tensor, t: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """OOD-2023 L_cst: symmetric in-batch InfoNCE between student and teacher images. [B,D],[B,D] -> []."""
    logits = s @ t.to(s.dtype).T / temperature
    target = torch.arange(s.shape[0], device=s.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def affinity_loss(s: torch.Tensor, t: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Relational: KL between the teacher's and the student's in-batch image-image similarity rows.

    A_x = x @ x.T / T with the diagonal removed; loss = mean_i KL(softmax(A_t[i]) || softmax(A_s[i])). [B,D] -> [];
    0 when the student's similarity structure equals the teacher's (e.g. s == t, or s = t @ R for a rotation R).
    """
    b = s.shape[0]
    if b < 3:  # with the diagonal removed a row needs at least 2 entries to be a distribution
        return _zero(s)
    off = ~torch.eye(b, dtype=torch.bool, device=s.device)
    t = t.to(s.dtype)
    a_s = (s @ s.T / temperature)[off].view(b, b - 1)
    a_t = (t @ t.T / temperature)[off].view(b, b - 1)
    log_p = F.log_softmax(a_t, dim=-1)
    log_q = F.log_softmax(a_s, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def caption_ood_loss(s: torch.Tensor, c: torch.Tensor, has_cap: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """OOD-2023 L_cap = CE(s @ c.T, arange) without temperature; other images' captions of the same class are masked
    out (-inf) so they are not pushed away. Rows/columns without a caption are dropped. [B,D],[B,D],[B],[B] -> []."""
    keep = has_cap.bool()
    if int(keep.sum()) < 2:
        return _zero(s)
    s, c, y = s[keep], c[keep].to(s.dtype), y[keep]
    logits = s @ c.T
    same = (y[:, None] == y[None, :]) & (y[:, None] >= 0)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(s.shape[0], device=s.device))


def caption_contrastive_loss(
    s: torch.Tensor, c: torch.Tensor, has_cap: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """VLM-KD: symmetric InfoNCE between student image embeddings and caption embeddings (tau 0.07); works on
    unlabeled images. Rows without a caption are dropped. [B,D],[B,D],[B] -> []."""
    keep = has_cap.bool()
    if int(keep.sum()) < 2:
        return _zero(s)
    return contrastive_loss(s[keep], c[keep], temperature)
