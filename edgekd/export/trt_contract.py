"""What TensorRT's ONNX parser refuses, checked here on machines without TensorRT: the contract a graph must meet
before `edgekd export --target tensorrt` calls it buildable, and what the fake parsers in tests/ enforce.

Sources (versions named so that a newer parser can be re-checked):
  - operators and the element types of their data input: onnx-tensorrt docs/operators.md (edgekd.export.trt_onnx_ops)
  - Q/DQ: onnx-tensorrt onnxOpImporters.cpp `QuantDequantLinearHelper` (branches 8.6-GA, 10.1-GA): a UINT8 input or
    zero point is refused, zero points must be constant and all zero ("TensorRT only supports symmetric
    quantization"), scales must be constant and positive, a per-channel scale has one value per channel of its axis;
    the quantized type is INT8 (8.6) or INT8/FP8/INT4 (10.x): an INT32 bias DequantizeLinear (onnxruntime's
    QuantizeBias) fails ("only activation types allowed as input to this layer", onnx-tensorrt #850)
  - UINT8 is only a network input or output type (operators.md, 10.x note)
  - strong typing (TensorRT 10.x STRONGLY_TYPED, always in 11.x; NVIDIA's "Strongly Typed Networks" and 10->11
    migration pages): tensor types come from the graph and no cast is inserted, so every input an op computes with
    has one float type, and a Cast produces the type it says
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._optional import require
from edgekd.export.trt_onnx_ops import OPSETS, SUPPORTED

# TensorRT family -> (operator table, networks strongly typed)
FAMILIES = {"8.6": ("8.6", False), "10.x": ("10", True), "11.x": ("10", True)}
FLOATS = {"FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE"}
HEAVY_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# inputs that are parameters, not data, and may have another float type than the data (ONNX allows it)
_PARAM_INPUTS = {"Resize": {1, 2}, "Pow": {1}, "QuantizeLinear": {1}, "DequantizeLinear": {1}, "Cast": set(),
                 "CastLike": {1}, "Clip": set(), "Range": set()}


# ops whose listed types are not those of input 0: Q/DQ (checked by _qdq_refusals), ConstantOfShape (its `value`; the
# importer casts any but UINT8, which the UINT8 rule catches)
_TYPES_NOT_OF_INPUT = {"QuantizeLinear", "DequantizeLinear", "ConstantOfShape"}


class TensorrtContractError(EdgekdError):
    """A graph TensorRT's ONNX parser would refuse."""


@dataclass(frozen=True)
class Refusal:
    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op}): {self.reason}"


