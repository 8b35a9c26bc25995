"""--auto-mixed on OpenVINO judges candidates by the parity gate's own criteria (edgekd.export.parity.gate_margin)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export.parity import GateCriteria, compare, gate_margin, judge


def _metrics(cos: np.ndarray, agreement: float | None = None) -> dict:
    m = {"cosine_mean": float(cos.mean()), "cosine_p01": float(np.percentile(cos, 1)), "cosine_min": float(cos.min())}
    if agreement is not None:
        m["top1_agreement"] = agreement
    return m


def test_margin_is_one_for_identical_outputs_and_signs_pass_fail():
    crit = GateCriteria.default("int8", small_gate_ok=True)
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 16))
    assert gate_margin(compare(ref, ref), crit) == pytest.approx(1.0)
    for cos_floor_gap, agreement in [(0.001, 0.99), (-0.001, 0.99), (0.001, 0.97), (0.0005, 0.985)]:
        cos = np.full(50, crit.min_mean_cosine + cos_floor_gap)
        m = _metrics(cos, agreement)
        passed = m["cosine_mean"] >= crit.min_mean_cosine and agreement >= crit.min_agreement
        assert (gate_margin(m, crit) >= 0) == passed
    # each criterion counts in its own allowance: a mean cosine at half its allowance gives 0.5
    half = crit.min_mean_cosine + (1 - crit.min_mean_cosine) / 2
    assert gate_margin(_metrics(np.full(10, half), 1.0), crit) == pytest.approx(0.5)
    assert gate_margin({"cosine_mean": float("nan"), "cosine_p01": 1.0, "cosine_min": 1.0}, crit) == float("-inf")


def test_margin_agrees_with_judge_on_random_metrics():
    crit = GateCriteria.default("int8", small_gate_ok=True)
    rng = np.random.default_rng(1)
    for _ in range(200):
        cos = 1 - rng.exponential(rng.choice([1e-4, 3e-3, 2e-2]), size=40)
        m = _metrics(np.clip(cos, -1, 1), float(rng.uniform(0.95, 1.0)))
        m.update(images=40, top1_agreement_ci95=[0.0, 1.0], top1_agreement_strict=m["top1_agreement"], flips=0,
                 flips_within_tie_margin=0)
        assert (gate_margin(m, crit) >= 0) == judge(m, crit)[0]


def test_gate_margin_validation_fn_scores_models(tmp_path):
    """_GateMargin on an OpenVINO model: 1 for the fp32 model itself, lower for a perturbed one, ranked values."""
    ov = pytest.importorskip("openvino")
    from edgekd.export.openvino import build_validation_fn

    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 12)).astype(np.float32)

    def model(weights):
        from openvino import opset13 as ops

        x = ops.parameter([1, 12], np.float32, name="pixels")
        return ov.Model([ops.matmul(x, ops.constant(weights), False, True)], [x])

    val = rng.normal(size=(20, 1, 12)).astype(np.float32)
    labels = rng.normal(size=(5, 8)).astype(np.float32)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    crit = GateCriteria.default("int8", small_gate_ok=True)
    fn, name = build_validation_fn(model(w), val.reshape(20, 12), labels, crit.tie_margin, vars(crit))
    assert name == "gate_margin" and fn.evaluate(model(w)) == pytest.approx(1.0, abs=1e-5)
    worse = fn.evaluate(model(w + rng.normal(scale=0.3, size=w.shape).astype(np.float32)))
    assert worse < 0.5
    compiled = ov.Core().compile_model(model(w), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # as NNCF compiles
    metric, values = fn(compiled, enumerate(val))
    assert metric == pytest.approx(1.0, abs=1e-5) and len(values) == 20 and min(values) > 0.9999
