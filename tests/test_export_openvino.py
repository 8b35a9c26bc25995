"""OpenVINO target: fp32/fp16/INT8 IR from a tiny CNN student's ONNX, parity against the torch student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd import EdgekdError

pytest.importorskip("openvino")
pytestmark = pytest.mark.openvino

IMG = 32
DIM = 16


def _inputs(n: int, seed: int) -> np.ndarray:
    """Smooth image-like normalised inputs [n, 3, IMG, IMG] (blurred noise + a per-image colour cast)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 3, IMG // 4, IMG // 4)).astype(np.float32)
    x = np.repeat(np.repeat(x, 4, axis=2), 4, axis=3) + rng.normal(0, 0.6, (n, 3, 1, 1)).astype(np.float32)
    return np.ascontiguousarray(x + rng.normal(0, 0.1, x.shape).astype(np.float32))


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    """A tiny CNN student (timm test_efficientnet, BN statistics set by a few forward passes) and its fp32 ONNX."""
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    student = create_student("test_efficientnet", embed_dim=DIM, img_size=IMG)
    student.train()
    with torch.no_grad():  # realistic BN running statistics instead of the (0, 1) defaults
        for i in range(4):
            student(torch.from_numpy(_inputs(16, 100 + i)))
    student.eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(student, (torch.zeros(1, 3, IMG, IMG),), str(path), input_names=["pixels"],
                      output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return student, path


def _request(student_onnx, out_dir, precision, **options):
    from edgekd.export.targets import ExportRequest

    student, onnx_path = student_onnx
    out_dir.mkdir(parents=True, exist_ok=True)
    return ExportRequest(student=student, preprocess=student.cfg.get_preprocess(), out_dir=out_dir,
                         precision=precision, onnx_path=onnx_path, calib=_inputs(24, 1), val=_inputs(8, 2),
                         options=options)


def _cosines(student, xml_path, x):
    from edgekd.runtime.backends import create_backend

    out = create_backend(xml_path, backend="openvino", threads=1).run(x)["embedding"]
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy()
    return (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)


@pytest.fixture(scope="module")
def fp32_bundle(student_onnx, tmp_path_factory):
    from edgekd.export.targets import get_target

    out = tmp_path_factory.mktemp("ov_fp32")
    result = get_target("openvino").build(_request(student_onnx, out, "fp32"))
    return out, result


def test_fp32_ir_parity(student_onnx, fp32_bundle):
    out, result = fp32_bundle
    assert result.backend == "openvino"
    assert result.files == {"model": "model.xml", "weights": "model.bin"}
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert result.metadata["openvino"]["compress_to_fp16"] is False
    cos = _cosines(student_onnx[0], out / "model.xml", _inputs(6, 3))
    assert cos.min() >= 0.9999, cos


def test_fp16_ir_is_half_size_and_close(student_onnx, fp32_bundle, tmp_path):
    from edgekd.export.targets import get_target

    result = get_target("openvino").build(_request(student_onnx, tmp_path, "fp16"))
    assert result.metadata["openvino"]["compress_to_fp16"] is True
    fp32_size = (fp32_bundle[0] / "model.bin").stat().st_size
    assert (tmp_path / "model.bin").stat().st_size < 0.6 * fp32_size
    cos = _cosines(student_onnx[0], tmp_path / "model.xml", _inputs(6, 3))
    assert cos.mean() >= 0.999, cos


def test_int8_ptq_smaller_and_agrees(student_onnx, fp32_bundle, tmp_path):
    from edgekd.export.targets import get_target

    result = get_target("openvino").build(_request(student_onnx, tmp_path, "int8"))
    q = result.metadata["openvino"]["quantization"]
    assert q["mode"] == "ptq" and q["fake_quantize_nodes"] > 0 and q["calibration_images"] == 24
    assert q["model_type"] == "cnn"
    fp32_size = (fp32_bundle[0] / "model.bin").stat().st_size
    assert (tmp_path / "model.bin").stat().st_size < 0.5 * fp32_size
    cos = _cosines(student_onnx[0], tmp_path / "model.xml", _inputs(8, 4))
    assert cos.mean() >= 0.98, cos


def test_mixed_preset_is_requantised_when_it_would_crash_amx(student_onnx, tmp_path):
    """At 32 px the student's last stages are 2x2 and 1x1: "mixed" would put them on OpenVINO's legacy AMX kernel,
    which segfaults on AMX CPUs. Decided from the graph, so the protection holds whatever CPU exports."""
    import openvino as ov

    from edgekd.export.openvino import legacy_amx_convolutions
    from edgekd.export.targets import get_target

    result = get_target("openvino").build(_request(student_onnx, tmp_path, "int8", preset="mixed"))
    q = result.metadata["openvino"]["quantization"]
    assert q["preset_requested"] == "mixed" and q["preset"] == "performance"
    assert "legacy AMX kernel" in q["preset_changed_because"]
    assert legacy_amx_convolutions(ov.Core().read_model(str(tmp_path / "model.xml"))) == []
    default = get_target("openvino").build(_request(student_onnx, tmp_path / "default", "int8"))
    assert default.metadata["openvino"]["quantization"]["preset"] == "performance"
    assert "preset_requested" not in default.metadata["openvino"]["quantization"]


def test_keep_fp16_ignored_scope(student_onnx, tmp_path):
    import openvino as ov

    from edgekd.export.targets import get_target

    ops = ov.convert_model(str(student_onnx[1])).get_ordered_ops()
    convs = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"]
    keep = convs[0]  # the stem convolution
    result = get_target("openvino").build(_request(student_onnx, tmp_path, "int8", keep_fp16=[keep]))
    assert result.metadata["openvino"]["quantization"]["keep_fp16"] == [keep]
    qmodel = ov.Core().read_model(str(tmp_path / "model.xml"))
    by_name = {op.get_friendly_name(): op for op in qmodel.get_ordered_ops()}
    producers = {v.get_node().get_type_name() for v in by_name[keep].input_values()}
    assert "FakeQuantize" not in producers, producers  # kept in float
    quantised = [n for n in convs[1:] if n in by_name and "FakeQuantize" in
                 {v.get_node().get_type_name() for v in by_name[n].input_values()}]
    assert quantised, "the other convolutions should still be quantised"


def test_keep_fp16_unknown_node_is_refused(student_onnx, tmp_path):
    from edgekd.export.targets import get_target

    with pytest.raises(EdgekdError, match="--keep-fp16 'no/such/Conv': no such node"):
        get_target("openvino").build(_request(student_onnx, tmp_path, "int8", keep_fp16=["no/such/Conv"]))
    with pytest.raises(EdgekdError, match="matches no node"):
        get_target("openvino").build(_request(student_onnx, tmp_path, "int8", keep_fp16=["^nothing.*"]))


def test_int8_needs_calibration(student_onnx, tmp_path):
    from edgekd.export.targets import get_target

    req = _request(student_onnx, tmp_path, "int8")
    req.calib = None
    with pytest.raises(EdgekdError, match="--calib"):
        get_target("openvino").build(req)
    req = _request(student_onnx, tmp_path, "int8", preset="fastest")
    with pytest.raises(EdgekdError, match="--preset"):
        get_target("openvino").build(req)


def test_int8_accuracy_control(student_onnx, tmp_path):
    from edgekd.export.openvino import worst_gate_isa
    from edgekd.export.targets import get_target
    from edgekd.labelpack import LabelPack

    rng = np.random.default_rng(5)
    emb = rng.normal(size=(4, DIM)).astype(np.float32)
    pack = LabelPack(class_names=["a", "b", "c", "d"], embeddings=emb / np.linalg.norm(emb, axis=1, keepdims=True))
    req = _request(student_onnx, tmp_path, "int8", max_drop=1.0, subset_size=16)
    req.label_pack = pack
    req.val = None  # accuracy control tunes on the calibration images; the gate's held-out images stay unseen
    result = get_target("openvino").build(req)
    q = result.metadata["openvino"]["quantization"]
    assert q["mode"] == "accuracy_control" and q["metric"] == "zero_shot_top1_agreement"
    assert q["metric_int8"] >= 1.0 - 0.01 - 1e-6  # NNCF restored layers until within 1 point
    # NNCF judged its candidates under the gate's lowest ISA level, where INT8 numerics are worst
    assert q["judged_under_isa"] == (worst_gate_isa("all") or "host")
    assert q["overflow_fix"] == "enable"


def test_model_type_auto_detects_attention(student_onnx):
    from edgekd.export.openvino import resolve_model_type
    from edgekd.export.targets import ExportRequest
    from edgekd.students.model import create_student

    def req(student):
        return ExportRequest(student=student, preprocess=student.cfg.get_preprocess(), out_dir=".", precision="int8",
                             onnx_path=student_onnx[1])

    assert resolve_model_type(req(create_student("test_vit", DIM, IMG)), None) == "transformer"
    assert resolve_model_type(req(student_onnx[0]), None) == "cnn"
    assert resolve_model_type(req(student_onnx[0]), "transformer") == "transformer"
    with pytest.raises(EdgekdError, match="--model-type"):
        resolve_model_type(req(student_onnx[0]), "rnn")


def test_string_options_parse_as_flags():
    from edgekd.export.openvino import _flag

    assert _flag("false") is False and _flag("0") is False and _flag("off") is False
    assert _flag("true") is True and _flag(True) is True and _flag(False) is False


def test_accuracy_control_worker_failure_is_one_clear_error(tmp_path):
    from edgekd.export.openvino import run_accuracy_control

    settings = {"preset": "mixed", "model_type": "cnn", "subset_size": 2, "fast_bias_correction": True,
                "keep_fp16": None}
    with pytest.raises(EdgekdError, match="accuracy control .* failed in its child process"):
        run_accuracy_control(str(tmp_path / "missing.onnx"), np.zeros((2, 3, 8, 8), np.float32), None, 0.0, 1.0,
                             settings, tmp_path / "model.xml")
