"""The parity gate's metrics and verdicts on hand-made embeddings (no model needed), including the cases built to
fool it: each must fail with a message that says why."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export.parity import GateCriteria, compare, judge, wilson_interval
from edgekd.labelpack import LabelPack

D = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _pack(weights: np.ndarray) -> LabelPack:
    names = [f"c{i}" for i in range(len(weights))]
    return LabelPack(names, _unit(weights), {n: [] for n in names}, {"teacher_id": "t", "embed_dim": weights.shape[1]})


def _images(pack: LabelPack, n: int, ties: int, decisive_flips: int, seed: int = 0):
    """Reference embeddings near class c0 (clear margin) except `ties` images 1e-4 from the c0/c1 boundary; the
    exported embeddings equal the reference except that they push the tied images and `decisive_flips` clear ones
    over to c1."""
    w = pack.embeddings.astype(np.float64)
    ref = np.repeat(w[:1], n, axis=0) + 0.01 * np.random.default_rng(seed).standard_normal((n, w.shape[1]))
    ref[:ties] = _unit(w[0] + w[1]) + 1e-4 * _unit(w[0] - w[1])  # c0 by a hair
    exp = ref.copy()
    exp[:ties] += 1e-3 * (w[1] - w[0])  # a quantisation-sized nudge flips a tie
    exp[ties:ties + decisive_flips] = w[1]
    return _unit(ref), _unit(exp)


def _judge(ref, exp, pack=None, precision="int8", **overrides):
    crit = GateCriteria.default(precision, **overrides)
    return judge(compare(ref, exp, pack, tie_margin=crit.tie_margin), crit)


def test_flips_near_the_class_boundary_are_forgiven_but_reported():
    pack = _pack(np.eye(4, D) + 0.1)
    ref, exp = _images(pack, 250, ties=5, decisive_flips=1)
    m = compare(ref, exp, pack, tie_margin=GateCriteria.default("int8").tie_margin)
    assert m["top1_agreement_strict"] == pytest.approx(244 / 250)  # every flip counts
    assert m["top1_agreement"] == pytest.approx(249 / 250)  # only the decisive flip counts
    assert m["flips"] == 6 and m["flips_within_tie_margin"] == 5
    lo, hi = m["top1_agreement_ci95"]
    assert lo < m["top1_agreement"] < hi and hi - lo < 0.03
    passed, reasons, criteria = judge(m, GateCriteria.default("int8", min_worst_cosine=0.0, min_p1_cosine=0.0))
    assert passed, reasons
    assert "class boundary forgiven" in criteria


def test_the_tie_margin_scales_with_the_label_packs_spread():
    """The same score gap (0.002) is a real disagreement between near-parallel labels (the reference embedding lies
    far from their decision boundary) and a tie between distinct ones."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal(D)
    for spread, forgiven in ((0.02, False), (1.0, True)):
        w = _unit(base + spread * rng.standard_normal((2, D))).astype(np.float64)
        normal, on_boundary = _unit(w[0] - w[1]), _unit(w[0] + w[1])  # equal scores on `on_boundary`
        step = 0.002 / np.linalg.norm(w[0] - w[1])
        ref, exp = _unit(on_boundary + step * normal)[None], _unit(on_boundary - step * normal)[None]
        assert float((ref @ (w[0] - w[1]))[0]) == pytest.approx(0.002, rel=1e-2)
        m = compare(np.repeat(ref, 200, 0), np.repeat(exp, 200, 0), _pack(w))
        assert m["flips"] == 200
        assert (m["flips_within_tie_margin"] == 200) is forgiven, (spread, m["flip_boundary_distances"][:1])


def test_fooled_by_a_component_orthogonal_to_the_labels():
    """The export = reference + a large component orthogonal to every label text: top-1 agreement stays 100 %, but
    the embedding that the runtime scores against new labels is wrong."""
    pack = _pack(np.eye(10, 64)[:, :] + 0.05)
    rng = np.random.default_rng(1)
    ref = _unit(pack.embeddings[rng.integers(0, 10, 200)] + 0.05 * rng.standard_normal((200, 64)))
    basis = np.linalg.svd(pack.embeddings.astype(np.float64))[2][10:]  # rows orthogonal to all 10 labels
    exp = _unit(ref + 3.0 * rng.standard_normal((200, len(basis))) @ basis)
    m = compare(ref, exp, pack)
    assert m["top1_agreement"] == 1.0 and m["cosine_mean"] < 0.5
    for labels in (pack, None):
        passed, reasons, _ = _judge(ref, exp, labels)
        assert not passed and any("mean embedding cosine" in r for r in reasons), reasons


