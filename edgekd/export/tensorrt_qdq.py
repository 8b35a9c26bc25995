"""The INT8 ONNX for strongly typed TensorRT (10.x, 11.x): the Q/DQ graph in fp16.

A strongly typed build takes every tensor's type from the graph: from an fp32 Q/DQ graph the layers that are not
quantized (depthwise chains, activations, residual adds, pooling, the head) run in fp32, where TensorRT 8.6's
FP16 + INT8 builder flags ran them in fp16. So edgekd converts the Q/DQ graph (model.qdq.onnx, opset 17, what 8.6
builds with flags) to fp16 with float32 inputs, outputs and L2-norm tail (model.qdq.fp16.onnx, opset 19: the first
opset whose QuantizeLinear / DequantizeLinear take fp16 scales; TensorRT 10.0 reads opsets 9-20).

The converter leaves a Q/DQ pair on a float32 tensor (the network input) in float32 and casts after the
DequantizeLinear; the Cast is moved ahead of the QuantizeLinear so that every quantized layer reads its input
straight from an fp16 DequantizeLinear, the pattern TensorRT fuses.
"""

from __future__ import annotations

import os
from typing import Any

from edgekd._io import atomic_path
from edgekd._optional import require

QDQ_FP16_OPSET = 19


def convert_qdq_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, Any]:
    """fp32 Q/DQ ONNX at `src` -> fp16 Q/DQ ONNX at `dst` (opset QDQ_FP16_OPSET), validated. Returns the metadata."""
    onnx = require("onnx", extra="onnx", purpose="the fp16 Q/DQ graph")
    from onnx import version_converter

    from edgekd.export.onnx import to_fp16
    from edgekd.export.onnx_check import validate_onnx

    model = onnx.load(str(src))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < QDQ_FP16_OPSET:
        model = version_converter.convert_version(model, QDQ_FP16_OPSET)
    model16, meta = to_fp16(model)
    meta["casts_moved_ahead_of_quantize"] = move_casts_ahead_of_quantize(model16)
    meta["opset"] = QDQ_FP16_OPSET
    with atomic_path(dst) as tmp:
        onnx.save(model16, str(tmp))
        validate_onnx(tmp, shown_as=dst)
    return meta


def move_casts_ahead_of_quantize(model: Any) -> int:
    """Rewrite x:f32 -> Q(scale:f32) -> DQ -> Cast(f16) as x -> Cast(f16) -> Q(scale:f16) -> DQ (same zero point):
    the same values to within fp16 rounding of x, and the quantized consumer reads an fp16 DequantizeLinear. Returns
    how many pairs were rewritten. Edits `model` in place."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    moved = 0
    for cast in [n for n in graph.node if n.op_type == "Cast"]:
        to = next((a.i for a in cast.attribute if a.name == "to"), None)
        dq = producer.get(cast.input[0])
        if to != TensorProto.FLOAT16 or dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        scale = weights.get(dq.input[1])
        if (q is None or q.op_type != "QuantizeLinear" or scale is None or scale.data_type != TensorProto.FLOAT
                or q.input[1] != dq.input[1] or len(consumers.get(dq.output[0], [])) != 1
                or len(consumers.get(q.output[0], [])) != 1):
            continue
        scale16 = numpy_helper.from_array(numpy_helper.to_array(scale).astype("float16"), f"{scale.name}_fp16")
        graph.initializer.append(scale16)
        x16 = f"{q.input[0]}_fp16_for_{q.name}"
        graph.node.insert(list(graph.node).index(q), helper.make_node(
            "Cast", [q.input[0]], [x16], name=f"{q.name}_input_fp16", to=TensorProto.FLOAT16))
        q.input[0], q.input[1], dq.input[1] = x16, scale16.name, scale16.name
        dq.output[0] = cast.output[0]
        graph.node.remove(cast)
        moved += 1
    return moved

