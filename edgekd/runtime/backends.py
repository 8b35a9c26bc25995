"""Inference backends for exported models, chosen by file type or by name. numpy only; each backend imports its
engine lazily. Used by the runtime, the export parity gate and `edgekd bench` alike.

    backend = create_backend("bundle/model.onnx", backend="auto", threads=2)
    outputs = backend.run(pixels)          # {"embedding": [B, D], ...}
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._optional import is_available, require

log = logging.getLogger(__name__)

# backend name -> factory(path, threads, device) -> Backend
BACKENDS: dict[str, Callable[..., Backend]] = {}
# file suffix -> backend names that can run it, preferred first
SUFFIX_BACKENDS = {".onnx": ("onnxruntime", "openvino", "ort-cuda", "ort-trt"), ".xml": ("openvino",),
                   ".engine": ("tensorrt",), ".plan": ("tensorrt",)}
# backend name -> module it needs
BACKEND_MODULES = {"onnxruntime": "onnxruntime", "ort-cuda": "onnxruntime", "ort-trt": "onnxruntime",
                   "openvino": "openvino", "tensorrt": "tensorrt"}


def register_backend(name: str) -> Callable:
    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[name] = factory
        return factory

    return deco


class Backend:
    """One loaded model. `run` takes the model's input (plus, on onnxruntime, optional named `feeds` such as the
    `channel_order` of a model that resizes frames itself) and returns {output name: array}.

    Subclasses set `name`, `input_name`, `input_shape` (ints or strings for dynamic axes), `input_dtype`,
    `output_names`. `run` is safe to call from several threads.
    """

    name = "base"
    input_name: str
    input_shape: list[int | str]
    input_dtype: np.dtype
    output_names: list[str]

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "input": self.input_name, "input_shape": self.input_shape,
                "outputs": self.output_names}


def backend_unavailable_reason(name: str) -> str | None:
    """None when `name` can run here, else a one-line reason (for skips in reports and errors)."""
    if name not in BACKENDS:
        return f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}"
    module = BACKEND_MODULES[name]
    if not is_available(module):
        extra = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}[module]
        return f"{module} is not installed (pip install 'edgekd[{extra}]')"
    if name in ("ort-cuda", "ort-trt"):
        import onnxruntime as ort

        provider = "CUDAExecutionProvider" if name == "ort-cuda" else "TensorrtExecutionProvider"
        if provider not in ort.get_available_providers():
            return f"onnxruntime has no {provider} here (install onnxruntime-gpu on a machine with a GPU)"
    return None


def backends_for(path: str | os.PathLike) -> tuple[str, ...]:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_BACKENDS:
        raise EdgekdError(f"{path}: unknown model file type {suffix!r}; expected one of {', '.join(SUFFIX_BACKENDS)}")
    return SUFFIX_BACKENDS[suffix]


def resolve_backend(path: str | os.PathLike, backend: str = "auto") -> str:
    """The backend that create_backend would use for `path`: 'auto' -> the first usable one for that file type; a
    named one is checked (it must run that file type and be installed)."""
    path = Path(path)
    candidates = backends_for(path)
    if backend == "auto":
        reasons = {b: backend_unavailable_reason(b) for b in candidates}
        usable = [b for b in candidates if reasons[b] is None]
        if not usable:
            why = "; ".join(f"{b}: {r}" for b, r in reasons.items())
            raise EdgekdError(f"{path}: no backend can run it here: {why}")
        return usable[0]
    if backend not in candidates:
        if backend not in BACKENDS:
            raise EdgekdError(f"unknown backend {backend!r}; known: {', '.join(sorted(BACKENDS))}")
        raise EdgekdError(f"backend {backend} cannot run {path.suffix} files; use one of {', '.join(candidates)}")
    reason = backend_unavailable_reason(backend)
    if reason:
        raise EdgekdError(f"backend {backend}: {reason}")
    return backend


def create_backend(path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
                   device: str | None = None, spin: bool | None = None,
                   inference_precision: str | None = None) -> Backend:
    """Load `path` (.onnx, .xml, .engine) with `backend` ('auto' = the first usable one for that file type).

    spin: onnxruntime only: let worker threads busy-wait between runs (None = onnxruntime's default, on). Off suits
    apps that do other CPU work between inferences (preprocessing, decoding): spinning threads steal those cores.
    inference_precision: openvino only: its INFERENCE_PRECISION_HINT (f32 by default: the precision the model was
    exported in; bf16 / f16 let the CPU plugin compute float layers in that precision where the CPU has it).
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: model file not found")
    if threads is not None and threads < 1:
        raise EdgekdError(f"threads must be >= 1, got {threads}")
    backend = resolve_backend(path, backend)
    options: dict[str, Any] = {"spin": spin} if spin is not None and BACKEND_MODULES.get(backend) == "onnxruntime" \
        else {}
    if inference_precision and backend == "openvino":
        options["inference_precision"] = inference_precision
    return BACKENDS[backend](path, threads=threads, device=device, **options)


# --- onnxruntime --------------------------------------------------------------------------------------------------

class OrtBackend(Backend):
    """onnxruntime InferenceSession; `providers` picks CPU, CUDA or TensorRT execution."""

    def __init__(self, path: Path, threads: int | None, providers: list[Any], name: str, spin: bool | None = None):
        ort = require("onnxruntime", purpose="ONNX inference")
        self.name = name
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if spin is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types without a common base
            raise EdgekdError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:300]})") from e
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.input_dtype = np.dtype(np.uint8 if "uint8" in inp.type else np.float16 if "float16" in inp.type
                                    else np.float32)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: x, **(feeds or {})})
        return dict(zip(self.output_names, outs))