class _Graph:
    """Element types and constant values of one model's tensors."""

    def __init__(self, model: Any):
        onnx = require("onnx", extra="onnx", purpose="the TensorRT contract check")
        from onnx import TensorProto, numpy_helper

        try:
            g = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # noqa: BLE001 - e.g. an op of an unknown domain: judge by the declared types alone
            g = model.graph
        self.model, self.graph = model, model.graph
        name = TensorProto.DataType.Name
        self.types = {v.name: name(v.type.tensor_type.elem_type) for v in [*g.value_info, *g.input, *g.output]
                      if v.type.tensor_type.elem_type}
        self.dims = {v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim]
                     for v in [*g.value_info, *g.input, *g.output]}
        self.consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        for t in model.graph.initializer:
            self.types[t.name] = name(t.data_type)
            self.dims[t.name] = list(t.dims)
        self.graph_inputs = {i.name for i in model.graph.input} - set(self.consts)
        self.graph_outputs = {o.name for o in model.graph.output}
        self.producer = {o: n for n in model.graph.node for o in n.output}

    def type_of(self, tensor: str) -> str | None:
        return self.types.get(tensor) if tensor else None

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of a constant tensor, looking through Identity."""
        while tensor not in self.consts and tensor in self.producer and self.producer[tensor].op_type == "Identity":
            tensor = self.producer[tensor].input[0]
        return self.consts.get(tensor)

    def is_weight(self, tensor: str) -> bool:
        return self.const(tensor) is not None


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _quantized_types(table: str) -> set[str]:
    return set(SUPPORTED[table]["DequantizeLinear"])


def _qdq_refusals(g: _Graph, node: Any, table: str) -> list[str]:
    """QuantDequantLinearHelper's checks for one QuantizeLinear / DequantizeLinear node."""
    reasons = []
    quantized = _quantized_types(table)
    is_dq = node.op_type == "DequantizeLinear"
    x_type = g.type_of(node.input[0])
    if is_dq and x_type is not None and x_type not in quantized:
        reasons.append(f"dequantizes {x_type} (TensorRT dequantizes only {'/'.join(sorted(quantized))}; an "
                       "INT32 bias must stay float)")
    if len(node.input) < 2 or not node.input[1]:
        return [*reasons, "has no scale"]
    scale = g.const(node.input[1])
    if scale is None:
        reasons.append("its scale is not a constant")
    elif not np.all(scale.astype(np.float64) > 0):
        reasons.append("scale coefficients must all be positive")
    zp_name = node.input[2] if len(node.input) > 2 else ""
    output_dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
    if not zp_name and not is_dq and output_dtype == 0:
        # accepted by the parser ("TRT will default to INT8"), but ONNX means uint8 [0, 255] here, so onnxruntime
        # (the gate) and TensorRT would compute different values: edgekd's contract refuses it
        reasons.append("no zero point: ONNX quantizes to uint8 there, TensorRT to int8 (give an int8 zero point 0)")
    if zp_name:
        zp_type = g.type_of(zp_name)
        zp = g.const(zp_name)
        if zp_type is not None and zp_type not in quantized:
            reasons.append(f"{zp_type} zero point (TensorRT has no {zp_type} quantization: symmetric INT8 only)")
        if zp is None:
            reasons.append("its zero point is not a constant")
        elif np.any(zp.astype(np.float64) != 0):
            reasons.append("non-zero zero point (TensorRT only supports symmetric quantization)")
    if scale is not None and scale.size > 1:
        reasons += _per_channel_refusals(g, node, scale)
    return reasons


def _per_channel_refusals(g: _Graph, node: Any, scale: np.ndarray) -> list[str]:
    data = node.input[0]
    weight = g.is_weight(data) or (node.op_type == "DequantizeLinear" and data in g.producer
                                   and g.is_weight(g.producer[data].input[0]))
    if not weight:
        return ["per-channel scale on an activation (TensorRT quantizes activations per tensor)"]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    dims = g.dims.get(data) or []
    if scale.ndim == 1 and dims and -len(dims) <= axis < len(dims) and dims[axis] not in (None, scale.size):
        return [f"{scale.size} scales for {dims[axis]} channels on axis {axis}"]
    return []


def _strong_typing_refusals(g: _Graph, node: Any) -> list[str]:
    reasons = []
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        from onnx import TensorProto

        declared = g.type_of(node.output[0])
        if to is not None and declared is not None and TensorProto.DataType.Name(to) != declared:
            reasons.append(f"casts to {TensorProto.DataType.Name(to)} but its output is typed {declared}")
    params = _PARAM_INPUTS.get(node.op_type, set())
    floats = {g.type_of(i) for k, i in enumerate(node.input) if k not in params and g.type_of(i) in FLOATS}
    if node.op_type not in ("Cast", "CastLike", "DequantizeLinear") and len(floats) > 1:
        reasons.append(f"computes with {' and '.join(sorted(floats))} inputs (a strongly typed network inserts no "
                       "casts)")
    return reasons


