"""LabelSet.predict()'s fast path (issue 30: top-k selection, softmax only for the returned classes) against the
straightforward definition (benchmarks/scoring.py's reference_predict: full softmax + stable argsort of all C)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

from edgekd.labelpack import LabelPack
from edgekd.runtime import labels as labels_mod
from edgekd.runtime.labels import ARGMAX_TOP_K, ARGSORT_BELOW, SMALL_BATCH, LabelSet, top_k_indices

D = 32


@pytest.fixture(scope="module")
def reference():
    """The straightforward predict (full softmax, stable argsort of all C) on the same cosines as LabelSet's."""
    ref = load_benchmark("scoring").reference_predict
    return lambda ls, q, k: ref(ls, q, k, scores=LabelSet.scores)


def test_reference_is_the_old_code_up_to_cosine_rounding():
    """The benchmark's `old` (einsum cosines) answers like predict(): probs within 1e-4 relative (logit_scale 100
    turns a 1e-7 difference of cosines into 1e-5 of probabilities)."""
    bench = load_benchmark("scoring")
    ls = random_set(1000)
    q = queries(3)
    bench.check_same(bench.reference_predict(ls, q, 5), ls.predict(q, 5))


def random_set(c: int, seed: int = 0, d: int = D) -> LabelSet:
    emb = np.random.default_rng(seed).normal(size=(c, d)).astype(np.float32)
    return LabelSet.from_pack(LabelPack([f"class {i}" for i in range(c)], emb, meta={"logit_scale": 100.0}))


