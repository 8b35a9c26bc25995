"""Where Q/DQ pairs sit after onnxruntime quantised a graph: NVIDIA's placement for residual blocks (TensorRT
developer guide, "Q/DQ Layer-Placement Recommendations"), applied to the TensorRT flavour's Q/DQ graph. Imports nothing
of edgekd's export modules, so onnx_int8 can call it without an import circle."""

from __future__ import annotations

import os
from typing import Any

from edgekd._io import atomic_path
from edgekd._optional import require


def quantize_residual_inputs_only(path: str | os.PathLike, weighted_ops: tuple[str, ...]) -> dict[str, int]:
    """On a Q/DQ graph quantized with Add among the op types, keep a Q/DQ only on the residual (skip) input of each
    Add whose other input is a weighted op's output, and remove it elsewhere: NVIDIA's placement guide (TensorRT
    developer guide, "Q/DQ Layer-Placement Recommendations": with the skip input in INT8, TensorRT fuses the Add into
    the Conv and the fused layer can write INT8 for the next quantized layer), the layout Model Optimizer's
    build_non_residual_input_map makes. An Add of a constant (a Linear's bias after MatMul) or of two weighted
    branches keeps both inputs float. Rewrites `path` in place; returns counts."""
    onnx = require("onnx", extra="onnx", purpose="the TensorRT Q/DQ graph")
    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    weights = {t.name for t in graph.initializer}

    def source(tensor: str) -> tuple[str, Any | None]:
        """(float tensor behind a Q -> DQ pair, the node that made it)."""
        dq = producer.get(tensor)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                tensor = q.input[0]
        return tensor, producer.get(tensor)

    kept = freed = 0
    for add in [n for n in graph.node if n.op_type == "Add"]:
        srcs = [source(t) for t in add.input]
        from_weighted = [s[1] is not None and s[1].op_type in weighted_ops for s in srcs]
        skip_ok = [not w and t not in weights and (s is None or s.op_type != "Constant")
                   for (t, s), w in zip(srcs, from_weighted)]
        for k, (tensor, _) in enumerate(srcs):
            keep_qdq = len(srcs) == 2 and from_weighted[1 - k] and skip_ok[k]
            if keep_qdq:
                kept += 1
            elif add.input[k] != tensor:
                add.input[k] = tensor
                freed += 1
    _drop_unused_qdq(graph)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return {"residual_inputs_quantized": kept, "add_inputs_float": freed}


def _drop_unused_qdq(graph: Any) -> None:
    """Remove DequantizeLinear nodes nothing reads, then the QuantizeLinear nodes that fed only them."""
    outputs = {o.name for o in graph.output}
    for op in ("DequantizeLinear", "QuantizeLinear"):
        used = {i for n in graph.node for i in n.input} | outputs
        for node in [n for n in graph.node if n.op_type == op and n.output[0] not in used]:
            graph.node.remove(node)
