"""onnxruntime static INT8 quantisation of a pre-processed fp32 ONNX: the weight-layer op types, the calibration
reader and `quantize` itself. Shared by the int8 export (edgekd.export.onnx_int8) and its --auto-mixed search
(edgekd.export.sensitivity), which re-quantises with more nodes kept in float; neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd._optional import require
from edgekd.export.qdq_placement import quantize_residual_inputs_only

# weight-bearing ops: the size win, and the "layers" that --keep-fp32 / --auto-mixed choose among
HEAVY_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")
# the ops TensorRT's explicit quantization puts Q/DQ on the inputs of (edgekd.export.onnx_int8.TENSORRT_QDQ)
TENSORRT_WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def default_op_types() -> tuple[str, ...]:
    """Every op type onnxruntime can quantise (its own default). Quantising the ops between the convolutions too
    (Relu, Add, pooling, ...) lets onnxruntime run whole int8 chains instead of converting back to float around each
    one: mobilenetv4_conv_small at 224, batch 1, 2 threads went from 0.90 ms (Conv/MatMul/Gemm only) to 0.62 ms
    (fp32: 0.99 ms), with a higher cosine to fp32 (benchmarks/results/export_size_latency)."""
    registry = require("onnxruntime.quantization.registry", extra="onnx", purpose="INT8 quantisation")
    return tuple(sorted(set(registry.QDQRegistry) | set(registry.QLinearOpsRegistry)))


class _Reader:
    """onnxruntime CalibrationDataReader over an in-memory array [N, ...] in batches."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int):
        self.input_name, self.data, self.batch = input_name, data, batch
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.data):
            return None
        x = self.data[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return {self.input_name: np.ascontiguousarray(x)}

    def rewind(self) -> None:
        self.pos = 0

    def __len__(self) -> int:
        return (len(self.data) + self.batch - 1) // self.batch


def quantizable_nodes(model: Any, op_types: tuple[str, ...] = HEAVY_OPS) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in op_types]


def quantize(pre_path: Path, out_path: Path, calib: np.ndarray | None, input_name: str, cache: Path,
             method: str = "minmax", exclude: list[str] | tuple[str, ...] = (), quant_format: str = "qdq",
             per_channel: bool = True, activation: str = "uint8", reduce_range: bool = False,
             op_types: tuple[str, ...] | None = None, percentile: float = 99.999,
             qdq_extra: dict[str, Any] | None = None, residual_inputs_only: bool = False) -> None:
    """Static-quantise the pre-processed fp32 model `pre_path` into `out_path` (ranges cached in `cache`).
    qdq_extra: more of quantize_static's extra_options (the TensorRT flavour sets some); residual_inputs_only: keep
    an Add's Q/DQ only on its residual input (edgekd.export.qdq_placement.quantize_residual_inputs_only)."""
    q = require("onnxruntime.quantization", extra="onnx", purpose="INT8 quantisation")
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    fmt = {"qdq": q.QuantFormat.QDQ, "qoperator": q.QuantFormat.QOperator}[quant_format]
    act = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}[activation]
    reader = _Reader(input_name, calib, 8) if calib is not None else None
    extra = {"CalibPercentile": percentile, "CalibMovingAverage": False}
    if activation == "int8":
        extra["ActivationSymmetric"] = True
    extra.update(qdq_extra or {})
    op_types = list(op_types or default_op_types())
    q.quantize_static(str(pre_path), str(out_path), reader, quant_format=fmt, op_types_to_quantize=op_types,
                      per_channel=per_channel, reduce_range=reduce_range, activation_type=act,
                      weight_type=q.QuantType.QInt8, nodes_to_exclude=list(exclude), calibrate_method=methods[method],
                      extra_options=extra, calibration_cache_path=str(cache))
    if residual_inputs_only:
        quantize_residual_inputs_only(out_path, TENSORRT_WEIGHTED_OPS)