@register_backend("onnxruntime")
def _ort_cpu(path: Path, threads: int | None = None, device: str | None = None, spin: bool | None = None) -> Backend:
    return OrtBackend(path, threads, ["CPUExecutionProvider"], "onnxruntime", spin)


@register_backend("ort-cuda")
def _ort_cuda(path: Path, threads: int | None = None, device: str | None = None, spin: bool | None = None) -> Backend:
    dev = int(device.split(":")[1]) if device and ":" in device else 0
    return OrtBackend(path, threads, [("CUDAExecutionProvider", {"device_id": dev}), "CPUExecutionProvider"],
                      "ort-cuda", spin)


@register_backend("ort-trt")
def _ort_trt(path: Path, threads: int | None = None, device: str | None = None, spin: bool | None = None) -> Backend:
    dev = int(device.split(":")[1]) if device and ":" in device else 0
    cache = str(path.parent / ".ort_trt_cache")
    trt_opts = {"device_id": dev, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                "trt_fp16_enable": True}
    return OrtBackend(path, threads, [("TensorrtExecutionProvider", trt_opts), ("CUDAExecutionProvider",
                                                                                {"device_id": dev}),
                                      "CPUExecutionProvider"], "ort-trt", spin)


# --- OpenVINO -----------------------------------------------------------------------------------------------------

@register_backend("openvino")
class OpenVinoBackend(Backend):
    """OpenVINO compiled model (IR .xml or ONNX) on CPU (or `device`, e.g. GPU/NPU); one infer request per thread."""

    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None,
                 inference_precision: str = "f32"):
        ov = require("openvino", purpose="OpenVINO inference")
        core = ov.Core()
        # OpenVINO silently runs fp32 models in bf16 on CPUs that have it; keep the precision the model was exported in
        # unless asked otherwise (INT8 layers still run in INT8 under this hint).
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, (device or "CPU").upper(), config)
        except RuntimeError as e:
            raise EdgekdError(f"{path}: OpenVINO cannot load it ({str(e).splitlines()[0][:300]})") from e
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what it runs float layers in: an ov.Type
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        inp = self.compiled.inputs[0]
        self.input_name = inp.get_any_name()
        self.input_shape = [d.get_length() if d.is_static else "batch" for d in inp.get_partial_shape()]
        self.input_dtype = np.dtype(inp.get_element_type().to_dtype())
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._local = threading.local()

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        _no_feeds(self.name, feeds)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: x})
        return {name: np.asarray(result[out]).copy() for name, out in zip(self.output_names, self.compiled.outputs)}


