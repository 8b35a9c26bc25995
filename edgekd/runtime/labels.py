"""Runtime label handling (numpy only): calibrated scores, per-class thresholds with an "unknown" answer, few-shot
classes from a handful of embeddings.

A `LabelSet` is immutable: the classifier swaps whole sets, so a classify() running in another thread always sees
one consistent set of names, embeddings and thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from edgekd import EdgekdError
from edgekd.labelpack import LabelPack

UNKNOWN = "unknown"
THRESHOLD_METRICS = ("score", "prob")
# Scoring a frame (benchmarks/scoring.py measures these choices; SMALL_BATCH's 16 predates it)
SMALL_BATCH = 16  # up to this many rows, cosines come from per-row dot products instead of a BLAS matrix product
ARGSORT_BELOW = 256  # label sets smaller than this are sorted whole: a stable argsort is as fast as any selection
ARGMAX_TOP_K = 16  # top-k up to this k by k passes of argmax, beyond it by np.partition
_vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0


class Prediction(NamedTuple):
    """One answer. score: cosine similarity in [-1, 1]; prob: softmax(logit_scale * cosine) over the label set;
    index: class index in the label set, -1 for the "unknown" answer."""

    label: str
    score: float
    prob: float
    index: int = -1

    @property
    def is_unknown(self) -> bool:
        return self.index < 0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 6), "prob": round(self.prob, 6)}


@dataclass(frozen=True)
class LabelSet:
    """A label pack plus how to turn cosines into answers.

    thresholds: float32 [C], NaN where a class has none. A top-1 class whose metric (`threshold_on`: the cosine
    'score' or the softmax 'prob') is below its threshold is answered as `unknown_label`.
    """

    pack: LabelPack
    logit_scale: float
    thresholds: np.ndarray
    threshold_on: str = "score"
    unknown_label: str = UNKNOWN

    def __post_init__(self) -> None:
        object.__setattr__(self, "_emb", np.ascontiguousarray(self.pack.embeddings, dtype=np.float32))  # [C, D]
        object.__setattr__(self, "_emb_t", np.ascontiguousarray(self._emb.T))  # [D, C]
        object.__setattr__(self, "_th", np.asarray(self.thresholds, np.float32).tolist())  # [C] floats, NaN: none

    @classmethod
    def from_pack(cls, pack: LabelPack, logit_scale: float | None = None) -> LabelSet:
        """Use the pack's logit scale (the teacher's) unless given; thresholds saved in the pack's meta come along."""
        scale = float(logit_scale if logit_scale is not None else pack.logit_scale)
        if not math.isfinite(scale) or scale <= 0:
            raise EdgekdError(f"logit_scale must be a positive number, got {scale}")
        saved = pack.meta.get("thresholds") or {}
        ls = cls(pack, scale, np.full(len(pack), np.nan, np.float32))
        if saved:
            ls = ls.with_thresholds(saved.get("default"), saved.get("per_class"), saved.get("on", "score"),
                                    saved.get("unknown_label", UNKNOWN))
        return ls

    @property
    def class_names(self) -> list[str]:
        return self.pack.class_names

    def __len__(self) -> int:
        return len(self.pack)

    def with_thresholds(self, default: float | None = None, per_class: dict[str, float] | None = None,
                        on: str = "score", unknown_label: str = UNKNOWN) -> LabelSet:
        """New set with thresholds: `default` for every class, overridden by `per_class` {name: threshold}."""
        if on not in THRESHOLD_METRICS:
            raise ValueError(f"threshold_on must be one of {THRESHOLD_METRICS}, got {on!r}")
        th = np.full(len(self.pack), np.nan if default is None else _check_threshold(default, on), np.float32)
        for name, value in (per_class or {}).items():
            if name not in self.pack.class_names:
                raise EdgekdError(f"threshold for {name!r}: no such class in the label set "
                                  f"({', '.join(self.pack.class_names[:8])}...)")
            th[self.pack.class_names.index(name)] = _check_threshold(value, on)
        if not isinstance(unknown_label, str) or not unknown_label:
            raise ValueError("unknown_label must be a non-empty string")
        return replace(self, thresholds=th, threshold_on=on, unknown_label=unknown_label)

    def scores(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """emb float32 [B, D] unit rows -> (cosine [B, C], prob [B, C] = softmax(logit_scale * cosine))."""
        cos = self._cosine(emb)
        logits = self.logit_scale * cos
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return cos, e / e.sum(axis=1, keepdims=True)

    def predict(self, emb: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """emb [B, D] -> for each row the top_k predictions, best first. When the best class is below its threshold
        the first answer is `unknown_label` (with the best class's score/prob), followed by the top_k - 1 best.

        Same answers as sorting scores() (stable: equal cosines in class order), without sorting or normalising all
        C classes: a selection of the k best, and the softmax's denominator (one exp over C) for those k only.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        cos = self._cosine(emb)
        k = min(int(top_k), cos.shape[1])
        return [self._answer(row, top_k_indices(row, k), int(top_k)) for row in cos]

    def _cosine(self, emb: np.ndarray) -> np.ndarray:
        """emb float32 [B, D] unit rows -> cosine float32 [B, C]."""
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"expected embeddings [B, D], got shape {emb.shape}")
        if emb.shape[0] > SMALL_BATCH:
            return emb @ self._emb_t
        # A BLAS matrix product wakes OpenBLAS's thread pool, whose threads then wait for a core on a busy device
        # (2 busy processes on 2 cores: p99 27 ms at C=1000, p50 21 ms at C=10,000; benchmarks/results/scoring.md);
        # big batches amortise it. Small ones take one dot product per (row, class): BLAS ?dot of two D-vectors stays
        # on the calling thread (no pool thread ran at D=512), and is 1.4-2x faster than einsum's loop was.
        return _rowdot(self._emb, emb)

    def _answer(self, cos: np.ndarray, top: np.ndarray, top_k: int) -> list[Prediction]:
        """One row: cosines float32 [C] and its best classes int [k], best first -> the predictions (the "unknown"
        answer first when the best class is below its threshold)."""
        names = self.pack.class_names
        probs = top_probs(cos, top, self.logit_scale)
        preds = [Prediction(names[i], s, p, i) for i, s, p in zip(top.tolist(), cos[top].tolist(), probs.tolist())]
        best = preds[0]
        th = self._th[best.index]
        if not math.isnan(th) and (best.score if self.threshold_on == "score" else best.prob) < th:
            preds = [Prediction(self.unknown_label, best.score, best.prob, -1)] + preds[: top_k - 1]
        return preds

    def with_class(self, name: str, embedding: np.ndarray, prompts: list[str] | None = None,
                   note: dict[str, Any] | None = None) -> LabelSet:
        """New set with class `name` added (or replaced) by `embedding` [D] (normalised here)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"label must be a non-empty string, got {name!r}")
        emb = np.asarray(embedding, np.float32).reshape(1, -1)
        if emb.shape[1] != self.pack.embed_dim:
            raise EdgekdError(f"embedding for {name!r} is {emb.shape[1]}-d, the label set is {self.pack.embed_dim}-d")
        meta = dict(self.pack.meta)
        if note:
            meta["few_shot"] = {**(meta.get("few_shot") or {}), name: note}
        new = LabelPack([name], emb, {name: list(prompts or [])}, meta)
        merged = self.pack.merged(new)
        old = dict(zip(self.pack.class_names, self.thresholds))
        th = np.array([old.get(n, np.nan) for n in merged.class_names], np.float32)
        return replace(self, pack=merged, thresholds=th)

    def to_pack(self) -> LabelPack:
        """The label pack with thresholds recorded in its meta (so save -> load keeps them)."""
        meta = dict(self.pack.meta)
        per_class = {n: float(t) for n, t in zip(self.pack.class_names, self.thresholds) if not np.isnan(t)}
        meta["thresholds"] = {"on": self.threshold_on, "per_class": per_class, "unknown_label": self.unknown_label} \
            if per_class else None
        meta["logit_scale"] = self.logit_scale
        return LabelPack(list(self.pack.class_names), self.pack.embeddings.copy(), dict(self.pack.prompts), meta)


def top_k_indices(cos: np.ndarray, k: int) -> np.ndarray:
    """cos [C], k >= 1 -> int [min(k, C)]: the best classes, best first, equal cosines in class order (NaN last): the
    same as np.argsort(-cos, kind="stable")[:k], without sorting all C classes when k is small."""
    c = cos.shape[0]
    if k >= c or c < ARGSORT_BELOW:
        return np.argsort(-cos, kind="stable")[:k]
    top = _top_k_argmax(cos, k) if k <= ARGMAX_TOP_K else _top_k_partition(cos, k)
    return np.argsort(-cos, kind="stable")[:k] if top is None else top


def _top_k_argmax(cos: np.ndarray, k: int) -> np.ndarray | None:
    """[C] -> int [k] by k passes of argmax (the first of equal maxima, so ties come in class order), each pick masked
    with -inf; None when a NaN or -inf was picked (where they go is the sort's business)."""
    work = cos.copy() if k > 1 else cos
    top = np.empty(k, np.intp)
    for j in range(k):
        top[j] = work.argmax()
        if j + 1 < k:
            work[top[j]] = -np.inf
    return top if (cos[top] > -np.inf).all() else None


def _top_k_partition(cos: np.ndarray, k: int) -> np.ndarray | None:
    """[C] -> int [k]: the k-th best cosine by np.partition, then every class at least that good (in class order, so
    ties at the k-th place keep the lowest indices) sorted stably; None when the k-th best is NaN."""
    neg = -cos
    kth = np.partition(neg, k - 1)[k - 1]
    if np.isnan(kth):
        return None
    cand = np.flatnonzero(neg <= kth)
    return cand[np.argsort(neg[cand], kind="stable")[:k]]


def top_probs(cos: np.ndarray, top: np.ndarray, logit_scale: float) -> np.ndarray:
    """cos float32 [C], top int [k] with top[0] the best class -> float32 [k]: softmax(logit_scale * cos) over all C
    at `top`, by the same float32 steps as LabelSet.scores (the max of the logits is the best class's)."""
    e = logit_scale * cos  # float32 [C]: a Python float scales without promoting
    e -= e[top[0]]
    np.exp(e, out=e)
    return e[top] / e.sum()


def _rowdot(labels: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """labels [C, D], emb [B, D] -> [B, C], one dot product per pair (np.vecdot; before numpy 2 matmul's 1xD @ Dx1,
    the same BLAS ?dot)."""
    if _vecdot is not None:
        return _vecdot(labels, emb[:, None, :])
    return np.matmul(emb[:, None, None, :], labels[:, :, None])[..., 0, 0]


def mean_embedding(embs: np.ndarray, text_emb: np.ndarray | None = None, text_weight: float = 0.0) -> np.ndarray:
    """Few-shot class prototype: normalise(mean of unit image embeddings [N, D]), optionally mixed with a unit text
    embedding [D] as normalise((1 - w) * image + w * text). -> float32 [D], unit norm."""
    if embs.ndim != 2 or embs.shape[0] == 0:
        raise ValueError("need at least one example embedding")
    w = float(text_weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"text_weight must be in [0, 1], got {text_weight}")
    proto = _unit(embs.astype(np.float32).mean(axis=0))
    if w > 0:
        if text_emb is None:
            raise EdgekdError("text_weight > 0 needs a text embedding of the label: use a label that is already in "
                              "the label set, or load a text encoder (text_encoder=DIR)")
        proto = _unit((1.0 - w) * proto + w * _unit(np.asarray(text_emb, np.float32).reshape(-1)))
    return proto


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n < 1e-12:
        raise EdgekdError("the example embeddings cancel out (zero mean); give more varied examples")
    return (v / n).astype(np.float32)


def _check_threshold(value: Any, on: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"threshold must be a number, got {value!r}") from e
    lo, hi = (-1.0, 1.0) if on == "score" else (0.0, 1.0)
    if not lo <= v <= hi:
        raise ValueError(f"a {on} threshold must be in [{lo}, {hi}], got {v}")
    return v
