"""benchmarks/cifar10_summary.py: assembles results.md/json from the stages' JSON outputs (synthetic work dir)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def _summary_module():
    return load_benchmark("cifar10_summary")


def _row(model, backend, batch, p50, teacher=False, status="ok"):
    return {"model": model, "teacher": teacher, "backend": backend, "precision": "fp32", "batch": batch, "threads": 2,
            "status": status, "reason": None if status == "ok" else "needs an engine", "mode": "model",
            "latency_ms": {"p50": p50, "p90": p50} if status == "ok" else None,
            "throughput_ips": 1000 / p50 if p50 else None, "model_mb": 1.0}


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    w = tmp_path / "work"
    (w / "data").mkdir(parents=True)
    (w / "data" / "subsets.json").write_text(json.dumps(
        {"classes": ["a", "b"], "unseen": ["b"], "counts": {"train": {"a": 4}, "test": {"a": 2, "b": 2}}}))
    (w / "timings.jsonl").write_text(
        '{"stage": "cache-train", "status": "ok", "rc": 0, "seconds": 12.5, "time": 1}\n'
        '{"stage": "cache-train", "status": "skipped", "seconds": 0, "time": 2}\n'
        '{"stage": "bench", "status": "failed", "rc": 1, "seconds": 3.0, "time": 3}\n')
    (w / "eval").mkdir()
    (w / "eval" / "run.json").write_text(json.dumps({
        "data": {"evaluated": 4}, "fidelity": {"mean_cosine": 0.8765, "retrieval_at_1": 0.5, "top1_agreement": 0.75},
        "zero_shot": {"student": {"all": {"top1": 0.25, "mean_per_class_top1": 0.25}},
                      "teacher": {"all": {"top1": 0.5, "mean_per_class_top1": 0.5}}}}))
    b = w / "bundles" / "onnx-int8"
    b.mkdir(parents=True)
    (b / "model.onnx").write_bytes(b"\0" * 2048)
    (b / "edgekd.json").write_text(json.dumps({
        "target": "onnx", "precision": "int8", "files": {"model": "model.onnx", "labels": None},
        "parity": {"passed": False, "skipped": False, "reasons": ["top-1 agreement 90.00% < 98.00%"],
                   "metrics": {"cosine_mean": 0.97, "cosine_min": 0.9, "top1_agreement": 0.9, "accuracy_drop": 2.0}},
        "calibration": {"images": 8, "method": "minmax"}}))
    (w / "bench").mkdir()
    (w / "bench" / "results.json").write_text(json.dumps({"environment": {"cpu": "x86", "threads_used": 2}, "rows": [
        _row("teacher:ViT-B-32", "openvino", 1, 60.0, teacher=True), _row("teacher:ViT-B-32", "torch", 1, 120.0,
                                                                          teacher=True),
        _row("onnx-int8", "openvino", 1, 2.0), _row("onnx-int8", "tensorrt", 1, 0, status="skipped")]}))
    (w / "classify.jsonl").write_text(json.dumps(
        {"image": "/x/demo/a/0001.jpg", "predictions": [{"label": "a", "score": 0.3, "prob": 0.6}]}) + "\n")
    return w


def test_summary_tables(work: Path, tmp_path: Path) -> None:
    mod = _summary_module()
    out = tmp_path / "out"
    assert mod.main(["--work", str(work), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    s = json.loads((out / "results.json").read_text())
    # speed-up = teacher p50 on the same backend / model p50, vs the fastest teacher (openvino), and vs teacher torch
    row = next(r for r in s["bench"]["rows"] if r["model"] == "onnx-int8" and r["status"] == "ok")
    assert row["speedup_same_backend"] == pytest.approx(30.0) and row["speedup_vs_teacher_torch"] == pytest.approx(60.0)
    assert row["speedup_vs_best_teacher"] == pytest.approx(30.0) and row["best_teacher"] == "openvino fp32"
    assert "| onnx-int8 | openvino | fp32 | 1 | 1.0 | 2.00 | 500.0 | 30.0x | 30.0x | 60.0x |" in md
    assert "**FAILED**" in md and "top-1 agreement 90.00%" in md  # a failed gate is shown, with its reason
    assert "0.8765" in md and "| 75.0 |" in md  # fidelity from eval --out
    assert s["timings"]["cache-train"] == {"seconds": 12.5, "status": "ok", "rc": 0, "skipped_later": True}
    assert "skipped on the last run" in md and "| bench | 3.0 | failed |" in md
    assert "| a/0001.jpg | a | a (0.300) |" in md and "| 2.00 | 8 imgs" in md
    assert "tensorrt x1: needs an engine" in md
    assert "| student bundle onnx-int8 | openvino |" not in md  # onnx bundles are summarised on onnxruntime


def test_summary_missing_work_dir(tmp_path: Path, capsys) -> None:
    assert _summary_module().main(["--work", str(tmp_path / "nope")]) == 2
    assert "run benchmarks/cifar10_pipeline.sh first" in capsys.readouterr().err