# --- TensorRT -----------------------------------------------------------------------------------------------------

@register_backend("tensorrt")
class TensorRTBackend(Backend):
    """A serialized TensorRT engine (TensorRT >= 8.5 named-tensor API) with cuda-python for device memory.

    Checks the engine manifest (engine.json beside the engine) against the installed TensorRT and GPU first, so a
    mismatching engine is refused with a message instead of failing inside TensorRT.
    """

    name = "tensorrt"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None):
        trt = require("tensorrt", purpose="TensorRT inference")
        self._cudart = _import_cudart()
        from edgekd.runtime.engine_check import check_engine_manifest, gpu_info

        dev = int(device.split(":")[1]) if device and ":" in device else 0
        gpu = gpu_info(dev, self._cudart) or {}
        check_engine_manifest(path, trt.__version__, gpu.get("name"), gpu.get("compute_capability"))
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EdgekdError(f"{path}: TensorRT could not deserialize the engine (built with another TensorRT "
                              "version or GPU?); rebuild it with `edgekd export --target tensorrt --from-onnx`")
        self.engine, self.trt = engine, trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.input_shape = [d if d >= 0 else "batch" for d in engine.get_tensor_shape(self.input_name)]
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.output_names = [n for n in names if n not in inputs]
        self._lock = threading.Lock()  # one execution context, serialised (contexts are not thread-safe)
        self.context = engine.create_execution_context()
        err, self.stream = self._cudart.cudaStreamCreate()
        _check_cuda(err, "cudaStreamCreate")

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        _no_feeds(self.name, feeds)
        cudart, trt = self._cudart, self.trt
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        with self._lock:
            self.context.set_input_shape(self.input_name, x.shape)
            buffers = []
            try:
                d_in = _malloc(cudart, x.nbytes)
                buffers.append(d_in)
                _check_cuda(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes,
                                                   cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)[0],
                            "cudaMemcpyAsync")
                self.context.set_tensor_address(self.input_name, d_in)
                host_out = {}
                for name in self.output_names:
                    shape = tuple(self.context.get_tensor_shape(name))
                    arr = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
                    d_out = _malloc(cudart, arr.nbytes)
                    buffers.append(d_out)
                    self.context.set_tensor_address(name, d_out)
                    host_out[name] = (arr, d_out)
                if not self.context.execute_async_v3(self.stream):
                    raise EdgekdError("TensorRT execution failed")
                for arr, d_out in host_out.values():
                    _check_cuda(cudart.cudaMemcpyAsync(arr.ctypes.data, d_out, arr.nbytes,
                                                       cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)[0],
                                "cudaMemcpyAsync")
                _check_cuda(cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")
                return {name: arr.astype(np.float32, copy=False) for name, (arr, _) in host_out.items()}
            finally:
                for ptr in buffers:
                    cudart.cudaFree(ptr)


def _no_feeds(backend: str, feeds: dict[str, np.ndarray] | None) -> None:
    if feeds:
        raise EdgekdError(f"backend {backend} takes the model's one input only, not {', '.join(feeds)}")


def _import_cudart() -> Any:
    try:  # cuda-python >= 12.6 moved the bindings
        from cuda.bindings import runtime as cudart
    except ImportError:
        cudart = require("cuda.cudart", extra="tensorrt", purpose="TensorRT device memory (pip install cuda-python)")
    return cudart


def _malloc(cudart: Any, nbytes: int) -> int:
    err, ptr = cudart.cudaMalloc(max(nbytes, 1))
    _check_cuda(err, "cudaMalloc")
    return ptr


def _check_cuda(err: Any, what: str) -> None:
    if int(err) != 0:
        raise EdgekdError(f"CUDA error in {what}: {err}")
