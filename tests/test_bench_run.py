"""End-to-end tests of `edgekd bench`: real subprocess measurements of tiny models, skipped/failed rows, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd import EdgekdError
from edgekd.bench.models import resolve_model
from edgekd.bench.runner import BenchConfig, plan, run_worker
from edgekd.cli import cli

FAST = ["--warmup-s", "0.05", "--min-time-s", "0.2", "--min-iters", "3", "--no-power"]


def tiny_onnx(path: Path, batch: int | str = "batch", size: int = 16, dim: int = 8) -> Path:
    """pixels [B,3,S,S] -> GlobalAveragePool -> MatMul [3,D] -> L2 normalise -> embedding [B,D]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, dim)).astype(np.float32), "w")
    nodes = [helper.make_node("GlobalAveragePool", ["pixels"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["proj"]),
             helper.make_node("LpNormalization", ["proj"], ["embedding"], axis=-1, p=2)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT,
                                                                            [batch, 3, size, size])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


def test_help():
    res = invoke("--help")
    assert res.exit_code == 0 and "--compare" in res.output and "--e2e" in res.output


def test_quick_onnx_bench_skips_missing_backends_and_writes_everything(tmp_path, monkeypatch):
    import edgekd.runtime.backends as backends

    real = backends.is_available
    monkeypatch.setattr(backends, "is_available", lambda m: False if m == "openvino" else real(m))  # pretend missing
    model = tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    res = invoke(str(model), "--backend", "onnxruntime,openvino,tensorrt", "--batch", "1,4", "--threads", "1",
                 "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "edgekd.bench" and doc["version"] == 1
    rows = {(r["backend"], r["batch"]): r for r in doc["rows"]}
    for b in (1, 4):
        r = rows[("onnxruntime", b)]
        assert r["status"] == "ok", r["reason"]
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["n"] >= 3
        assert r["throughput_ips"] > 0 and r["peak_rss_mb"] > 10 and r["load_s"] >= 0
        assert r["model_mb"] == pytest.approx(model.stat().st_size / 2**20) and r["threads"] == 1
        assert r["pid"] and r["precision"] == "fp32" and r["img_size"] == [16, 16]
    assert rows[("openvino", None)]["status"] == "skipped"
    assert "openvino is not installed" in rows[("openvino", None)]["reason"]
    assert rows[("tensorrt", None)]["status"] == "skipped" and "TensorRT engine" in rows[("tensorrt", None)]["reason"]
    assert len({r["pid"] for r in doc["rows"] if r["status"] == "ok"}) == 2  # one subprocess per measurement
    assert doc["environment"]["cpu"]["cores_usable"] >= 1
    assert doc["config"]["omp_wait_policy"] in ("PASSIVE", "ACTIVE") and doc["config"]["batches"] == [1, 4]
    for name in ("results.md", "latency.png", "throughput.png"):
        assert (out / name).is_file()
    assert "skipped" in (out / "results.md").read_text()
    # --compare against itself: ratio 1.00x
    cmp = invoke("--compare", str(out / "results.json"), str(out / "results.json"))
    assert cmp.exit_code == 0 and "1.00x" in cmp.output


def test_failing_backend_is_reported_with_its_message(tmp_path):
    model = tiny_onnx(tmp_path / "static.onnx", batch=1)  # static batch 1: batch 2 makes onnxruntime raise
    out = tmp_path / "out"
    res = invoke(str(model), "--backend", "onnxruntime", "--batch", "1,2", "--threads", "1", "--out", str(out),
                 "--no-plots", *FAST)
    assert res.exit_code == 0
    assert "1 measurement(s) failed" in res.output
    rows = {r["batch"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows[1]["status"] == "ok"
    assert rows[2]["status"] == "failed" and "dimension" in rows[2]["reason"].lower()
    assert "failed" in (out / "results.md").read_text()


def test_worker_crash_and_missing_file_become_failed_rows(tmp_path):
    [spec] = resolve_model(str(tiny_onnx(tmp_path / "m.onnx")))
    (tmp_path / "m.onnx").unlink()
    res = run_worker({"task": "measure", "model": spec.to_dict(), "backend": "onnxruntime", "batch": 1,
                      "threads": 1, "warmup_s": 0, "min_time_s": 0, "min_iters": 1}, 1, timeout_s=60)
    assert res["status"] == "failed" and "model file not found" in res["reason"]
    res = run_worker({"task": "measure", "model": {"bad": 1}}, None, timeout_s=60)  # not a model spec
    assert res["status"] == "failed" and "TypeError" in res["reason"]


def test_e2e_row_next_to_model_only(tmp_path):
    model = tiny_onnx(tmp_path / "tiny.onnx", size=32)
    out = tmp_path / "out"
    res = invoke(str(model), "--backend", "onnxruntime", "--batch", "1", "--threads", "1", "--e2e", "--out", str(out),
                 "--no-plots", *FAST)
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    e2e = [r for r in rows if r["mode"] == "e2e"]
    assert len(e2e) == 1 and e2e[0]["status"] == "ok", e2e
    st = e2e[0]["stages_ms"]
    assert set(st) == {"decode", "preprocess", "infer", "score", "frame"} and all(v > 0 for v in st.values())
    assert e2e[0]["latency_ms"]["p50"] >= st["decode"]  # the whole path includes the JPEG decode
    assert st["frame"] >= st["infer"] and st["frame"] < e2e[0]["latency_ms"]["p50"]  # the frame path does not
    assert "End-to-end" in (out / "results.md").read_text()


def test_torch_eager_timm_student(tmp_path):
    out = tmp_path / "out"
    res = invoke("test_vit", "--img-size", "32", "--embed-dim", "16", "--backend", "torch", "--batch", "2",
                 "--threads", "1", "--out", str(out), "--no-plots", *FAST)
    assert res.exit_code == 0, res.output
    [row] = json.loads((out / "results.json").read_text())["rows"]
    assert row["status"] == "ok", row["reason"]
    assert row["backend"] == "torch" and row["batch"] == 2 and row["params_m"] > 0 and row["model_mb"] > 0
    assert row["latency_ms"]["n"] >= 3 and row["import_s"] > 0


@pytest.mark.slow
def test_teacher_in_every_precision_and_timm_student(tmp_path, image_folder):
    """The teacher's image tower in each precision its backends offer here (INT8 through edgekd's own export path),
    a bare timm student, and speed-ups against the fp32 teacher and the fastest teacher."""
    out = tmp_path / "out"
    res = invoke("test_vit", "--teacher", "edgekd-test-tiny", "--random-teacher", "--img-size", "32",
                 "--embed-dim", "16", "--backend", "onnxruntime", "--batch", "2", "--threads", "1",
                 "--teacher-precisions", "fp32,fp16,int8", "--calib", str(image_folder), "--out", str(out),
                 "--no-plots", *FAST)
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    teacher = {(r["backend"], r["precision"]): r for r in rows if r["teacher"]}
    assert set(teacher) == {("onnxruntime", p) for p in ("fp32", "fp16", "int8")}
    ok = {k for k, r in teacher.items() if r["status"] == "ok"}
    assert ok == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}, {k: r["reason"] for k, r in teacher.items()}
    assert "has no fp16 CPU kernels" in teacher[("onnxruntime", "fp16")]["reason"]
    student = next(r for r in rows if r["model"] == "test_vit" and r["backend"] == "onnxruntime")
    assert student["status"] == "ok" and Path(student["file"]).suffix == ".onnx" and student["model_mb"] > 0
    assert 0 < student["speedup_vs_best_teacher"] <= student["speedup_vs_teacher"]  # best <= fp32, same backend
    backend, precision = student["best_teacher"].split()
    best = teacher[(backend, precision)]["latency_ms"]["p50"]
    assert best == min(r["latency_ms"]["p50"] for r in teacher.values() if r["status"] == "ok")
    assert "vs best teacher" in (out / "results.md").read_text()


def test_openvino_teacher_precisions_follow_the_cpu_plugin(monkeypatch):
    import edgekd.bench.teacher_precisions as tp

    monkeypatch.setattr(tp, "openvino_capabilities", lambda: ("FP32", "BF16", "INT8"))
    monkeypatch.setattr(tp, "_native_bf16", lambda: True)
    assert tp.precision_reason("openvino", "bf16", None) is None
    assert "offers FP32, BF16, INT8 here, not FP16" in tp.precision_reason("openvino", "fp16", None)
    assert "needs calibration images: pass --calib DIR" in tp.precision_reason("openvino", "int8", None)
    assert tp.precision_reason("openvino", "int8", "calib/") is None
    monkeypatch.setattr(tp, "_native_bf16", lambda: False)
    assert "no native bf16" in tp.precision_reason("openvino", "bf16", None)
    assert "no native bf16" in tp.precision_reason("torch", "bf16", None, device="cpu")
    assert "no fast path" in tp.precision_reason("torch", "fp16", None, device="cpu")
    monkeypatch.setattr(tp, "_cuda", lambda device: True)  # a CUDA device: torch fp16 is timed there
    assert tp.precision_reason("torch", "fp16", None, device="cuda") is None


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorflow"], "'tensorflow' is not a backend"),
    (["--batch", "0"], "--batch 0: batch sizes must be >= 1"),
    (["--threads", "4096"], "--threads 4096: this machine has only"),
    (["--threads", "0"], "thread counts must be >= 1"),
])
def test_bad_options(tmp_path, args, message):
    model = tiny_onnx(tmp_path / "m.onnx")
    res = invoke(str(model), *args, "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and message in res.output and res.output.startswith("Error:")


def test_batch_list_must_be_integers(tmp_path):
    res = invoke("x", "--batch", "1,a")
    assert res.exit_code == 2 and "comma-separated integers" in res.output


@pytest.mark.parametrize("name, content, message", [
    ("garbage.onnx", b"this is not protobuf \xff\xfe", "not an ONNX model"),
    ("empty.onnx", b"", "empty file"),
    ("notes.txt", b"hello", "not a model"),
    ("model.xml", b"<html></html>", "not an OpenVINO IR"),
])
def test_model_file_that_is_not_a_model(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    res = invoke(str(tmp_path / name), "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and message in res.output


def test_unknown_model_name_and_nothing_to_bench(tmp_path):
    res = invoke("definitely_not_a_model_xyz", "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "not a file, directory or timm model name" in res.output
    res = invoke("--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "nothing to bench" in res.output


def test_bundle_resolution_and_default_backends(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    tiny_onnx(bundle / "model.onnx", size=24)
    meta = {"format": "edgekd.bundle", "version": 1, "target": "onnx", "precision": "int8",
            "files": {"model": "model.onnx", "labels": None},
            "input": {"name": "pixels", "shape": ["batch", 3, 24, 24], "dtype": "float32", "layout": "NCHW"},
            "embed_dim": 8, "eval": {"fidelity": 0.97}}
    (bundle / "edgekd.json").write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="parity gate did not pass .*--allow-ungated"):  # no verdict: refused
        resolve_model(str(bundle))
    meta["parity"] = {"passed": True, "skipped": False, "metrics": {"images": 300, "cosine_mean": 0.9999,
                                                                     "cosine_min": 0.999}}
    (bundle / "edgekd.json").write_text(json.dumps(meta))
    [spec] = resolve_model(str(bundle))
    assert spec.kind == "bundle" and spec.precision == "int8" and spec.img_size == (24, 24)
    assert spec.extra["parity"].startswith("passed on 300 images")
    assert spec.eval == {"fidelity": 0.97}
    assert resolve_model(str(bundle / "model.onnx"))[0].kind == "bundle"
    jobs = plan([spec], BenchConfig(threads=(1,), batches=(1,)))
    assert {j.backend for j in jobs} == set(spec.backends())  # every format-allowed backend: run or skipped
    from edgekd.runtime.backends import backend_unavailable_reason

    by_backend = {j.backend: j for j in jobs}
    assert by_backend["onnxruntime"].skip is None and by_backend["onnxruntime"].batch == 1
    assert by_backend["ort-cuda"].skip == backend_unavailable_reason("ort-cuda")  # None only where CUDA EP exists
    (bundle / "edgekd.json").write_text(json.dumps({**meta, "format": "something"}))
    with pytest.raises(Exception, match="not an edgekd export bundle"):
        resolve_model(str(bundle))


@pytest.mark.openvino
def test_openvino_ir_file(tmp_path):
    ov = pytest.importorskip("openvino")
    ov.save_model(ov.convert_model(str(tiny_onnx(tmp_path / "m.onnx", size=20))), str(tmp_path / "m.xml"))
    [spec] = resolve_model(str(tmp_path / "m.xml"))
    assert spec.kind == "file" and spec.img_size == (20, 20) and spec.backends() == ("openvino",)
    out = tmp_path / "out"
    res = invoke(str(tmp_path / "m.xml"), "--batch", "2", "--threads", "1", "--out", str(out), "--no-plots", *FAST)
    assert res.exit_code == 0, res.output
    [row] = json.loads((out / "results.json").read_text())["rows"]
    assert row["backend"] == "openvino" and row["status"] == "ok", row["reason"]
    assert row["model_mb"] > (tmp_path / "m.xml").stat().st_size / 2**20  # .xml + .bin


def test_run_directory_resolution(tmp_path):
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    save_student(tmp_path / "run", create_student("test_vit", 16, img_size=32))
    [spec] = resolve_model(str(tmp_path / "run"))
    assert spec.kind == "run" and spec.img_size == (32, 32) and spec.embed_dim == 16 and spec.is_torch
    assert spec.backends()[0] == "torch" and spec.extra["arch"] == "test_vit"
    assert resolve_model(str(tmp_path / "run" / "model.safetensors"))[0].kind == "run"
    (tmp_path / "run" / "model.safetensors").unlink()
    with pytest.raises(Exception, match="no model.safetensors"):
        resolve_model(str(tmp_path / "run"))


def test_bundle_that_resizes_in_graph_is_fed_camera_frames(tmp_path):
    from test_runtime_support import make_bundle

    bundle = make_bundle(tmp_path / "full", in_graph="full")
    [spec] = resolve_model(str(bundle))
    assert spec.frame_size == (480, 640) and spec.input_shape(2) == (2, 480, 640, 3) and spec.img_size == (32, 32)
    assert "openvino" not in spec.backends() and "onnxruntime only" in spec.format_reason("openvino")
    out = tmp_path / "out"
    res = invoke(str(bundle), "--backend", "onnxruntime", "--batch", "1", "--threads", "1", "--e2e", "--out",
                 str(out), "--no-plots", *FAST)
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[0]["frame_size"] == [480, 640]
    assert "fed 640x480 frames" in (out / "results.md").read_text()
