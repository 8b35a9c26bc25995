"""Evaluation metrics as pure numpy functions (no torch): zero-shot accuracy, mean per-class accuracy, teacher
fidelity, retrieval, long-tail buckets and the training-free few-shot classifiers (NCM, Tip-Adapter).

Conventions: embeddings are float arrays [N, D] (normalised here, so callers may pass raw vectors), class texts
[C, D], labels int [N] indexing the C classes. Every function returns plain Python floats/dicts (JSON-ready).
"""

from __future__ import annotations

import numpy as np

# Long-tail buckets of the VLM-KD protocol: training images per class.
MANY_MIN = 100  # many: > 100
FEW_MAX = 20  # few: < 20; medium: 20..100
TIP_BETA = 5.5  # Tip-Adapter sharpness used by the OOD paper
CHUNK = 4096  # rows per block for N x N similarity (retrieval) so memory stays O(CHUNK * N)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """[N, D] -> [N, D] unit rows (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def cosine_logits(emb: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Zero-shot logits: [N, D] images x [C, D] class texts -> [N, C] cosines."""
    return l2_normalize(emb) @ l2_normalize(texts).T


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the k largest logits ([N, C], [N]); k is clipped to C."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    if k == 1:
        return float(np.mean(logits.argmax(1) == labels))
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean((top == labels[:, None]).any(1)))


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """{class: top-1 accuracy over that class's images} for the classes present in `labels`."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return {int(c): float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)}


def mean_per_class_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over present classes of per-class top-1 (the OOD paper's metric; robust to class imbalance)."""
    accs = per_class_accuracy(pred, labels)
    return float(np.mean(list(accs.values()))) if accs else float("nan")


def classification_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """[N, C] logits + [N] labels -> {top1, top5, mean_per_class_top1, images, classes}."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    pred = logits.argmax(1) if len(labels) else np.zeros(0, int)
    return {
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "mean_per_class_top1": mean_per_class_accuracy(pred, labels),
        "images": int(len(labels)),
        "classes": int(logits.shape[1]),
    }


def zero_shot_scores(
    emb: np.ndarray, labels: np.ndarray, texts: np.ndarray, classes: np.ndarray | list[int] | None = None
) -> dict[str, float]:
    """Zero-shot accuracy of images whose label is in `classes`, classified among those classes' texts only.

    emb [N, D], labels [N] (indices into texts; -1 = unlabeled, ignored), texts [C, D]. `classes` None = all C.
    This is the OOD paper's protocol: unseen images among unseen texts, held-out seen images among seen texts.
    """
    labels = np.asarray(labels)
    classes = np.arange(len(texts)) if classes is None else np.asarray(classes, dtype=np.int64)
    remap = np.full(len(texts), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    keep = (labels >= 0) & (remap[np.clip(labels, 0, None)] >= 0)
    logits = cosine_logits(np.asarray(emb)[keep], np.asarray(texts)[classes])
    return classification_scores(logits, remap[labels[keep]])


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean of seen/unseen accuracies (0 when either is 0)."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return float("nan")
    return 0.0 if a + b == 0 else float(2 * a * b / (a + b))


# --- teacher fidelity -------------------------------------------------------------------------------------------


def mean_cosine(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean cosine between paired rows of [N, D] student and [N, D] teacher embeddings."""
    if len(student) == 0:
        return float("nan")
    return float(np.mean(np.sum(l2_normalize(student) * l2_normalize(teacher), axis=1)))


