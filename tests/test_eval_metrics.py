"""Metrics on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.evaluation import metrics as M
from edgekd.evaluation.fewshot import few_shot_scores, fit_logistic_probe, probe_logits


def _clusters(n_per: int = 10, classes: int = 4, dim: int = 16, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = M.l2_normalize(rng.normal(size=(classes, dim)))
    labels = np.repeat(np.arange(classes), n_per)
    emb = centers[labels] + noise * rng.normal(size=(len(labels), dim))
    return M.l2_normalize(emb), labels, centers


def test_topk_and_mean_per_class():
    logits = np.array([[3, 2, 1], [1, 3, 2], [1, 2, 3], [3, 2, 1]], float)
    labels = np.array([0, 2, 1, 0])
    assert M.topk_accuracy(logits, labels, 1) == 0.5
    assert M.topk_accuracy(logits, labels, 2) == 1.0
    assert M.topk_accuracy(logits, labels, 10) == 1.0  # k clipped to C
    pred = logits.argmax(1)  # [0, 1, 2, 0]: class 0 -> 1.0, class 1 -> 0, class 2 -> 0
    assert M.per_class_accuracy(pred, labels) == {0: 1.0, 1: 0.0, 2: 0.0}
    assert M.mean_per_class_accuracy(pred, labels) == pytest.approx(1 / 3)
    assert np.isnan(M.topk_accuracy(np.zeros((0, 3)), np.zeros(0, int)))


def test_zero_shot_perfect_and_subset():
    emb, labels, centers = _clusters()
    s = M.zero_shot_scores(emb, labels, centers)
    assert s["top1"] == 1.0 and s["mean_per_class_top1"] == 1.0 and s["images"] == 40 and s["classes"] == 4
    # classes {1, 3} only: images of other classes are dropped, texts restricted
    s = M.zero_shot_scores(emb, labels, centers, [1, 3])
    assert s["images"] == 20 and s["classes"] == 2 and s["top1"] == 1.0
    # texts swapped between classes 0 and 1 -> those classes are always wrong
    swapped = centers[[1, 0, 2, 3]]
    s = M.zero_shot_scores(emb, labels, swapped)
    assert s["top1"] == 0.5 and s["mean_per_class_top1"] == 0.5
    # among {0, 1} only, swapped texts give 0; unlabeled (-1) images are ignored
    labels2 = labels.copy()
    labels2[:5] = -1
    assert M.zero_shot_scores(emb, labels2, swapped, [0, 1])["top1"] == 0.0
    assert M.zero_shot_scores(emb, labels2, swapped, [0, 1])["images"] == 15


def test_mean_per_class_differs_from_top1_under_imbalance():
    labels = np.array([0] * 9 + [1])
    pred = np.zeros(10, int)
    assert M.topk_accuracy(np.eye(2)[pred], labels) == 0.9
    assert M.mean_per_class_accuracy(pred, labels) == 0.5


def test_fidelity_perfect_and_permuted():
    emb, labels, centers = _clusters(noise=0.3)
    f = M.fidelity_scores(emb, emb * 3.0, centers)  # scale does not matter: cosine
    assert f["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert f["retrieval_at_1"] == 1.0 and f["top1_agreement"] == 1.0
    # student rows are a cyclic shift of the teacher's: every query retrieves its neighbour, not itself
    perm = np.roll(np.arange(len(emb)), 1)
    f = M.fidelity_scores(emb[perm], emb)
    assert f["retrieval_at_1"] == 0.0 and "top1_agreement" not in f
    # swapping two rows breaks exactly two queries
    perm = np.arange(len(emb))
    perm[[0, 1]] = perm[[1, 0]]
    assert M.retrieval_at_k(emb[perm], emb, (1,))[1] == pytest.approx(1 - 2 / len(emb))
    # orthogonal embeddings -> cosine 0
    assert M.mean_cosine(np.eye(4)[:2], np.eye(4)[2:]) == 0.0


def test_retrieval_chunked(monkeypatch):
    emb, _, _ = _clusters(noise=0.3)
    perm = np.arange(len(emb))
    perm[[3, 7]] = perm[[7, 3]]
    expected = M.retrieval_at_k(emb[perm], emb, (1, 5))
    monkeypatch.setattr(M, "CHUNK", 7)
    assert M.retrieval_at_k(emb[perm], emb, (1, 5)) == expected


def test_ties_count_against_the_query():
    same = np.ones((3, 4))
    assert M.retrieval_at_k(same, same, (1, 3)) == {1: 0.0, 3: 1.0}


def test_long_tail_buckets():
    assert [M.long_tail_bucket(n) for n in (101, 100, 20, 19, 0)] == ["many", "medium", "medium", "few", "few"]
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 0, 0, 0])
    lt = M.long_tail_scores(pred, labels, np.array([500, 50, 5]))
    assert lt["many"]["top1"] == 1.0 and lt["medium"]["top1"] == 0.5 and lt["few"]["top1"] == 0.0
    assert lt["few"]["images"] == 2 and lt["many"]["classes"] == 1
    assert set(M.long_tail_scores(pred[:2], labels[:2], np.array([500, 50, 5]))) == {"many"}


def test_select_shots_deterministic_nested():
    labels = np.repeat(np.arange(3), [10, 4, 1])
    keys = [f"img{i:02d}" for i in range(len(labels))]
    m1, m5 = M.select_shots(labels, 1, 0, keys), M.select_shots(labels, 5, 0, keys)
    assert np.array_equal(m1, M.select_shots(labels, 1, 0, keys))
    assert np.all(m5[m1])  # 1-shot support is inside 5-shot support
    assert np.bincount(labels[m5], minlength=3).tolist() == [5, 3, 1]  # n-1 for small classes, >=1
    # the order of listing does not change which images are chosen
    rev = np.arange(len(labels))[::-1]
    m5_rev = M.select_shots(labels[rev], 5, 0, [keys[i] for i in rev])
    assert np.array_equal(m5_rev, m5[rev])
    assert not np.array_equal(M.select_shots(labels, 5, 1, keys), m5)  # another seed, another draw


def test_ncm_tip_adapter_and_probe():
    emb, labels, centers = _clusters(noise=0.2, n_per=12)
    support = M.select_shots(labels, 3)
    q, ql = emb[~support], labels[~support]
    assert M.topk_accuracy(M.ncm_logits(q, emb[support], labels[support], 4), ql) == 1.0
    w, b = fit_logistic_probe(emb[support], labels[support], 4)
    assert M.topk_accuracy(probe_logits(q, w, b), ql) == 1.0
    # useless texts (all identical): Tip-Adapter's cache alone must still classify the clusters
    flat = np.ones_like(centers)
    assert M.topk_accuracy(M.cosine_logits(q, flat), ql) == 0.25
    assert M.topk_accuracy(M.tip_adapter_logits(q, flat, emb[support], labels[support]), ql) == 1.0
    # alpha = 0 is exactly zero-shot
    assert np.allclose(M.tip_adapter_logits(q, centers, emb[support], labels[support], alpha=0.0),
                       M.cosine_logits(q, centers))


def test_tip_adapter_formula():
    q = np.array([[1.0, 0.0]])
    texts = np.array([[1.0, 0.0], [0.0, 1.0]])
    sup = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    out = M.tip_adapter_logits(q, texts, sup, np.array([0, 1, 1]), beta=2.0, alpha=0.5)
    assert np.allclose(out, [[1.0 + 0.5 * 1.0, 0.0 + 0.5 * 2 * np.exp(-2.0)]])


def test_probe_ignores_absent_classes():
    emb, labels, _ = _clusters(classes=3)
    keep = labels != 2
    w, b = fit_logistic_probe(emb[keep], labels[keep], 3)
    assert (probe_logits(emb, w, b).argmax(1) != 2).all()


def test_few_shot_scores_structure():
    emb, labels, centers = _clusters(noise=0.05, n_per=8)
    out = few_shot_scores(emb, labels, centers, shots=(1, 5, 16), keys=[str(i) for i in range(len(labels))])
    assert set(out) == {"1", "5", "16"}
    assert out["1"]["support"] == 4 and out["1"]["queries"] == 28
    assert out["16"]["min_shots"] == 7  # 8 images per class: 7 support + 1 query
    for row in out.values():
        for m in ("ncm", "probe", "tip_adapter", "zero_shot"):
            assert row[m]["top1"] == 1.0
    assert "tip_adapter" not in few_shot_scores(emb, labels, None, shots=(1,))["1"]


def test_centred_cosine_is_not_fooled_by_a_constant_student():
    rng = np.random.default_rng(0)
    common = rng.normal(size=(1, 32)) * 3.0  # a large shared component, as in a random ViT's embeddings
    teacher = common + rng.normal(size=(200, 32))
    constant = np.repeat(M.l2_normalize(teacher).mean(0, keepdims=True), len(teacher), axis=0)
    assert M.mean_cosine(constant, teacher) > 0.9  # plain cosine rewards outputting the mean
    assert abs(M.centred_cosine(constant, teacher)) < 0.05
    assert M.centred_cosine(teacher * 2.0, teacher) == pytest.approx(1.0, abs=1e-6)
    f = M.fidelity_scores(teacher, teacher)
    assert f["centred_cosine"] == pytest.approx(1.0, abs=1e-6)