def _node_refusals(g: _Graph, node: Any, table: str, strongly_typed: bool) -> list[str]:
    if node.domain not in ("", "ai.onnx"):
        return [f"op of domain {node.domain!r}: TensorRT's parser has no importer for it (a plugin would be needed)"]
    supported = SUPPORTED[table].get(node.op_type)
    if supported is None:
        return [f"not in onnx-tensorrt's operator table for TensorRT {table}"]
    qdq = node.op_type in ("QuantizeLinear", "DequantizeLinear")
    reasons = _qdq_refusals(g, node, table) if qdq else []  # their UINT8 tensors are their zero points' doing
    x_type = g.type_of(node.input[0]) if node.input else None
    allowed = set(supported) | ({"DOUBLE"} if "FLOAT" in supported else set())
    if table == "8.6" and "INT32" in supported:
        allowed.add("INT64")  # 8.x casts INT64 down to INT32 (operators.md note)
    if x_type is not None and x_type not in allowed and node.op_type not in _TYPES_NOT_OF_INPUT:
        reasons.append(f"{x_type} input (TensorRT {table} takes {', '.join(sorted(supported))})")
    if x_type == "UINT8" and node.input[0] not in g.graph_inputs and not qdq:
        reasons.append("UINT8 tensor that is not a network input (UINT8 is only a network input or output type)")
    for out in node.output:
        if g.type_of(out) == "UINT8" and out not in g.graph_outputs and not qdq:
            reasons.append(f"produces UINT8 {out!r}, which is not a network output")
    if strongly_typed:
        reasons += _strong_typing_refusals(g, node)
    return reasons


def tensorrt_refusals(model: Any, family: str, strongly_typed: bool | None = None) -> list[Refusal]:
    """Every node of `model` (an onnx ModelProto) that TensorRT `family` ("8.6", "10.x", "11.x") would refuse;
    `strongly_typed`: the network's typing (default: the family's, strongly typed from 10.x on)."""
    return _refusals(_Graph(model), family, strongly_typed)


def _refusals(g: _Graph, family: str, strongly_typed: bool | None = None) -> list[Refusal]:
    if family not in FAMILIES:
        raise ValueError(f"unknown TensorRT family {family!r}; known: {', '.join(FAMILIES)}")
    table, typed = FAMILIES[family]
    strongly_typed = typed if strongly_typed is None else strongly_typed
    refusals = []
    lo, hi = OPSETS[table]
    opset = _opset(g.model)
    if not lo <= opset <= hi:
        refusals.append(Refusal("<model>", "opset", f"opset {opset}; TensorRT {family} imports opsets {lo}-{hi}"))
    for i, node in enumerate(g.graph.node):
        for reason in _node_refusals(g, node, table, strongly_typed):
            refusals.append(Refusal(node.name or f"#{i}", node.op_type, reason))
    return refusals


def check_for_tensorrt(path: str | os.PathLike, families: tuple[str, ...]) -> dict[str, Any]:
    """Raise TensorrtContractError, one line naming the first refused node, if TensorRT `families` would refuse
    the ONNX file at `path`; else {"tensorrt": families, "weighted_layers": {precision: count}} (what a strongly
    typed build runs the Conv/Gemm/MatMul layers in, e.g. "float16+int8"), from the same parse of the file."""
    onnx = require("onnx", extra="onnx", purpose="the TensorRT contract check")
    g = _Graph(onnx.load(str(path), load_external_data=False))
    for family in families:
        refusals = _refusals(g, family)
        if refusals:
            more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
            raise TensorrtContractError(f"{Path(path).name}: TensorRT {family}'s ONNX parser would refuse "
                                        f"{refusals[0]}{more}; this is a bug in edgekd's export, please report it")
    counts: dict[str, int] = {}
    for layer in _heavy_op_precisions(g).values():
        key = f"{layer['input'].lower()}{'+int8' if layer['quantized'] == 'int8' else ''}"
        counts[key] = counts.get(key, 0) + 1
    return {"tensorrt": list(families), "weighted_layers": counts}


def heavy_op_precisions(model: Any) -> dict[str, dict[str, str]]:
    """Conv/ConvTranspose/Gemm/MatMul node -> {"input": element type of its data input, "quantized": "int8" when
    that input comes from a DequantizeLinear, else "no"}: what a strongly typed build runs each layer in."""
    return _heavy_op_precisions(_Graph(model))


def _heavy_op_precisions(g: _Graph) -> dict[str, dict[str, str]]:
    out = {}
    for node in g.graph.node:
        if node.op_type in HEAVY_OPS:
            src = g.producer.get(node.input[0])
            quantized = "int8" if src is not None and src.op_type == "DequantizeLinear" else "no"
            out[node.name] = {"input": g.type_of(node.input[0]) or "?", "quantized": quantized}
    return out