def queries(b: int, seed: int = 1, d: int = D) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(b, d)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def assert_same(got: list, want: list, prob_rtol: float = 0.0) -> None:
    """Same answers, in order: labels and indices exactly, score and prob to 1e-6 (prob also to `prob_rtol`)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [(p.label, p.index) for p in g] == [(p.label, p.index) for p in w]
        np.testing.assert_allclose([p.score for p in g], [p.score for p in w], rtol=0, atol=1e-6)
        np.testing.assert_allclose([p.prob for p in g], [p.prob for p in w], rtol=prob_rtol, atol=1e-6)
        assert all(type(p.score) is float and type(p.prob) is float and type(p.index) is int for p in g)


@pytest.mark.parametrize("c", [1, 2, 5, 300, 1000, 10000])
def test_predict_matches_reference(c, reference):
    ls = random_set(c, seed=c)
    for k in sorted({1, 2, 5, ARGMAX_TOP_K, ARGMAX_TOP_K + 1, 40, c - 1, c, c + 3} - {0}):
        for b in (1, 3):
            q = queries(b, seed=k + b)
            got = ls.predict(q, top_k=k)
            assert all(len(r) == min(k, c) for r in got)
            assert_same(got, reference(ls, q, k))


def test_batches_small_and_blas(reference):
    """Rows scored one at a time (<= SMALL_BATCH) and by BLAS (more) give the same answers as the reference."""
    ls = random_set(1000)
    for b in (SMALL_BATCH, SMALL_BATCH + 1, 40):
        q = queries(b, seed=b)
        assert_same(ls.predict(q, top_k=5), reference(ls, q, 5))
    q = queries(SMALL_BATCH + 1)
    small = [p for i in range(len(q)) for p in ls.predict(q[i:i + 1], top_k=5)]
    # a row's answer does not depend on its batch, up to BLAS's rounding of the cosines (x logit_scale in probs)
    assert_same(ls.predict(q, top_k=5), small, prob_rtol=1e-4)


def tied_set(c: int) -> tuple[LabelSet, np.ndarray, list[int]]:
    """c classes whose embeddings are 3 directions repeated, except a few scattered ones along a 4th, and a query
    whose cosines with them are exact: the 4th direction's classes tie for first, all the others tie after them.
    -> (label set, query [1, D], the stable order of all c classes)."""
    dirs = np.eye(4, D, dtype=np.float32)
    which = np.arange(c) % 3
    best = sorted({i for i in (7, 300, c - 1) if i < c})
    which[best] = 3
    q = np.zeros((1, D), np.float32)
    q[0, :4] = [0.5, 0.5, 0.5, 0.5 + 2.0 ** -8]  # power-of-two components: products and sums are exact
    ls = LabelSet.from_pack(LabelPack([f"c{i}" for i in range(c)], dirs[which], meta={"logit_scale": 100.0}))
    return ls, q, best + [i for i in range(c) if i not in best]


@pytest.mark.parametrize("c", [5, ARGSORT_BELOW + 1, 1000, 10000])
def test_ties_in_class_order(c, reference):
    ls, q, order = tied_set(c)
    cos, prob = ls.scores(q)
    assert len(np.unique(cos)) == 2  # the ties are real
    for k in (1, 2, 3, 4, 5, ARGMAX_TOP_K, ARGMAX_TOP_K + 1, 50, c):
        got = ls.predict(q, top_k=k)[0]
        assert [p.index for p in got] == order[:k]
        np.testing.assert_allclose([p.prob for p in got], prob[0, order[:k]], rtol=1e-6, atol=1e-9)
        assert_same([got], reference(ls, q, k))


def test_top_k_indices_is_stable_argsort_everywhere():
    """Random rows with duplicate values, NaN and +-inf, every k: the same as a stable argsort of -cos."""
    rng = np.random.default_rng(0)
    for c in (1, 3, ARGSORT_BELOW - 1, ARGSORT_BELOW, 700, 5000):
        for trial in range(6):
            cos = rng.integers(-20, 20, c).astype(np.float32) / 20 if trial % 2 else \
                rng.normal(size=c).astype(np.float32)
            if trial >= 2:
                pos = rng.choice(c, size=min(c, 3), replace=False)
                cos[pos] = [np.nan, -np.inf, np.inf][: len(pos)] if trial < 4 else np.nan
            for k in sorted({1, 2, 5, ARGMAX_TOP_K, ARGMAX_TOP_K + 1, 60, c - 1, c} - {0}):
                before = cos.copy()
                np.testing.assert_array_equal(top_k_indices(cos, k), np.argsort(-cos, kind="stable")[:k],
                                              err_msg=f"c={c} trial={trial} k={k}")
                np.testing.assert_array_equal(cos, before)  # the row is not modified


def test_nan_embedding_answers_like_reference(reference):
    ls = random_set(1000)
    q = np.full((1, D), np.nan, np.float32)
    got, want = ls.predict(q, 3)[0], reference(ls, q, 3)[0]
    assert [p.index for p in got] == [p.index for p in want] == [0, 1, 2]
    assert all(np.isnan(p.score) and np.isnan(p.prob) for p in got)


@pytest.mark.parametrize("b", [1, 8, SMALL_BATCH + 4])
@pytest.mark.parametrize("on", ["score", "prob"])
def test_thresholds_and_unknown_label(b, on, reference):
    ls = random_set(1000, seed=3)
    q = queries(b, seed=4)
    best = [r[0] for r in ls.predict(q, 1)]
    metric = [p.score if on == "score" else p.prob for p in best]
    per_class = {best[0].label: metric[0] + 1e-4}  # row 0: unknown through its class's own threshold
    default = float(np.median(metric))  # about half the rows unknown
    th = ls.with_thresholds(default, per_class, on=on, unknown_label="?")
    for k in (1, 2, 5, 20):
        got = th.predict(q, k)
        assert_same(got, reference(th, q, k))
        assert got[0][0].label == "?" and got[0][0].is_unknown
        unknown = [r[0].is_unknown for r in got]
        if b > 1:
            assert any(unknown) and not all(unknown)
        for r, row in enumerate(got):
            assert len(row) == min(k, 1000)
            if row[0].is_unknown:  # the best class's score/prob, then the k - 1 best
                assert row[0].score == best[r].score and row[0].prob == best[r].prob
                assert [p.index for p in row[1:]] == [p.index for p in ls.predict(q[r:r + 1], k)[0][: k - 1]]
    # a metric equal to its threshold is not below it
    one = ls.predict(q[:1], 1)[0][0]
    at = ls.with_thresholds(per_class={one.label: one.score if on == "score" else one.prob}, on=on)
    assert at.predict(q[:1], 2)[0][0] == one


def test_probs_are_the_softmax_over_all_classes():
    """prob = softmax(logit_scale * cos) over the whole set (float64 here), the same as scores(), summing to 1."""
    ls = random_set(2000, seed=5)
    q = queries(2, seed=6)
    cos, prob = ls.scores(q)
    ref_cos = q.astype(np.float64) @ ls.pack.embeddings.T.astype(np.float64)
    np.testing.assert_allclose(cos, ref_cos, atol=1e-6)
    z = 100.0 * ref_cos
    ref_prob = np.exp(z - z.max(1, keepdims=True))
    ref_prob /= ref_prob.sum(1, keepdims=True)
    np.testing.assert_allclose(prob, ref_prob, atol=1e-6)
    for r, row in enumerate(ls.predict(q, 2000)):
        idx = [p.index for p in row]
        np.testing.assert_allclose([p.prob for p in row], prob[r, idx], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose([p.score for p in row], cos[r, idx], rtol=0, atol=0)
        assert sum(p.prob for p in row) == pytest.approx(1.0, abs=1e-5)


def test_cosines_without_vecdot(monkeypatch):
    """numpy < 2 has no np.vecdot: the matmul fallback gives the same cosines."""
    ls = random_set(500)
    q = queries(3)
    with_vecdot = ls.scores(q)[0]
    monkeypatch.setattr(labels_mod, "_vecdot", None)
    np.testing.assert_allclose(ls.scores(q)[0], with_vecdot, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3", None])
def test_top_k_validated(bad):
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        random_set(10).predict(queries(1), top_k=bad)


def test_top_k_numpy_integer_and_bad_shape():
    ls = random_set(10)
    assert len(ls.predict(queries(1), top_k=np.int64(3))[0]) == 3
    with pytest.raises(ValueError, match=r"expected embeddings \[B, D\]"):
        ls.predict(queries(1)[0])
