"""Few-shot evaluation on frozen embeddings: nearest-class-mean, a logistic-regression probe (torch L-BFGS, no
sklearn) and the training-free Tip-Adapter, each with K shots per class and tested on the remaining images."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.evaluation import metrics as M

log = logging.getLogger(__name__)


def fit_logistic_probe(
    feats: np.ndarray, labels: np.ndarray, num_classes: int, weight_decay: float = 1e-3, max_iter: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on unit-normalised features, full-batch L-BFGS in float64 (deterministic).

    feats [S, D], labels [S] -> (weight [C, D], bias [C]); minimises mean CE + weight_decay / 2 * ||W||^2.
    Classes without support images keep zero weights and a very negative bias, so they are never predicted.
    """
    x = torch.from_numpy(M.l2_normalize(feats).astype(np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    present = torch.zeros(num_classes, dtype=torch.bool)
    present[y.unique()] = True
    mask = torch.where(present, 0.0, -1e9).to(torch.float64)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b + mask, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), (b + mask).detach().numpy()


def probe_logits(query: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """[Q, D] -> [Q, C] probe logits."""
    return M.l2_normalize(query).astype(np.float64) @ weight.T + bias


def few_shot_scores(
    emb: np.ndarray,
    labels: np.ndarray,
    texts: np.ndarray | None,
    shots: tuple[int, ...] = (1, 5, 16),
    seed: int = 0,
    keys: list[str] | None = None,
    beta: float = M.TIP_BETA,
    alpha: float = 1.0,
) -> dict[str, dict]:
    """K-shot accuracies over the classes 0..C-1 present in `labels`.

    emb [N, D], labels [N] in 0..C-1 (-1 ignored), texts [C, D] or None (no label texts: Tip-Adapter and the
    zero-shot reference are skipped). For each K: support = `select_shots` (deterministic), queries = the rest.
    -> {str(K): {"shots": K, "support", "queries", "min_shots", "ncm": {...}, "probe": {...},
                 "tip_adapter": {...}, "zero_shot": {...}}} where {...} = `classification_scores` of the queries.
    """
    emb, labels = np.asarray(emb), np.asarray(labels)
    labeled = labels >= 0
    emb, labels = emb[labeled], labels[labeled]
    keys = [k for k, ok in zip(keys, labeled) if ok] if keys is not None else None
    num_classes = len(texts) if texts is not None else int(labels.max()) + 1 if len(labels) else 0
    out: dict[str, dict] = {}
    for k in shots:
        support = M.select_shots(labels, k, seed, keys)
        query = ~support
        if not query.any():
            log.warning("%d-shot: no query images left (each class needs more than %d images); skipped", k, k)
            continue
        s_emb, s_lab, q_emb, q_lab = emb[support], labels[support], emb[query], labels[query]
        per_class = np.bincount(s_lab, minlength=num_classes)[np.unique(labels)]
        row: dict = {"shots": int(k), "support": int(support.sum()), "queries": int(query.sum()),
                     "min_shots": int(per_class.min())}
        if row["min_shots"] < k:
            log.warning("%d-shot: some classes have only %d support image(s) (too few images)", k, row["min_shots"])
        row["ncm"] = M.classification_scores(M.ncm_logits(q_emb, s_emb, s_lab, num_classes), q_lab)
        weight, bias = fit_logistic_probe(s_emb, s_lab, num_classes)
        row["probe"] = M.classification_scores(probe_logits(q_emb, weight, bias), q_lab)
        if texts is not None:
            row["tip_adapter"] = M.classification_scores(
                M.tip_adapter_logits(q_emb, texts, s_emb, s_lab, beta=beta, alpha=alpha), q_lab)
            row["zero_shot"] = M.classification_scores(M.cosine_logits(q_emb, texts), q_lab)
        out[str(k)] = row
    return out
