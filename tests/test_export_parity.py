"""The parity gate's metrics and verdicts on hand-made embeddings (no model needed)."""

from __future__ import annotations

import numpy as np

from edgekd.export.parity import GateCriteria, compare, judge
from edgekd.labelpack import LabelPack


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _pack(weights: np.ndarray) -> LabelPack:
    names = [f"c{i}" for i in range(len(weights))]
    return LabelPack(names, _unit(weights), {n: [] for n in names}, {"teacher_id": "t", "embed_dim": weights.shape[1]})


def _images(pack: LabelPack, n: int, ties: int, decisive_flips: int, seed: int = 0):
    """Reference embeddings on class c0 (clear margin) except `ties` images halfway between c0 and c1; the exported
    embeddings equal the reference except that they move the tied images and `decisive_flips` clear ones to c1."""
    w = pack.embeddings
    ref = np.repeat(w[:1], n, axis=0) + 0.01 * np.random.default_rng(seed).standard_normal((n, w.shape[1]))
    ref[:ties] = _unit(w[0] + w[1]) + 1e-5 * (w[0] - w[1])  # c0 by a hair
    exp = ref.copy()
    exp[:ties] += 1e-3 * (w[1] - w[0])  # a quantisation-sized nudge flips a tie
    exp[ties:ties + decisive_flips] = w[1]
    return _unit(ref), _unit(exp)


def test_flips_between_near_tied_classes_are_forgiven_but_reported():
    pack = _pack(np.eye(4, 16) + 0.1)
    ref, exp = _images(pack, 100, ties=5, decisive_flips=1)
    m = compare(ref, exp, pack, tie_margin=1e-3)
    assert m["top1_agreement_strict"] == 0.94  # every flip counts
    assert m["top1_agreement"] == 0.99  # only the decisive flip counts
    assert m["flips_within_tie_margin"] == 5 and m["near_ties"] == 5
    passed, reasons, criteria = judge(m, GateCriteria.default("int8"))
    assert passed, reasons
    assert "ties within 0.001" in criteria


def test_strict_gate_and_decisive_flips_fail():
    pack = _pack(np.eye(4, 16) + 0.1)
    ref, exp = _images(pack, 100, ties=5, decisive_flips=1)
    strict = GateCriteria.default("int8", tie_margin=0.0)
    passed, reasons, _ = judge(compare(ref, exp, pack, tie_margin=strict.tie_margin), strict)
    assert not passed and "top-1 agreement 94.00% < 98.00%" in reasons[0]

    ref, exp = _images(pack, 100, ties=0, decisive_flips=3)
    passed, reasons, _ = judge(compare(ref, exp, pack), GateCriteria.default("int8"))
    assert not passed and "97.00%" in reasons[0]


def test_accuracy_drop_is_gated_on_labelled_images():
    pack = _pack(np.eye(4, 16) + 0.1)
    ref, exp = _images(pack, 100, ties=0, decisive_flips=2)
    labels = np.zeros(100, np.int64)  # all c0: the flips cost 2 points of accuracy
    m = compare(ref, exp, pack, labels)
    assert m["accuracy_reference"] == 100.0 and m["accuracy_drop"] == 2.0
    passed, reasons, _ = judge(m, GateCriteria.default("int8", min_agreement=0.9))
    assert not passed and "accuracy drop 2.00 > 1.0" in reasons[0]
    assert judge(m, GateCriteria.default("int8", min_agreement=0.9, max_drop=2.0))[0]


def test_fp32_gate_uses_mean_cosine():
    pack = _pack(np.eye(4, 16) + 0.1)
    ref, _ = _images(pack, 20, ties=0, decisive_flips=0)
    noisy = _unit(ref + 0.02 * np.random.default_rng(1).standard_normal(ref.shape))
    assert judge(compare(ref, ref, pack), GateCriteria.default("fp32"))[0]
    passed, reasons, _ = judge(compare(ref, noisy, pack), GateCriteria.default("fp32"))
    assert not passed and "mean embedding cosine" in reasons[0]
