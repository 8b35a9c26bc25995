"""TensorRT engines only run on the TensorRT version and GPU they were built for: check before loading.

Owns the engine.json check, the cuda-python import (`import_cudart`, patched by the tests' fakes) and the device facts
it compares (`gpu_info`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._optional import require

ENGINE_MANIFEST = "engine.json"


class EngineMismatchError(EdgekdError):
    exit_code = 5


def check_engine_manifest(engine_path: Path, trt_version: str, gpu_name: str | None = None,
                          compute_capability: str | None = None) -> None:
    """Refuse an engine whose engine.json names another TensorRT version or GPU, and say how to rebuild it."""
    manifest_path = engine_path.parent / ENGINE_MANIFEST
    if not manifest_path.is_file():
        return  # a bare engine: TensorRT itself is the last line of defence
    m = json.loads(manifest_path.read_text())
    rebuild = (f"rebuild it here from the bundle's ONNX: edgekd export {engine_path.parent} --target tensorrt "
               "--from-onnx (or export/jetson/build_engine.sh)")
    built = m.get("tensorrt_version", "")
    if built and built.split(".")[:2] != trt_version.split(".")[:2]:
        raise EngineMismatchError(
            f"{engine_path}: built with TensorRT {built}, this machine has {trt_version}; {rebuild}")
    if gpu_name and m.get("gpu_name") and m["gpu_name"] != gpu_name:
        raise EngineMismatchError(
            f"{engine_path}: built for GPU {m['gpu_name']}, this machine has {gpu_name}; {rebuild}")
    if compute_capability and m.get("compute_capability") and m["compute_capability"] != compute_capability:
        raise EngineMismatchError(f"{engine_path}: built for compute capability {m['compute_capability']}, this GPU is "
                                  f"{compute_capability}; {rebuild}")


def import_cudart() -> Any:
    """cuda-python's runtime bindings, wherever this cuda-python version keeps them."""
    try:  # cuda-python >= 12.6 moved the bindings
        from cuda.bindings import runtime as cudart
    except ImportError:
        cudart = require("cuda.cudart", extra="tensorrt", purpose="TensorRT device memory (pip install cuda-python)")
    return cudart


def gpu_info(device: int = 0, cudart: Any = None) -> dict[str, str] | None:
    """{"name", "compute_capability"} of CUDA device `device` (cuda-python), or None when no GPU is visible."""
    if cudart is None:
        cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return None
    err, prop = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise EdgekdError(f"cudaGetDeviceProperties({device}) failed: {err}")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"name": name.rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}"}