def test_fooled_by_one_catastrophic_image_among_perfect_ones():
    """499 perfect images and one at cosine 0.5 average to 0.999, the fp16 floor: the worst image fails it."""
    pack = _pack(np.eye(4, D) + 0.1)
    ref, _ = _images(pack, 500, ties=0, decisive_flips=0)
    exp = ref.copy()
    orth = _unit(np.random.default_rng(2).standard_normal(D) - ref[7] * (ref[7] @ np.random.default_rng(2)
                                                                          .standard_normal(D)))
    exp[7] = _unit(0.5 * ref[7] + np.sqrt(0.75) * orth)
    m = compare(ref, exp, pack)
    assert m["cosine_mean"] == pytest.approx(0.999, abs=2e-4) and m["cosine_min"] == pytest.approx(0.5, abs=0.01)
    passed, reasons, _ = _judge(ref, exp, pack, precision="fp16")
    assert not passed and reasons == [r for r in reasons if "worst image's embedding cosine 0.5" in r]
    assert "image 7 of the gate set" in reasons[0]


def test_fooled_by_a_one_image_gate():
    pack = _pack(np.eye(4, D) + 0.1)
    ref, _ = _images(pack, 1, ties=0, decisive_flips=0)
    passed, reasons, _ = _judge(ref, ref, pack, precision="fp32")
    assert not passed and "the gate ran on 1 image(s), fewer than 200" in reasons[0] and "--small-gate-ok" in reasons[0]
    assert _judge(ref, ref, pack, precision="fp32", small_gate_ok=True)[0]


def test_flips_outside_the_scaled_margin_fail():
    pack = _pack(np.eye(4, D) + 0.1)
    ref, exp = _images(pack, 250, ties=0, decisive_flips=6)  # 97.6 % agreement, every flip decisive
    passed, reasons, _ = _judge(ref, exp, pack, min_worst_cosine=0.0, min_p1_cosine=0.0, min_mean_cosine=0.0)
    assert not passed and "top-1 agreement 97.60%" in reasons[0] and "6 flip(s) farther than 0.005" in reasons[0]
    ref, exp = _images(pack, 250, ties=6, decisive_flips=0)  # the same count of flips, all at the boundary
    assert _judge(ref, exp, pack)[0]
    strict = _judge(ref, exp, pack, tie_margin=0.0)
    assert not strict[0] and "strict 97.60%" in strict[1][0]


def test_accuracy_drop_is_gated_on_labelled_images():
    pack = _pack(np.eye(4, D) + 0.1)
    ref, exp = _images(pack, 200, ties=0, decisive_flips=4)
    labels = np.zeros(200, np.int64)  # all c0: the flips cost 2 points of accuracy
    m = compare(ref, exp, pack, labels)
    assert m["accuracy_reference"] == 100.0 and m["accuracy_drop"] == 2.0
    loose = dict(min_agreement=0.9, min_worst_cosine=0.0, min_p1_cosine=0.0, min_mean_cosine=0.0)
    passed, reasons, _ = judge(m, GateCriteria.default("int8", **loose))
    assert not passed and "accuracy drop 2.00 > 1.0" in reasons[0]
    assert judge(m, GateCriteria.default("int8", max_drop=2.0, **loose))[0]


def test_fp32_gate_uses_the_whole_cosine_distribution():
    pack = _pack(np.eye(4, D) + 0.1)
    ref, _ = _images(pack, 200, ties=0, decisive_flips=0)
    noisy = _unit(ref + 0.02 * np.random.default_rng(1).standard_normal(ref.shape))
    assert _judge(ref, ref, pack, precision="fp32")[0]
    passed, reasons, _ = _judge(ref, noisy, pack, precision="fp32")
    assert not passed and "mean embedding cosine" in reasons[0] and any("1st-percentile" in r for r in reasons)


def test_wilson_interval():
    assert wilson_interval(196, 200) == pytest.approx((0.9497, 0.9922), abs=1e-3)
    lo, hi = wilson_interval(200, 200)
    assert hi == 1.0 and 0.98 < lo < 0.985
    assert wilson_interval(0, 0) == (0.0, 1.0)
