"""Export targets: a registry of `build(ExportRequest) -> ExportResult` functions, one module per target.

A target module (edgekd/export/<name>.py) registers itself with ``@register_target(name, precisions=...)``. Modules
are imported lazily by `get_target(name)`, so `import edgekd.export` never imports onnxruntime, openvino or tensorrt.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd import EdgekdError

if TYPE_CHECKING:
    import numpy as np

    from edgekd.labelpack import LabelPack
    from edgekd.preprocess import Preprocess
    from edgekd.students.model import Student

PRECISIONS = ("fp32", "fp16", "int8")
# target name -> module that registers it (imported on first use)
TARGET_MODULES = {"onnx": "edgekd.export.onnx", "openvino": "edgekd.export.openvino",
                  "tensorrt": "edgekd.export.tensorrt"}


class NeedsDeviceError(EdgekdError):
    """The work was prepared (files + instructions) but must be finished on another machine (e.g. a TensorRT GPU)."""

    exit_code = 4

    def __init__(self, message: str, result: ExportResult | None = None):
        super().__init__(message)
        self.result = result  # the files already written, when the target got that far


class IntermediateGateError(EdgekdError):
    """An intermediate model a target builds from (e.g. TensorRT's fp16 / Q/DQ ONNX) failed the parity gate; the
    pipeline records `report` as the export's verdict (exit 3) and nothing is built from that model."""

    exit_code = 3

    def __init__(self, message: str, result: ExportResult, report: dict[str, Any]):
        super().__init__(message)
        self.result, self.report = result, report


@dataclass
class ExportRequest:
    """Everything a target needs to build its artifact inside `out_dir`.

    student: eval mode, reparameterised. onnx_path: the fp32 ONNX export-core already wrote into out_dir.
    input_name: "pixels" (float32 [B,3,H,W], normalised) or "frames" (uint8 [B,H,W,3], the graph normalises).
    calib / val: model inputs in that format, [N, ...]; `val` is never used for calibration.
    options: target-specific CLI options (max_drop, keep_fp16, dla_core, workspace_gb, calib_method, ...).
    gate_model: the export's parity gate as a function (model file, backend name) -> report, for targets that build
    their artifact from an intermediate model which must pass first (TensorRT: the fp16 / Q/DQ ONNX); None = no gate.
    """

    student: Student
    preprocess: Preprocess
    out_dir: Path
    precision: str
    onnx_path: Path
    input_name: str = "pixels"
    calib: np.ndarray | None = None
    val: np.ndarray | None = None
    label_pack: LabelPack | None = None
    options: dict[str, Any] = field(default_factory=dict)
    gate_model: Callable[[Path, str], dict[str, Any]] | None = None


@dataclass
class ExportResult:
    """files: role -> file name inside out_dir ({"model": ..., "weights": ..., "onnx": ...});
    backend: the edgekd.runtime.backends name that runs files["model"]; metadata: facts for edgekd.json."""

    files: dict[str, str]
    backend: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    precisions: tuple[str, ...]
    build: Callable[[ExportRequest], ExportResult]
    description: str = ""


TARGETS: dict[str, TargetSpec] = {}


def register_target(name: str, precisions: tuple[str, ...] = PRECISIONS, description: str = "") -> Callable:
    """Decorator: register `build(req) -> ExportResult` as export target `name` supporting `precisions`."""
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown precision(s) {bad}; use {PRECISIONS}")

    def deco(build: Callable[[ExportRequest], ExportResult]) -> Callable[[ExportRequest], ExportResult]:
        TARGETS[name] = TargetSpec(name, tuple(precisions), build, description or (build.__doc__ or "").split("\n")[0])
        return build

    return deco


def get_target(name: str) -> TargetSpec:
    """The registered target `name`, importing its module on first use; clear error for unknown names."""
    if name not in TARGETS:
        module = TARGET_MODULES.get(name)
        if module is None:
            raise EdgekdError(f"--target {name!r}: unknown export target; use one of {', '.join(TARGET_MODULES)}")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            raise EdgekdError(f"--target {name}: not available in this version of edgekd") from e
        if name not in TARGETS:
            raise EdgekdError(f"--target {name}: {module} did not register the target")
    return TARGETS[name]


def check_precision(target: TargetSpec, precision: str) -> None:
    if precision not in PRECISIONS:
        raise EdgekdError(f"--precision {precision!r}: unknown; use one of {', '.join(PRECISIONS)}")
    if precision not in target.precisions:
        raise EdgekdError(f"--precision {precision}: target {target.name} supports {', '.join(target.precisions)}")