def centred_cosine(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean cosine after subtracting the teacher's mean (L2-normalised) embedding from both sides. Teacher embeddings
    share a large common component (a random-weight ViT-B-32's pairwise cosine on CIFAR-10 is ~0.67), so a student
    that outputs one constant vector already scores a high plain cosine; here it scores ~0."""
    if len(student) == 0:
        return float("nan")
    s, t = l2_normalize(student), l2_normalize(teacher)
    mu = t.mean(0, keepdims=True)
    return mean_cosine(s - mu, t - mu)


def retrieval_at_k(queries: np.ndarray, gallery: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Query i's match is gallery row i: fraction of queries whose match ranks in the top k by cosine.

    queries [N, D] (student), gallery [N, D] (teacher). Ties count against the query (a strict '>' rank).
    Computed in row blocks, so N = 100k images needs O(CHUNK * N) memory.
    """
    q, g = l2_normalize(queries), l2_normalize(gallery)
    n = len(q)
    if n == 0:
        return {k: float("nan") for k in ks}
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, CHUNK):
        sims = q[start : start + CHUNK] @ g.T  # [b, N]
        rows = np.arange(sims.shape[0])
        own = sims[rows, start + rows]
        ranks[start : start + CHUNK] = (sims > own[:, None]).sum(1) + (sims == own[:, None]).sum(1) - 1
    return {k: float(np.mean(ranks < k)) for k in ks}


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Fraction of identical predictions (e.g. student vs teacher zero-shot top-1)."""
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    return float(np.mean(pred_a == pred_b)) if len(pred_a) else float("nan")


def fidelity_scores(
    student: np.ndarray, teacher: np.ndarray, texts: np.ndarray | None = None
) -> dict[str, float]:
    """Label-free fidelity of [N, D] student vs [N, D] teacher embeddings of the same images.

    -> {mean_cosine, centred_cosine, retrieval_at_1, retrieval_at_5, images} (+ top1_agreement with the teacher's
    zero-shot predictions when class texts [C, D] are given).
    """
    ret = retrieval_at_k(student, teacher, (1, 5))
    out = {"mean_cosine": mean_cosine(student, teacher), "centred_cosine": centred_cosine(student, teacher),
           "retrieval_at_1": ret[1], "retrieval_at_5": ret[5], "images": int(len(student))}
    if texts is not None and len(student):
        out["top1_agreement"] = agreement(cosine_logits(student, texts).argmax(1),
                                          cosine_logits(teacher, texts).argmax(1))
    return out


# --- long tail --------------------------------------------------------------------------------------------------


def long_tail_bucket(train_count: int) -> str:
    """VLM-KD buckets: 'many' (> 100 training images), 'medium' (20-100), 'few' (< 20)."""
    if train_count > MANY_MIN:
        return "many"
    return "few" if train_count < FEW_MAX else "medium"


def long_tail_scores(pred: np.ndarray, labels: np.ndarray, train_counts: np.ndarray) -> dict[str, dict]:
    """Top-1 per bucket. pred/labels [N] class indices, train_counts [C] training images per class.

    -> {"many"|"medium"|"few": {top1, mean_per_class_top1, images, classes}} for the buckets present in `labels`.
    """
    pred, labels, train_counts = np.asarray(pred), np.asarray(labels), np.asarray(train_counts)
    buckets = np.array([long_tail_bucket(int(c)) for c in train_counts])
    out: dict[str, dict] = {}
    for name in ("many", "medium", "few"):
        sel = buckets[labels] == name if len(labels) else np.zeros(0, bool)
        if not sel.any():
            continue
        out[name] = {"top1": float(np.mean(pred[sel] == labels[sel])),
                     "mean_per_class_top1": mean_per_class_accuracy(pred[sel], labels[sel]),
                     "images": int(sel.sum()), "classes": int(len(np.unique(labels[sel])))}
    return out


# --- training-free few-shot classifiers -------------------------------------------------------------------------


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[N] int -> float32 [N, C]."""
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), np.asarray(labels)] = 1.0
    return out


def class_means(feats: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Nearest-class-mean prototypes: [N, D] support features, [N] labels -> [C, D] normalised class means
    (zero rows for classes without support)."""
    sums = one_hot(labels, num_classes).T @ l2_normalize(feats)
    return l2_normalize(sums)


def ncm_logits(query: np.ndarray, support: np.ndarray, support_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[Q, D] queries -> [Q, C] cosines to the class-mean prototypes of the support set."""
    return cosine_logits(query, class_means(support, support_labels, num_classes))


def tip_adapter_logits(
    query: np.ndarray,
    texts: np.ndarray,
    support: np.ndarray,
    support_labels: np.ndarray,
    beta: float = TIP_BETA,
    alpha: float = 1.0,
) -> np.ndarray:
    """Training-free Tip-Adapter (as used by the OOD paper):
    logits = q @ W.T + alpha * sum_k exp(-beta * (1 - q . f_k)) * onehot(y_k).

    query [Q, D], texts W [C, D], support f [S, D] with labels [S] -> [Q, C].
    """
    q = l2_normalize(query)
    affinity = np.exp(-beta * (1.0 - q @ l2_normalize(support).T))  # [Q, S]
    return cosine_logits(q, texts) + alpha * affinity @ one_hot(support_labels, len(texts))


def select_shots(labels: np.ndarray, shots: int, seed: int = 0, keys: list[str] | None = None) -> np.ndarray:
    """Deterministic K-shot support selection -> bool [N] mask of support images.

    Per class, images are ordered by a permutation seeded with (seed, class id) and the first min(K, n - 1) are
    taken, so each class keeps at least one query image and K=1 is a subset of K=5 is a subset of K=16. `keys`
    (e.g. relative paths) fix the order before permuting, so the choice does not depend on listing order.
    Images with label -1 are never chosen.
    """
    labels = np.asarray(labels)
    order = np.argsort(np.asarray(keys), kind="stable") if keys is not None else np.arange(len(labels))
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels[labels >= 0]):
        members = order[labels[order] == c]
        perm = np.random.default_rng([seed, int(c)]).permutation(len(members))
        take = min(shots, max(len(members) - 1, 1))
        mask[members[perm[:take]]] = True
    return mask
