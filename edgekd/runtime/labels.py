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
        object.__setattr__(self, "_emb_t", np.ascontiguousarray(self.pack.embeddings.T))  # [D, C]

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
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        # Small batches use einsum's single-threaded loop: a BLAS call wakes OpenBLAS's thread pool, which on a busy
        # 2-core device costs ~20 ms per call for 1000 classes (einsum: 0.15 ms); big batches amortise it.
        cos = np.einsum("bd,dc->bc", emb, self._emb_t) if emb.shape[0] <= 16 else emb @ self._emb_t
        logits = self.logit_scale * cos
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return cos, e / e.sum(axis=1, keepdims=True)

    def predict(self, emb: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """emb [B, D] -> for each row the top_k predictions, best first. When the best class is below its threshold
        the first answer is `unknown_label` (with the best class's score/prob), followed by the top_k - 1 best."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        cos, prob = self.scores(emb)
        k = min(int(top_k), len(self.pack))
        order = np.argsort(-cos, axis=1, kind="stable")[:, :k]
        names = self.pack.class_names
        out = []
        for b in range(cos.shape[0]):
            preds = [Prediction(names[i], float(cos[b, i]), float(prob[b, i]), int(i)) for i in order[b]]
            best = preds[0]
            th = self.thresholds[best.index]
            if not np.isnan(th) and (best.score if self.threshold_on == "score" else best.prob) < th:
                preds = [Prediction(self.unknown_label, best.score, best.prob, -1)] + preds[: int(top_k) - 1]
            out.append(preds)
        return out

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
