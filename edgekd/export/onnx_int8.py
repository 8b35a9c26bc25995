"""INT8 ONNX for CPU with onnxruntime static quantization (QDQ, per-channel weights, selectable calibration).

The graph is first run through onnxruntime's quant_pre_process (symbolic shape inference + ORT graph optimisation,
which folds BatchNorm and fuses ops so quantisation sees the ops that will actually run). Calibration ranges are
computed once and cached (onnxruntime's calibration_cache_path), so --auto-mixed can re-quantise with more nodes
excluded without re-running calibration. The quantisation step itself is edgekd.export.onnx_quant's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import atomic_path
from edgekd._optional import require
from edgekd.export.onnx_check import validate_onnx
from edgekd.export.onnx_quant import HEAVY_OPS, TENSORRT_WEIGHTED_OPS, default_op_types, quantizable_nodes, quantize
from edgekd.export.targets import ExportRequest, ExportResult

log = logging.getLogger(__name__)

CALIB_METHODS = ("minmax", "entropy", "percentile")
QUANT_FORMATS = ("qdq", "qoperator")

# TensorRT's explicit quantization, as NVIDIA's Q/DQ placement guide recommends (TensorRT developer guide, "Explicit
# Quantization: Q/DQ Layer-Placement Recommendations"): Q/DQ on the inputs of the weighted ops (Conv, ConvTranspose,
# Gemm, MatMul) and not on their outputs, so that nothing sits between a Conv and its activation, and on the skip
# input of a residual Add (TensorRT then fuses the Add into the Conv); symmetric int8 activations and per-channel
# symmetric weights (TensorRT has no zero points), weights kept float with a Q/DQ pair (TensorRT quantizes them at
# build time, on 8.6 as on 11.x); biases stay float: onnxruntime's QuantizeBias would feed them to DequantizeLinear as
# INT32, which TensorRT's parser refuses (edgekd.export.trt_contract)
# Add is quantized too, and then only its residual input keeps the Q/DQ (edgekd.export.qdq_placement)
TENSORRT_QDQ: dict[str, Any] = {
    "quant_format": "qdq", "per_channel": True, "activation": "int8", "reduce_range": False,
    "op_types": (*TENSORRT_WEIGHTED_OPS, "Add"), "residual_inputs_only": True,
    "qdq_extra": {"WeightSymmetric": True, "AddQDQPairToWeight": True, "QuantizeBias": False,
                  "OpTypesToExcludeOutputQuantization": [*TENSORRT_WEIGHTED_OPS, "Add"]}}


def float_boundary_nodes(model: Any, output_names: tuple[str, ...] = ("embedding", "scores")) -> list[str]:
    """Nodes that must stay float: the L2-normalisation tail before `embedding` (back to the last Conv/MatMul/Gemm),
    the label-scores MatMul, and the in-graph preprocessing head before the first heavy op. A table lookup in the
    head (Gather from a weight: a text tower's token embeddings) passes the walk on but may itself go to fp16 / int8:
    it only reads its table, which is most of such a tower's weights."""
    producers = {o: n for n in model.graph.node for o in n.output}
    keep: list[str] = []
    stack = [o for o in output_names if o in producers]
    seen: set[str] = set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in HEAVY_OPS and node.output[0] not in output_names:
            continue  # the head projection itself may be quantised
        keep.append(node.name)
        stack.extend(i for i in node.input if i in producers)
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weights = {t.name for t in model.graph.initializer}
    stack = [i.name for i in model.graph.input]
    while stack:  # preprocessing head: Cast / Mul / Sub / Div / Transpose up to the first heavy op
        for node in consumers.get(stack.pop(), []):
            if node.op_type in HEAVY_OPS or node.name in seen:
                continue
            seen.add(node.name)
            if not (node.op_type == "Gather" and node.input[0] in weights):
                keep.append(node.name)
            stack.extend(node.output)
    return keep




# Dynamic (weight-only) INT8 for onnxruntime on CPUs: weights int8 per output channel, activations quantised to
# uint8 per tensor at run time. In 7 bits (reduce_range): MLAS's u8 x s8 kernels on AVX2 / AVX-512 without VNNI
# multiply with vpmaddubsw, which sums two u8 x s8 products into a saturating int16 (2 x 255 x 127 = 64770 > 32767);
# with weights in [-64, 63] a pair stays within 32640, so those CPUs compute the same integers as VNNI / AMX ones and
# a gate measured on one x86 CPU holds on the others (onnxruntime's docs: reduce_range or U8U8 on non-VNNI CPUs;
# U8U8 would keep 8 bits but needs another kernel path). The bit costs accuracy: ViT-B-32's text tower (random
# weights, edgekd.export.text_gate's prompts, on a VNNI CPU where 8 bits are safe) has prompt cosine p1 0.9976 in 7
# bits per channel, 0.9990 in 8 bits per channel and 0.9963 in 7 bits per tensor.
DYNAMIC_INT8: dict[str, Any] = {"weight_type": "int8", "activation_type": "uint8 (dynamic, per tensor)",
                                "per_channel": True, "reduce_range": True}


def quantize_weights(src: str | os.PathLike, dst: str | os.PathLike,
                     op_types: tuple[str, ...] = ("MatMul", "Gemm")) -> dict[str, Any]:
    """fp32 ONNX -> dynamic INT8 ONNX (DYNAMIC_INT8 settings) of the ops in `op_types`, checked with onnx's full
    checker. No calibration data: the fit for transformer towers, whose weights are in MatMul/Gemm (and Gather).
    Returns the settings, for the metadata."""
    q = require("onnxruntime.quantization", extra="onnx", purpose="INT8 quantisation")
    onnx = require("onnx", purpose="INT8 quantisation")
    with atomic_path(dst) as tmp:
        q.quantize_dynamic(str(src), str(tmp), weight_type=q.QuantType.QInt8, per_channel=DYNAMIC_INT8["per_channel"],
                           reduce_range=DYNAMIC_INT8["reduce_range"], op_types_to_quantize=list(op_types))
        onnx.checker.check_model(str(tmp), full_check=True)
    return {"method": "onnxruntime quantize_dynamic", **DYNAMIC_INT8, "op_types": list(op_types)}


def build_int8(req: ExportRequest, model_name: str = "model.onnx", flavour: str = "onnxruntime") -> ExportResult:
    """The onnx target's int8 precision. Options: calib_method, keep_fp32 (node names), quant_format,
    activation_type, reduce_range, per_channel, auto_mixed (+ gate criteria), op_types.

    flavour "tensorrt": the Q/DQ ONNX TensorRT builds INT8 engines from (TENSORRT_QDQ: symmetric int8 activations
    and per-channel weights, zero points 0, float biases, Q/DQ on the inputs of the weighted ops), whatever the
    onnxruntime options."""
    onnx = require("onnx", purpose="INT8 quantisation")
    q = require("onnxruntime.quantization", extra="onnx", purpose="INT8 quantisation")
    if req.calib is None or len(req.calib) == 0:
        raise EdgekdError("--precision int8 needs calibration images: pass --calib DIR (a few hundred images)")
    opts = req.options
    method = opts.get("calib_method") or "minmax"
    if method not in CALIB_METHODS:
        raise EdgekdError(f"--calib-method {method!r}: use one of {', '.join(CALIB_METHODS)}")
    quant_format = opts.get("quant_format") or "qdq"
    if quant_format not in QUANT_FORMATS:
        raise EdgekdError(f"--quant-format {quant_format!r}: use one of {', '.join(QUANT_FORMATS)}")
    op_types = opts.get("op_types") or default_op_types()
    op_types = tuple(op_types.split(",") if isinstance(op_types, str) else op_types)  # --option op_types=Conv,Add
    settings = {"quant_format": quant_format, "per_channel": bool(opts.get("per_channel", True)),
                "activation": opts.get("activation_type") or "uint8", "reduce_range": bool(opts.get("reduce_range")),
                "op_types": op_types}
    if flavour == "tensorrt":
        settings = dict(TENSORRT_QDQ)
    elif flavour != "onnxruntime":
        raise ValueError(f"unknown INT8 flavour {flavour!r}")
    op_types = settings["op_types"]
    work = Path(tempfile.mkdtemp(prefix=".quant.", dir=req.out_dir))
    try:
        pre = work / "pre.onnx"
        try:
            q.quant_pre_process(str(req.onnx_path), str(pre), skip_symbolic_shape=False)
        except Exception as e:  # onnxruntime's symbolic shape inference fails on some graphs (e.g. opset 18's
            # ReduceL2 with axes as an input); ONNX's own shape inference is enough for quantisation
            log.info("quant_pre_process: symbolic shape inference failed (%s); using ONNX shape inference",
                     str(e)[:200])
            q.quant_pre_process(str(req.onnx_path), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre), load_external_data=False)
        names = {n.name for n in pre_model.graph.node}
        user_keep = list(opts.get("keep_fp32") or [])
        unknown = [n for n in user_keep if n not in names]
        if unknown:
            cands = quantizable_nodes(pre_model)
            raise EdgekdError(f"--keep-fp32 {', '.join(unknown)}: no such node(s) in the graph; quantisable nodes "
                              f"are e.g. {', '.join(cands[:6])} (see parity.json of an earlier export)")
        boundary = float_boundary_nodes(pre_model)
        cache = work / "calibration.json"
        out = work / "int8.onnx"
        from tqdm.auto import tqdm

        with tqdm(total=1, desc=f"calibrating + quantising ({method})", leave=False) as bar:
            quantize(pre, out, req.calib, req.input_name, cache, method, boundary + user_keep, **settings)
            bar.update()
        auto_kept: list[str] = []
        sensitivity: list[dict[str, Any]] = []
        if opts.get("auto_mixed"):
            from edgekd.export.sensitivity import auto_mixed

            auto_kept, sensitivity = auto_mixed(pre, out, req, cache, method, boundary + user_keep, settings)
        n_quant = sum(1 for n in onnx.load(str(out), load_external_data=False).graph.node
                      if n.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                                       "ConvInteger"))
        validate_onnx(out, shown_as=model_name)
        final = req.out_dir / model_name
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    candidates = [n for n in quantizable_nodes(pre_model, op_types) if n not in set(boundary)]
    excluded = sorted(set(boundary + user_keep + auto_kept))
    meta = {"quantization": {
        "tool": "onnxruntime.quantization.quantize_static", "flavour": flavour,
        "format": settings["quant_format"].upper(),
        "per_channel": settings["per_channel"], "weight_type": "int8", "activation_type": settings["activation"],
        "reduce_range": settings["reduce_range"], "calib_method": method, "calib_images": int(len(req.calib)),
        "op_types": list(op_types), "quantizable_nodes": len(candidates),
        "quantized_nodes": len([c for c in candidates if c not in excluded]), "quantize_linear_nodes": n_quant,
        "float_boundary_nodes": boundary, "kept_fp32_user": user_keep, "kept_fp32_auto": auto_kept,
        "sensitivity": sensitivity[:20]}}
    return ExportResult({"model": model_name}, "onnxruntime", meta)
