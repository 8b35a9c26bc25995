"""edgekd bench --e2e against the teacher: teacher e2e jobs are planned, and e2e rows get the end-to-end ratio."""

from __future__ import annotations

from edgekd.bench.models import ModelSpec
from edgekd.bench.report import add_speedups, markdown
from edgekd.bench.runner import BenchConfig, plan


def _row(model, backend, p50, teacher=False, precision="fp32", mode="model", **kw):
    return {"model": model, "backend": backend, "precision": precision, "batch": 1, "threads": 2, "status": "ok",
            "reason": None, "teacher": teacher, "mode": mode,
            "latency_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.1, "n": 10},
            "throughput_ips": 1000 / p50, "peak_rss_mb": 100.0, "peak_gpu_mb": None, "load_s": 0.5,
            "model_mb": 10.0, **kw}


def test_e2e_plans_the_teacher_in_every_backend_and_students_on_engines():
    teacher = ModelSpec(name="teacher:T", kind="teacher", source="T", teacher={"name": "T", "random_init": True})
    student = ModelSpec(name="s", kind="timm", source="s")
    cfg = BenchConfig(threads=(2,), batches=(1,), e2e=True, teacher_precisions=("fp32",), backends=("torch",))
    jobs = [j for j in plan([teacher, student], cfg) if j.mode == "e2e" and not j.skip]
    assert {(j.model.name, j.backend) for j in jobs} == {("teacher:T", "torch")}  # a torch student is no runtime


def test_e2e_ratio_against_the_fastest_teacher_e2e_next_to_the_model_only_ratio():
    rows = [_row("teacher:T", "torch", 40.0, teacher=True), _row("teacher:T", "openvino", 10.0, teacher=True,
                                                                  precision="bf16"),
            _row("teacher:T", "torch", 45.0, teacher=True, mode="e2e"),
            _row("teacher:T", "openvino", 14.0, teacher=True, precision="bf16", mode="e2e"),
            _row("s", "onnxruntime", 1.0, precision="int8"),
            _row("s", "onnxruntime", 1.4, precision="int8", mode="e2e",
                 stages_ms={"decode": 0.2, "preprocess": 0.2, "infer": 1.0, "score": 0.0})]
    add_speedups(rows)
    s_model, s_e2e = rows[4], rows[5]
    assert s_model["speedup_vs_best_teacher"] == 10.0 and s_model["best_teacher"] == "openvino bf16"
    assert s_e2e["speedup_vs_best_teacher"] == 10.0 and s_e2e["best_teacher"] == "openvino bf16"  # 14 / 1.4
    md = markdown({"schema": "edgekd.bench", "version": 1, "environment": {}, "config": {}, "rows": rows})
    assert "fastest teacher e2e row (openvino bf16" in md


def test_frame_ratio_leaves_out_the_decode_of_teacher_and_student():
    """A camera hands over decoded frames: the frame ratio divides the teacher's frame cost (without decode) by the
    student's, so a shared JPEG decode does not squash it."""
    rows = [_row("teacher:T", "openvino", 14.0, teacher=True, precision="bf16", mode="e2e",
                 stages_ms={"decode": 4.0, "preprocess": 1.0, "infer": 8.9, "score": 0.1, "frame": 10.0}),
            _row("teacher:T", "torch", 30.0, teacher=True, mode="e2e",
                 stages_ms={"decode": 4.0, "preprocess": 1.0, "infer": 24.9, "score": 0.1, "frame": 26.0}),
            _row("s", "onnxruntime", 5.0, precision="int8", mode="e2e",
                 stages_ms={"decode": 4.0, "preprocess": 0.2, "infer": 0.7, "score": 0.1, "frame": 1.0})]
    add_speedups(rows)
    s = rows[2]
    assert s["speedup_vs_best_teacher"] == 14.0 / 5.0  # JPEG in: the decode is in both
    assert s["speedup_vs_best_teacher_frame"] == 10.0 and s["best_teacher_frame"] == "openvino bf16"
    md = markdown({"schema": "edgekd.bench", "version": 1, "environment": {}, "config": {}, "rows": rows})
    assert "| 2.8x | 10.0x |" in md and "leaves out the JPEG decode" in md


def test_frame_cost_is_divided_by_the_fastest_model_of_the_same_student():
    """Issue 30: a bundle whose in-graph preprocessing slows its own model must not look cheap: the frame ratio
    divides by the fastest model-only row of the same student (any bundle, backend, precision)."""
    common = {"arch": "mnv4", "img_size": [224, 224]}
    rows = [_row("s-pixels", "onnxruntime", 1.4, precision="int8", **common),
            _row("s-frames", "onnxruntime", 2.3, precision="int8", **common),
            _row("other", "onnxruntime", 0.5, precision="int8", arch="tiny", img_size=[224, 224]),
            _row("s-frames", "onnxruntime", 3.0, precision="int8", mode="e2e",
                 stages_ms={"decode": 0.3, "preprocess": 0.2, "infer": 2.3, "score": 0.1, "frame": 2.8}, **common)]
    add_speedups(rows)
    e2e = rows[3]
    assert e2e["frame_vs_fastest_model"] == 2.8 / 1.4  # not 2.8 / 2.3 (its own model), not 2.8 / 0.5 (another one)
    assert e2e["fastest_model"] == "s-pixels onnxruntime int8"
    md = markdown({"schema": "edgekd.bench", "version": 1, "environment": {}, "config": {}, "rows": rows})
    assert "| 2.0x |" in md and "whichever bundle" in md
