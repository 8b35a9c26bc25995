"""The checks every ONNX file passes before a bundle holds it: onnx's full checker, strict shape inference with type
checks, and a load in onnxruntime (the loader that catches what the checker does not, e.g. a Cast whose output is
declared with another type than it produces)."""

from __future__ import annotations

import os
from pathlib import Path

from edgekd import EdgekdError
from edgekd._optional import is_available, require


class InvalidOnnxError(EdgekdError):
    """An exported graph that a runtime would refuse to load."""


def validate_onnx(path: str | os.PathLike, shown_as: str | os.PathLike | None = None) -> None:
    """Raise InvalidOnnxError (one line, naming the file and the check) unless `path` passes onnx.checker's full check,
    strict shape inference and an onnxruntime CPU session. `shown_as`: the name errors give (default: `path`'s),
    e.g. the final name of a temporary file."""
    onnx = require("onnx", extra="onnx", purpose="checking exported graphs")
    require("onnxruntime", extra="onnx", purpose="checking exported graphs")
    path = Path(path)
    name = Path(shown_as or path).name
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError / DecodeError
        raise InvalidOnnxError(f"{name}: fails onnx's checks ({_first_line(e)}); this is a bug in edgekd's "
                               "export, please report it") from e
    load_in_onnxruntime(path, name)


def load_in_onnxruntime(path: str | os.PathLike, shown_as: str | os.PathLike | None = None) -> None:
    """Raise InvalidOnnxError unless an onnxruntime CPU session loads `path` (optimisations off: loading is the
    check); nothing where onnxruntime is not installed (an OpenVINO-only export host)."""
    if not is_available("onnxruntime"):
        return
    ort = require("onnxruntime", extra="onnx", purpose="checking exported graphs")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / NotImplemented types
        raise InvalidOnnxError(f"{Path(shown_as or path).name}: onnxruntime refuses to load it ({_first_line(e)}); "
                               "this is a bug in edgekd's export, please report it") from e


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]
