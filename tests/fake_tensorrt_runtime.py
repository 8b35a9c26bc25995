"""A fake TensorRT *runtime* (Runtime -> engine -> execution context) and a fake cuda-python `cudart` whose "device"
memory is host memory, so that edgekd.runtime.backends.TensorRTBackend runs end to end on a CPU.

What it holds the backend to, as TensorRT and CUDA do: `set_input_shape` returns False outside the engine's
optimisation profile (and `execute_async_v3` then fails); every tensor needs an address of a live allocation large
enough; cudaMalloc/cudaFree are counted; work submitted while a stream is being captured is recorded, not run, and
replayed by cudaGraphLaunch. The builder side (flags, profiles, calibrators) is faked in test_export_tensorrt.py.

An engine file is JSON (fake_engine_bytes); the engine computes fake_model(x) = tanh(x.reshape(B, -1) @ W).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import types
from typing import Any

import numpy as np

ERROR = 900  # any non-zero cudaError


def fake_model(x: np.ndarray, dim: int = 8, seed: int = 0) -> np.ndarray:
    """What a fake engine computes: [B, ...] -> float32 [B, dim]."""
    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    w = np.random.default_rng(seed).standard_normal((flat.shape[1], dim)).astype(np.float32) / np.sqrt(flat.shape[1])
    return np.tanh(flat @ w).astype(np.float32)


def fake_engine_bytes(min_batch: int = 1, max_batch: int = 8, static: bool = False, sample: tuple[int, ...] = (3, 4, 4),
                      dim: int = 8, seed: int = 0, input_name: str = "pixels") -> bytes:
    """A serialized fake engine: input [B, *sample] float32 with B in min..max (or exactly max_batch when static)."""
    batch = [max_batch, max_batch] if static else [min_batch, max_batch]
    return json.dumps({"input": input_name, "sample": list(sample), "dim": dim, "seed": seed, "batch": batch,
                       "static": static}).encode()


class FakeCudart(types.SimpleNamespace):
    """cuda-python's runtime module, host-backed; counts allocations, frees, captures and graph launches."""

    def __init__(self) -> None:
        super().__init__(cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2),
                         cudaStreamCaptureMode=types.SimpleNamespace(cudaStreamCaptureModeGlobal=0,
                                                                     cudaStreamCaptureModeThreadLocal=1,
                                                                     cudaStreamCaptureModeRelaxed=2))
        self.buffers: dict[int, Any] = {}
        self.mallocs = self.frees = self.captures = self.launches = self.graphs_destroyed = 0
        self.capturing: list | None = None

    def cudaGetDeviceCount(self):
        return 0, 1

    def cudaGetDeviceProperties(self, device):
        return 0, types.SimpleNamespace(name=b"Orin", major=8, minor=7)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaMalloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buf)] = buf
        self.mallocs += 1
        return 0, ctypes.addressof(buf)

    def cudaFree(self, ptr):
        if self.buffers.pop(ptr, None) is None:
            return (ERROR,)
        self.frees += 1
        return (0,)

    def check(self, ptr: int, nbytes: int) -> bool:
        """Is [ptr, ptr + nbytes) inside one live allocation?"""
        return any(start <= ptr and ptr + nbytes <= start + len(buf) for start, buf in self.buffers.items())

    def submit(self, op) -> None:
        if self.capturing is not None:
            self.capturing.append(op)
        else:
            op()

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        device = dst if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        if not self.check(device, nbytes):
            return (ERROR,)
        self.submit(lambda: ctypes.memmove(dst, src, nbytes))
        return (0,)

    def cudaStreamSynchronize(self, stream):
        return (ERROR,) if self.capturing is not None else (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        ops, self.capturing = self.capturing, None
        self.captures += 1
        return 0, types.SimpleNamespace(ops=ops)

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        return 0, types.SimpleNamespace(ops=list(graph.ops))

    def cudaGraphLaunch(self, graph_exec, stream):
        self.launches += 1
        for op in graph_exec.ops:
            op()
        return (0,)

    def cudaGraphDestroy(self, graph):
        return (0,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.graphs_destroyed += 1
        return (0,)


def make_fake_runtime_trt(cudart: FakeCudart, version: str = "10.3.0") -> types.ModuleType:
    """A `tensorrt` module with the runtime API of `version` (named tensors; get_profile_shape before 8.5)."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT")
    trt.nptype = lambda dtype: {"FLOAT": np.float32}[dtype]
    trt.calls = {"set_input_shape": [], "execute": 0}
    named_profiles = tuple(int(p) for p in version.split(".")[:2]) >= (8, 5)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Engine:
        def __init__(self, spec: dict[str, Any]):
            self.spec = spec
            self.names = [spec["input"], "embedding"]
            self.num_io_tensors = 2

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == self.spec["input"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            b = self.spec["batch"][0] if self.spec["static"] else -1
            return (b, *self.spec["sample"]) if name == self.spec["input"] else (b, self.spec["dim"])

        def profile(self, name):
            lo, hi = self.spec["batch"]
            opt = (lo + hi) // 2
            return tuple((b, *self.spec["sample"]) for b in (lo, opt, hi))

        def create_execution_context(self):
            return Context(self)

    if named_profiles:
        Engine.get_tensor_profile_shape = lambda self, name, index: self.profile(name)
    else:
        Engine.get_profile_shape = lambda self, index, name: self.profile(name)

    class Context:
        def __init__(self, engine: Engine):
            self.engine, self.shape, self.addresses = engine, None, {}

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            trt.calls["set_input_shape"].append(shape)
            lo, hi = self.engine.spec["batch"]
            ok = (name == self.engine.spec["input"] and shape[1:] == tuple(self.engine.spec["sample"])
                  and lo <= shape[0] <= hi)
            self.shape = shape if ok else None
            return ok

        def get_tensor_shape(self, name):
            b = self.shape[0] if self.shape else -1
            return self.shape if name == self.engine.spec["input"] and self.shape else (b, self.engine.spec["dim"])

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = int(ptr)

        def execute_async_v3(self, stream):
            trt.calls["execute"] += 1
            if self.shape is None or set(self.addresses) != set(self.engine.names):
                return False
            spec, shape = self.engine.spec, self.shape
            src, dst = self.addresses[spec["input"]], self.addresses["embedding"]
            n_in, n_out = int(np.prod(shape)) * 4, shape[0] * spec["dim"] * 4
            if not (cudart.check(src, n_in) and cudart.check(dst, n_out)):
                return False

            def op():
                x = np.frombuffer((ctypes.c_char * n_in).from_address(src), np.float32).reshape(shape)
                y = np.ascontiguousarray(fake_model(x, spec["dim"], spec["seed"]))
                ctypes.memmove(dst, y.ctypes.data, n_out)

            cudart.submit(op)
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(bytes(data)))
            except ValueError:
                return None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def install_fake_tensorrt_runtime(monkeypatch, version: str = "10.3.0") -> tuple[types.ModuleType, FakeCudart]:
    """Make `import tensorrt` and edgekd's cudart import return the fakes (undone with the monkeypatch)."""
    import sys

    cudart = FakeCudart()
    trt = make_fake_runtime_trt(cudart, version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("edgekd.runtime.engine_check.import_cudart", lambda: cudart)
    return trt, cudart
