"""TensorRT INT8 calibrators reading model inputs from a numpy array, with a calibration cache file.

The classes subclass TensorRT's own calibrator interfaces, which only exist once tensorrt is imported, so they are
built by `make_calibrator(trt, ...)` inside the builder (never at import time of this module).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_write_bytes

log = logging.getLogger(__name__)

CALIB_METHODS = ("entropy", "minmax")


def iter_calibration_batches(calib: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """[N, ...] -> full batches [batch_size, ...] (a ragged tail is dropped: TensorRT wants a fixed batch size)."""
    if batch_size < 1:
        raise EdgekdError(f"--calib-batch {batch_size}: must be >= 1")
    n = len(calib) // batch_size * batch_size
    if n == 0:
        raise EdgekdError(f"INT8 calibration needs at least --calib-batch={batch_size} images, got {len(calib)}")
    return [np.ascontiguousarray(calib[i:i + batch_size]) for i in range(0, n, batch_size)]


def make_calibrator(trt: Any, cudart: Any, calib: np.ndarray | None, batch_size: int, cache_path: Path,
                    method: str = "entropy") -> Any:
    """An IInt8EntropyCalibrator2 (or IInt8MinMaxCalibrator) over `calib` [N, ...] (the engine's input format).

    An existing `cache_path` is reused (TensorRT then skips calibration); the cache TensorRT produces is written there
    atomically, so a later build (or trtexec --calib=...) needs no images.
    """
    if method not in CALIB_METHODS:
        raise EdgekdError(f"--calib-method {method!r}: TensorRT supports {', '.join(CALIB_METHODS)}")
    base = trt.IInt8EntropyCalibrator2 if method == "entropy" else trt.IInt8MinMaxCalibrator
    cache_path = Path(cache_path)
    batches = iter_calibration_batches(calib, batch_size) if calib is not None else []
    if not batches and not cache_path.is_file():
        raise EdgekdError(f"INT8 calibration needs calibration images or an existing cache {cache_path}")

    class ArrayCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # TensorRT's pybind classes need the explicit base __init__
            self.batches = batches
            self.index = 0
            self.batch_size = batch_size
            self.device_ptr: int | None = None
            self.batches_served = 0

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str], *args: Any) -> list[int] | None:
            if self.index >= len(self.batches):
                return None  # calibration done
            batch = self.batches[self.index]
            self.index += 1
            if self.device_ptr is None:
                err, self.device_ptr = cudart.cudaMalloc(batch.nbytes)
                _check(err, "cudaMalloc")
            _check(cudart.cudaMemcpy(self.device_ptr, batch.ctypes.data, batch.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)[0], "cudaMemcpy")
            self.batches_served += 1
            if self.index % 10 == 0:
                log.info("calibration batch %d/%d", self.index, len(self.batches))
            return [int(self.device_ptr)]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path.is_file():
                log.info("reusing INT8 calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

        def free(self) -> None:
            if self.device_ptr is not None:
                cudart.cudaFree(self.device_ptr)
                self.device_ptr = None

    return ArrayCalibrator()


def _check(err: Any, what: str) -> None:
    if int(err) != 0:
        raise EdgekdError(f"CUDA error in {what} during INT8 calibration: {err}")
