"""Lazy access to optional backends with install hints (the `is_*_available()` pattern)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from edgekd import EdgekdError

# module name -> extra that installs it
_EXTRAS = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "openvino": "openvino",
    "nncf": "openvino",
    "tensorrt": "tensorrt",
    "cuda": "tensorrt",
    "pycuda": "tensorrt",
    "cv2": "camera",
    "matplotlib": "plot",
    "tensorboard": "dev",
}


class MissingDependencyError(EdgekdError, ImportError):
    """An optional dependency is not installed."""


def is_available(module: str) -> bool:
    """True when `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed_version(*dists: str) -> str | None:
    """Version of the first of `dists` (alternative distribution names of one package) that is installed, read from
    its metadata without importing it; None when none is."""
    from importlib import metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def require(module: str, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import an optional module, or raise an error that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = extra or _EXTRAS.get(module.split(".")[0], module)
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"{module} is not installed{why}: {install_hint(extra)}  [{type(e).__name__}: {e}]"
        ) from e


def install_hint(extra: str) -> str:
    """How to install an extra on this machine. The TensorRT extras pull NVIDIA's wheels on x86-64 only: on aarch64
    (a Jetson, or an SBSA server) TensorRT is installed by hand (docs/export_targets.md, "Installing TensorRT")."""
    import platform

    if extra.startswith("tensorrt") and platform.machine().lower() in ("aarch64", "arm64"):
        return ("on a Jetson TensorRT comes with JetPack (sudo apt install python3-libnvinfer; JetPack 7.2.2+: "
                "NVIDIA's 11.4.1 SBSA wheel); on an aarch64 server pip install tensorrt-cu13 'cuda-python>=13,<14' "
                "(see docs/export_targets.md, Installing TensorRT)")
    return f"pip install 'edgekd[{extra}]'"
