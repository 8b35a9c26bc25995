"""Export a student to deployable bundles (ONNX / OpenVINO / TensorRT) with a parity gate.

Cheap to import: targets are loaded by name on first use (`edgekd.export.targets.get_target`).
"""

from edgekd.export.targets import (
    PRECISIONS,
    TARGETS,
    ExportRequest,
    ExportResult,
    NeedsDeviceError,
    TargetSpec,
    get_target,
    register_target,
)

__all__ = ["PRECISIONS", "TARGETS", "ExportRequest", "ExportResult", "NeedsDeviceError", "TargetSpec", "get_target",
           "register_target", "export_bundle", "GateFailedError"]


def __getattr__(name: str):  # lazy: the pipeline pulls in torch
    if name in ("export_bundle", "GateFailedError"):
        from edgekd.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
