"""End to end through `edgekd export` (the export-core pipeline + CLI): OpenVINO bundles pass the parity gate;
TensorRT without tensorrt prepares the device bundle and exits 4."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from edgekd.cli import EXIT_NEEDS_DEVICE, cli

IMG = 32


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    student = create_student("test_efficientnet", embed_dim=16, img_size=IMG)
    student.train()
    with torch.no_grad():  # BN running statistics from image-like inputs instead of the (0, 1) defaults
        for _ in range(3):
            student(torch.randn(8, 3, 1, 1) * 0.5 + torch.randn(8, 3, IMG, IMG) * 0.3)
    path = tmp_path_factory.mktemp("run")
    save_student(path, student.eval())
    return path


@pytest.mark.openvino
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_cli_openvino_bundle(run_dir, image_folder, tmp_path, precision):
    pytest.importorskip("openvino")
    out = tmp_path / f"ov-{precision}"
    res = CliRunner().invoke(cli, ["export", str(run_dir), "--target", "openvino", "--precision", precision,
                                   "--calib", str(image_folder), "--out", str(out), "--small-gate-ok"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "edgekd.json").read_text())
    assert m["target"] == "openvino" and m["backend"] == "openvino" and m["precision"] == precision
    assert m["files"]["model"] == "model.xml" and m["files"]["weights"] == "model.bin"
    assert set(m["sha256"]) >= {"model.xml", "model.bin"}
    assert m["parity"]["passed"] is True
    assert not (out / "model.onnx").exists()  # the intermediate ONNX is not part of an OpenVINO bundle
    if precision == "int8":
        q = m["target_metadata"]["openvino"]["quantization"]
        assert q["fake_quantize_nodes"] > 0
        assert q["overflow_fix"] == "enable" and "--gate-isa all" in q["overflow_fix_because"]  # for any x86 CPU
    from edgekd.export.parity import gate_isa_levels

    levels = [lvl for lvl in gate_isa_levels("openvino") if lvl]
    assert m["parity"]["validated_on"]["onednn_isa_levels"] == levels
    if len(levels) > 1:  # the verdict holds for the kernels of every ISA level this CPU has
        assert set(m["parity"]["per_isa"]) == set(levels) and all(v["passed"] for v in m["parity"]["per_isa"].values())


@pytest.mark.openvino
def test_cli_openvino_precision_auto_says_why_it_fell_back(run_dir, image_folder, tmp_path, monkeypatch, caplog):
    """--precision auto tries INT8 with the overflow fix before it keeps fp32, and says why in one line."""
    pytest.importorskip("openvino")
    import edgekd.export.parity as parity

    real = parity.GateCriteria.default
    monkeypatch.setattr(parity.GateCriteria, "default", classmethod(  # an INT8 gate nothing can pass
        lambda cls, precision, max_drop=None, **kw: real(precision, max_drop, **kw, min_mean_cosine=1.01)
        if precision == "int8" else real(precision, max_drop, **kw)))
    out = tmp_path / "ov-auto"
    with caplog.at_level("WARNING", logger="edgekd.export.auto"):
        res = CliRunner().invoke(cli, ["export", str(run_dir), "--target", "openvino", "--precision", "auto",
                                       "--calib", str(image_folder), "--out", str(out), "--small-gate-ok",
                                       "--threads", "1", "--no-auto-mixed"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "edgekd.json").read_text())
    auto = m["precision_auto"]
    assert m["precision"] == auto["chosen"] == "fp32" and auto["candidates"]["int8"]["tried"] == ["overflow_fix=enable"]
    lines = [r.getMessage() for r in caplog.records if "fell back" in r.getMessage() or "kept fp32" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0] == f"--precision auto: {auto['fell_back_because']}"
    assert "int8 failed its parity gate with overflow_fix=enable: " in lines[0] and "< 1.01" in lines[0]


def test_precision_auto_fallback_line_names_what_int8_tried(tmp_path):
    from edgekd.export.auto import fallback_reason, int8_tries

    (tmp_path / "edgekd.json").write_text(json.dumps({"backend": "openvino", "target_metadata": {
        "openvino": {"quantization": {"overflow_fix": "enable"}}}}))
    tried = int8_tries(tmp_path, {"int8_attempts": [{"auto_mixed": False}]}, {})
    assert tried == ["overflow_fix=enable", "--auto-mixed"]
    int8 = {"passed": False, "reasons": ["[AVX2] mean embedding cosine 0.99402 < 0.995"], "tried": tried}
    assert fallback_reason({"fp32": {"passed": True}, "int8": int8}, "fp32") == (
        "int8 failed its parity gate with overflow_fix=enable and --auto-mixed: [AVX2] mean embedding cosine 0.99402 "
        "< 0.995; kept fp32")
    assert fallback_reason({"fp32": {"passed": True}, "int8": {"passed": True}}, "fp32") is None  # fp32 was faster
    assert fallback_reason({"fp32": {"passed": True}}, "fp32") is None  # int8 not tried (no --calib)


def test_cli_tensorrt_without_tensorrt_exits_4(run_dir, image_folder, tmp_path, monkeypatch):
    import edgekd._optional as optional

    real = optional.is_available
    monkeypatch.setattr("edgekd.export.tensorrt.is_available", lambda m: False if m == "tensorrt" else real(m))
    out = tmp_path / "trt"
    res = CliRunner().invoke(cli, ["export", str(run_dir), "--target", "tensorrt", "--precision", "int8",
                                   "--calib", str(image_folder), "--out", str(out), "--max-batch", "4",
                                   "--small-gate-ok"])
    assert res.exit_code == EXIT_NEEDS_DEVICE == 4, res.output
    assert "trtexec --onnx=model.qdq.onnx" in res.output and "--from-onnx" in res.output
    m = json.loads((out / "edgekd.json").read_text())
    assert m["target_metadata"]["tensorrt"]["engine"] == "pending" and "model" not in m["files"]
    assert m["parity"]["skipped"] and m["input"]["shape"] == ["batch", 3, *m["preprocess"]["size"]]
    # the Q/DQ ONNX the engine will be built from passed the gate here, on onnxruntime
    assert m["parity"]["onnx_gate"]["passed"] and "model.qdq.fp16.onnx" in m["parity"]["onnx_gate"]["where"]
    gates = m["target_metadata"]["tensorrt"]["onnx_gates"]  # 10.x/11.x's fp16 Q/DQ graph and 8.6's fp32 one
    assert set(gates) == {"model.qdq.fp16.onnx", "model.qdq.onnx"} and all(g["passed"] for g in gates.values())
    assert m["source_run"]["weights_sha256"] and "onnx" in m["versions"] and m["precision"] == "int8"
    for name in ("model.onnx", "model.qdq.onnx", "model.qdq.fp16.onnx", "val.npy", "val_reference.npy",
                 "tensorrt_build.json"):
        assert (out / name).is_file(), name
    assert not (out / "calib.npy").exists()  # the legacy calibrator's input only with --trt-calibrator
    # on a machine without TensorRT, --from-onnx says what is missing (exit 4 again)
    res = CliRunner().invoke(cli, ["export", str(out), "--target", "tensorrt", "--precision", "int8",
                                   "--from-onnx"])
    assert res.exit_code == 4 and "tensorrt is not installed" in res.output


def test_cli_tensorrt_onnx_that_fails_the_gate_exits_3(run_dir, image_folder, tmp_path, monkeypatch):
    """A broken fp16 conversion is caught before any engine exists: exit 3, parity.json says where."""
    import edgekd._optional as optional
    import edgekd.export.onnx as onnx_export

    real_available, real_convert = optional.is_available, onnx_export.convert_fp16

    def broken_convert(src, dst):
        import onnx
        from onnx import numpy_helper

        meta = real_convert(src, dst)
        model = onnx.load(str(dst))
        weight = [i for i in model.graph.initializer if len(i.dims) == 2][-1]  # the projection head
        weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
        onnx.save(model, str(dst))
        return meta

    monkeypatch.setattr("edgekd.export.tensorrt.is_available",
                        lambda m: False if m == "tensorrt" else real_available(m))
    monkeypatch.setattr(onnx_export, "convert_fp16", broken_convert)
    out = tmp_path / "trt16"
    res = CliRunner().invoke(cli, ["export", str(run_dir), "--target", "tensorrt", "--precision", "fp16",
                                   "--val", str(image_folder), "--out", str(out), "--small-gate-ok"])
    assert res.exit_code == 3, res.output
    assert "model.fp16.onnx failed the parity gate" in res.output or "parity gate failed" in res.output
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] is False and report["where"].startswith("model.fp16.onnx on onnxruntime")
    assert json.loads((out / "edgekd.json").read_text())["parity"]["passed"] is False
    assert not (out / "model.engine").exists()
