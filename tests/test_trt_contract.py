"""The TensorRT contract (edgekd.export.trt_contract): the graphs edgekd used to hand TensorRT are refused as the
real parser refuses them (INT32-bias DequantizeLinear, asymmetric uint8 Q/DQ, a Cast typed against its `to`), by
the check and by the fake parsers; every preset student's fp16 and INT8 TensorRT graphs pass it, onnx's full
check and onnxruntime, with the layers outside INT8 in fp16 for strongly typed builds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fake_tensorrt import make_fake_trt
from onnx import TensorProto, helper, numpy_helper

from edgekd import EdgekdError
from edgekd.export.onnx_check import InvalidOnnxError, validate_onnx
from edgekd.export.trt_contract import TensorrtContractError, check_for_tensorrt, heavy_op_precisions, tensorrt_refusals

IMG = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CNN student, its fp32 ONNX (opset 17) and calibration inputs."""
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    student = create_student("test_efficientnet", embed_dim=16, img_size=IMG).eval()
    d = tmp_path_factory.mktemp("contract")
    path = d / "model.onnx"
    torch.onnx.export(student, (torch.zeros(1, 3, IMG, IMG),), str(path), input_names=["pixels"],
                      output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    calib = np.random.default_rng(0).normal(size=(16, 3, IMG, IMG)).astype(np.float32)
    return d, path, calib


def _quantize(tiny, name: str, **profile) -> Path:
    import onnxruntime.quantization as q

    from edgekd.export.onnx_int8 import float_boundary_nodes, quantize

    d, path, calib = tiny
    pre = d / "pre.onnx"
    if not pre.exists():
        q.quant_pre_process(str(path), str(pre))
    out = d / f"{name}.onnx"
    quantize(pre, out, calib, "pixels", d / f"{name}.json", "minmax", float_boundary_nodes(onnx.load(str(pre))),
             **profile)
    return out


# the TensorRT profile as edgekd shipped it before the contract check: onnxruntime's QuantizeBias left on
OLD_TENSORRT_PROFILE = {"quant_format": "qdq", "per_channel": True, "activation": "int8", "reduce_range": False,
                        "op_types": ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add"),
                        "qdq_extra": {"WeightSymmetric": True, "AddQDQPairToWeight": True}}


@pytest.mark.parametrize("family", ["8.6", "10.x", "11.x"])
def test_int32_bias_dequantize_is_refused_as_the_parser_refuses_it(tiny, family):
    model = onnx.load(str(_quantize(tiny, "old_trt", **OLD_TENSORRT_PROFILE)))
    refusals = tensorrt_refusals(model, family)
    assert any("dequantizes INT32" in r.reason for r in refusals)
    bias_dq = [n.name for n in model.graph.node if n.op_type == "DequantizeLinear"
               and any(t.name == n.input[0] and t.data_type == TensorProto.INT32 for t in model.graph.initializer)]
    assert bias_dq and {r.node for r in refusals if "INT32" in r.reason} >= set(bias_dq)


def test_asymmetric_uint8_qdq_is_refused(tiny):
    model = onnx.load(str(_quantize(tiny, "ort_default")))  # onnxruntime's CPU defaults: uint8 activations
    reasons = " | ".join(r.reason for r in tensorrt_refusals(model, "10.x"))
    assert "UINT8 zero point" in reasons and "dequantizes UINT8" in reasons


def test_the_shipped_tensorrt_profile_passes_and_quantizes_only_weighted_inputs(tiny):
    from edgekd.export.onnx_int8 import TENSORRT_QDQ

    path = _quantize(tiny, "trt", **TENSORRT_QDQ)
    model = onnx.load(str(path))
    for family in ("8.6", "10.x"):
        assert tensorrt_refusals(model, family) == []
    assert _placement(model)[0] > 0
    validate_onnx(path)


def _placement(model: onnx.ModelProto) -> tuple[int, int]:
    """Assert NVIDIA's Q/DQ placement: each DequantizeLinear exists for a weighted op's input or the skip input of an
    Add whose other input a weighted op makes, never for an activation alone (a tensor quantized for a Conv may also
    reach other readers, e.g. a Shape). Returns (DequantizeLinear nodes, residual Add inputs)."""
    weighted = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    residual = 0
    for node in dqs:
        readers = consumers[node.output[0]]
        adds = [c for c in readers if c.op_type == "Add"]
        for add in adds:
            other = next(i for i in add.input if i != node.output[0])
            assert producer[other].op_type in weighted, add.name  # the branch TensorRT fuses into the Add
        residual += len(adds)
        assert adds or any(c.op_type in weighted for c in readers), (node.name, [c.op_type for c in readers])
    return len(dqs), residual


def _cast_model() -> onnx.ModelProto:
    """x -> MatMul -> Cast(to=FLOAT) -> Add -> MatMul -> y: a Cast inside the part the fp16 converter converts."""
    w = numpy_helper.from_array(np.full((4, 4), 0.5, np.float32), "w")
    b = numpy_helper.from_array(np.ones((1, 4), np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
             helper.make_node("Cast", ["m"], ["c"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["c", "b"], ["a"], name="add"),
             helper.make_node("MatMul", ["a", "w"], ["y"], name="matmul_out")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, b])
    # with value_info, as torch's exporter writes it: the converter retypes the Cast's declared output
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_cast_typed_against_its_to_is_refused_and_the_fp16_converter_no_longer_makes_one(monkeypatch, tmp_path):
    import edgekd.export.onnx as onnx_export

    monkeypatch.setattr(onnx_export, "retarget_casts", lambda model: 0)  # the converter as it is upstream
    broken, _ = onnx_export.to_fp16(_cast_model())
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    assert [str(r) for r in tensorrt_refusals(broken, "10.x")] == [
        "node 'cast' (Cast): casts to FLOAT but its output is typed FLOAT16"]
    with pytest.raises(InvalidOnnxError, match="broken.onnx: fails onnx's checks"):
        validate_onnx(tmp_path / "broken.onnx")
    monkeypatch.undo()
    fixed = tmp_path / "fixed.onnx"
    onnx_export.convert_fp16(_write(_cast_model(), tmp_path / "src.onnx"), fixed)
    assert tensorrt_refusals(onnx.load(str(fixed)), "10.x") == []


def _write(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_ops_opsets_and_domains_outside_the_table_are_refused(tmp_path):
    model = _cast_model()
    model.graph.node.append(helper.make_node("Mish", ["y"], ["z"], name="mish"))
    del model.graph.value_info[:]  # 10.x has Mish, 8.6 does not
    model.graph.output[0].name = "z"
    assert [r.node for r in tensorrt_refusals(model, "8.6")] == ["mish"]
    assert tensorrt_refusals(model, "10.x") == []
    model.graph.node[-1].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert "plugin" in tensorrt_refusals(model, "10.x")[0].reason
    model.opset_import[0].version = 19
    with pytest.raises(TensorrtContractError, match=r"c.onnx: TensorRT 8.6's ONNX parser would refuse node '<model>' "
                                                    r"\(opset\): opset 19; TensorRT 8.6 imports opsets 1-17"):
        check_for_tensorrt(_write(model, tmp_path / "c.onnx"), ("8.6",))


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.4.0"])
def test_the_fake_parsers_refuse_what_the_real_one_refuses(tiny, tmp_path, monkeypatch, version):
    from edgekd.export.tensorrt import TrtBuildSettings, build_engine

    trt = make_fake_trt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    old = _quantize(tiny, "old_trt", **OLD_TENSORRT_PROFILE)
    role = "onnx_qdq" if version.startswith("8") else "onnx_qdq_fp16"
    with pytest.raises(EdgekdError, match=r"TensorRT's ONNX parser failed: node .*dequantizes INT32"):
        build_engine({role: old}, tmp_path / "model.engine", TrtBuildSettings("int8", "pixels", (3, IMG, IMG)))


# --- every preset student, as `export --target tensorrt` writes it without TensorRT ----------------------------------

PRESET_IMG = 32  # the smallest every preset takes: the graphs (ops, types, Q/DQ) do not depend on it


@pytest.fixture(scope="module")
def preset_bundles(tmp_path_factory):
    """Export each preset (random init, 32 px) with the tensorrt target, fp16 and int8, as a host without TensorRT
    does (the target raises EnginePendingError after writing the ONNX files)."""
    from edgekd.export.targets import ExportRequest, get_target
    from edgekd.export.tensorrt import EnginePendingError
    from edgekd.students.model import create_student
    from edgekd.students.registry import PRESETS

    rng = np.random.default_rng(0)
    calib = rng.normal(size=(8, 3, PRESET_IMG, PRESET_IMG)).astype(np.float32)
    made = {}
    for name in PRESETS:
        torch.manual_seed(0)
        student = create_student(name, embed_dim=32, img_size=PRESET_IMG).eval()
        src = tmp_path_factory.mktemp(name) / "model.onnx"
        torch.onnx.export(student, (torch.zeros(1, 3, PRESET_IMG, PRESET_IMG),), str(src), input_names=["pixels"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}})
        for precision in ("fp16", "int8"):
            out = src.parent / precision
            out.mkdir()
            (out / "model.onnx").write_bytes(src.read_bytes())
            req = ExportRequest(student=student, preprocess=student.cfg.get_preprocess(), out_dir=out,
                                precision=precision, onnx_path=out / "model.onnx", calib=calib, options={})
            with pytest.raises(EnginePendingError) as info:
                get_target("tensorrt").build(req)
            made[name, precision] = (out, info.value.result.files, info.value.result.metadata["tensorrt"])
    return made


def test_every_preset_students_tensorrt_graphs_meet_the_contract(preset_bundles):
    from edgekd.export.tensorrt import READ_BY

    for (name, precision), (out, files, meta) in preset_bundles.items():
        onnx_roles = {r: f for r, f in files.items() if r in READ_BY}
        assert set(onnx_roles) == ({"onnx", "onnx_fp16"} if precision == "fp16"
                                   else {"onnx", "onnx_qdq", "onnx_qdq_fp16"}), name
        for role, file in onnx_roles.items():
            validate_onnx(out / file)  # full_check, strict shape inference, onnxruntime
            model = onnx.load(str(out / file))
            for family in READ_BY[role]:
                assert tensorrt_refusals(model, family) == [], (name, file, family)
        assert set(meta["contract"]) == set(onnx_roles.values())
        if precision == "int8":
            dqs, residual = _placement(onnx.load(str(out / files["onnx_qdq"])))
            assert dqs and (residual > 0 or name not in ("mobilenetv4_conv_small", "resnet18")), name


def test_strongly_typed_graphs_run_every_weighted_layer_in_fp16_with_float32_io(preset_bundles):
    for (name, precision), (out, files, _) in preset_bundles.items():
        role = "onnx_fp16" if precision == "fp16" else "onnx_qdq_fp16"
        model = onnx.load(str(out / files[role]))
        layers = heavy_op_precisions(model)
        want = {"input": "FLOAT16", "quantized": "no" if precision == "fp16" else "int8"}
        assert layers and all(v == want for v in layers.values()), (name, precision, layers)
        io = [*model.graph.input, *model.graph.output]
        assert {v.type.tensor_type.elem_type for v in io} == {TensorProto.FLOAT}, name
        l2 = [n for n in model.graph.node if n.op_type == "ReduceL2"]
        types = {v.name: v.type.tensor_type.elem_type
                 for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
        assert l2 and all(types[n.output[0]] == TensorProto.FLOAT for n in l2), name  # the L2 tail in fp32
