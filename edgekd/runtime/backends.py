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
from edgekd.runtime.batching import shape_batch_range
from edgekd.unwind import unwinder_conflict

log = logging.getLogger(__name__)

# backend name -> factory(path, threads, device) -> Backend
BACKENDS: dict[str, Callable[..., Backend]] = {}
# file suffix -> backend names that can run it, preferred first
SUFFIX_BACKENDS = {".onnx": ("onnxruntime", "openvino", "ort-cuda", "ort-trt"), ".xml": ("openvino",),
                   ".engine": ("tensorrt",), ".plan": ("tensorrt",)}
# onnxruntime input type -> numpy dtype (what run_batched casts inputs to)
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}
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

    @property
    def batch_range(self) -> tuple[int, int | None]:
        """(min, max) batch one `run` accepts, max None = unbounded: a static batch dim n -> (n, n). Callers batch
        through edgekd.runtime.batching.run_batched, which reads this."""
        return shape_batch_range(self.input_shape)

    def close(self) -> None:
        """Release what the backend holds outside Python (device memory); the base holds nothing."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "input": self.input_name, "input_shape": self.input_shape,
                "batch_range": list(self.batch_range), "outputs": self.output_names}


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
                   inference_precision: str | None = None, cuda_graph: bool = False) -> Backend:
    """Load `path` (.onnx, .xml, .engine) with `backend` ('auto' = the first usable one for that file type).

    spin: onnxruntime only: let worker threads busy-wait between runs (None = onnxruntime's default, on). Off suits
    apps that do other CPU work between inferences (preprocessing, decoding): spinning threads steal those cores.
    inference_precision: openvino only: its INFERENCE_PRECISION_HINT (f32 by default: the precision the model was
    exported in; bf16 / f16 let the CPU plugin compute float layers in that precision where the CPU has it).
    cuda_graph: tensorrt only: replay each input shape's inference as a captured CUDA graph (batch-1 latency).
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: model file not found")
    if threads is not None and threads < 1:
        raise EdgekdError(f"threads must be >= 1, got {threads}")
    backend = resolve_backend(path, backend)
    conflict = unwinder_conflict()
    if conflict:
        raise EdgekdError(f"{path}: not loaded with {backend}: {conflict}")
    options: dict[str, Any] = {"spin": spin} if spin is not None and BACKEND_MODULES.get(backend) == "onnxruntime" \
        else {}
    if inference_precision and backend == "openvino":
        options["inference_precision"] = inference_precision
    if cuda_graph:
        if backend != "tensorrt":
            raise EdgekdError(f"cuda_graph=True needs the tensorrt backend, not {backend}")
        options["cuda_graph"] = True
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
            # WeightBiasQuantization (onnxruntime#22969) turns the float bias of a Q/DQ Conv into an INT32
            # DequantizeLinear; on an fp16 Q/DQ graph (a TensorRT bundle's model.qdq.fp16.onnx) onnxruntime 1.32
            # computes it wrong: a tiny student's embedding cosine to fp32 fell from 0.99997 to 0.876. The graphs it
            # would help (float biases inside Q/DQ) are the TensorRT ones, run here only for the parity gate.
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers,
                                                disabled_optimizers=["WeightBiasQuantization"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types without a common base
            raise EdgekdError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:300]})") from e
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.input_dtype = np.dtype(ORT_DTYPES.get(inp.type, np.float32))
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
        first = inp.get_partial_shape()[0]  # a dynamic batch may still be bounded (e.g. 1..8)
        self._batch = shape_batch_range(self.input_shape) if first.is_static else (
            max(1, first.get_min_length()), first.get_max_length() if first.get_max_length() >= 0 else None)
        self.input_dtype = np.dtype(inp.get_element_type().to_dtype())
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._idle: list[Any] = []  # infer requests not in use; one per concurrent caller, kept for reuse
        self._idle_lock = threading.Lock()

    @property
    def batch_range(self) -> tuple[int, int | None]:
        return self._batch

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        _no_feeds(self.name, feeds)
        request = self._take_request()
        try:
            result = request.infer({0: x})
            return {name: np.asarray(result[out]).copy() for name, out in zip(self.output_names,
                                                                                self.compiled.outputs)}
        finally:
            with self._idle_lock:
                self._idle.append(request)

    def _take_request(self) -> Any:
        """An idle infer request, or a new one. Requests belong to the backend, not to a thread: a threading.local
        one dies with its thread's Python state, which on threads Python did not start (GStreamer's streaming
        threads, any C library's callbacks) is torn down after every call into Python, and an InferRequest freed
        there releases the GIL inside CPython's thread-state teardown and segfaults (docs/runtime.md)."""
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return self.compiled.create_infer_request()


# --- TensorRT -----------------------------------------------------------------------------------------------------

@register_backend("tensorrt")
class TensorRTBackend(Backend):
    """A serialized TensorRT engine (named-tensor API of TensorRT 8.5+, 10.x and 11.x) with cuda-python for device
    memory.

    Checks the engine manifest (engine.json beside the engine) against the installed TensorRT and GPU first, so a
    mismatching engine is refused with a message instead of failing inside TensorRT. Device buffers are allocated
    once and only grown when a larger batch needs more bytes (cudaMalloc/cudaFree synchronise the device and would
    inflate every latency); close() frees them. cuda_graph=True runs each input shape once, captures its
    execute_async_v3 into a CUDA graph and replays that graph from then on: one launch instead of one per kernel,
    which is what batch-1 latency on a Jetson is made of.
    """

    name = "tensorrt"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None, cuda_graph: bool = False):
        trt = require("tensorrt", purpose="TensorRT inference")
        from edgekd.runtime import engine_check

        self._cudart = engine_check.import_cudart()  # through the module, so the tests' fake cudart takes its place
        dev = int(device.split(":")[1]) if device and ":" in device else 0
        gpu = engine_check.gpu_info(dev, self._cudart) or {}
        engine_check.check_engine_manifest(path, trt.__version__, gpu.get("name"), gpu.get("compute_capability"))
        self._logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EdgekdError(f"{path}: TensorRT could not deserialize the engine (built with another TensorRT "
                              "version or GPU?); rebuild it with `edgekd export --target tensorrt --from-onnx`")
        self.path, self.engine, self.trt, self.cuda_graph = path, engine, trt, cuda_graph
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.input_shape = [d if d >= 0 else "batch" for d in engine.get_tensor_shape(self.input_name)]
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.output_names = [n for n in names if n not in inputs]
        self._batch = engine_batch_range(engine, self.input_name)
        self._lock = threading.Lock()  # one execution context, serialised (contexts are not thread-safe)
        self._device: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self._graphs: dict[tuple[int, ...], Any] = {}  # input shape -> instantiated CUDA graph
        self._shape: tuple[int, ...] | None = None  # input shape the context's shapes and addresses are set for
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self.context = engine.create_execution_context()
        err, self.stream = self._cudart.cudaStreamCreate()
        _check_cuda(err, "cudaStreamCreate")

    @property
    def batch_range(self) -> tuple[int, int | None]:
        return self._batch

    def run(self, x: np.ndarray, feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """x [B, ...] with B in batch_range -> {output: float32 [B, ...]}."""
        _no_feeds(self.name, feeds)
        cudart = self._cudart
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        with self._lock:
            if self.stream is None:
                raise EdgekdError(f"{self.path}: this TensorRT backend was closed")
            self._bind(tuple(x.shape))
            out = {name: np.empty(shape, self.trt.nptype(self.engine.get_tensor_dtype(name)))
                   for name, shape in self._out_shapes.items()}
            self._copy(self._device[self.input_name][0], x.ctypes.data, x.nbytes, "HostToDevice")
            self._execute(tuple(x.shape))
            for name, arr in out.items():
                self._copy(arr.ctypes.data, self._device[name][0], arr.nbytes, "DeviceToHost")
            _check_cuda(cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")
        return {name: arr.astype(np.float32, copy=False) for name, arr in out.items()}

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Set the input shape (checked against the profile) and point every tensor at a buffer large enough."""
        if shape == self._shape:
            return
        self._shape = None
        if not self.context.set_input_shape(self.input_name, shape):
            lo, hi = self._batch
            batches = f"{lo}" if lo == hi else f"{lo}..{hi}"
            raise EdgekdError(f"{self.path}: TensorRT refused input shape {list(shape)}: the engine's profile takes "
                              f"batch {batches} of {self.input_shape[1:]}; feed it through "
                              "edgekd.runtime.batching.run_batched, or rebuild the engine with another --max-batch")
        sizes = {self.input_name: int(np.prod(shape)) * self.input_dtype.itemsize}
        self._out_shapes = {}
        for name in self.output_names:
            out_shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in out_shape):
                raise EdgekdError(f"{self.path}: output {name!r} has a data-dependent shape {list(out_shape)}, which "
                                  "this backend does not support")
            self._out_shapes[name] = out_shape
            itemsize = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))).itemsize
            sizes[name] = int(np.prod(out_shape)) * itemsize
        for name, nbytes in sizes.items():
            self._reserve(name, nbytes)
            self.context.set_tensor_address(name, self._device[name][0])
        self._shape = shape

    def _reserve(self, name: str, nbytes: int) -> None:
        """A device buffer of at least `nbytes` for `name`: reused when large enough, else replaced by a larger one
        (dropping the CUDA graphs, which hold the old addresses)."""
        ptr, capacity = self._device.get(name, (0, 0))
        if nbytes <= capacity:
            return
        self._drop_graphs()
        if ptr:
            _check_cuda(self._cudart.cudaFree(ptr)[0], "cudaFree")
            del self._device[name]
        self._device[name] = (_malloc(self._cudart, nbytes), max(nbytes, 1))

    def _copy(self, dst: int, src: int, nbytes: int, direction: str) -> None:
        kind = getattr(self._cudart.cudaMemcpyKind, f"cudaMemcpy{direction}")
        _check_cuda(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream)[0], "cudaMemcpyAsync")

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise EdgekdError(f"{self.path}: TensorRT execution failed (input shape {list(self._shape or ())})")

    def _execute(self, shape: tuple[int, ...]) -> None:
        """Run the engine on the stream: directly, or (cuda_graph) by replaying this shape's graph, captured after
        the shape's first plain run (which lets TensorRT finish its shape-dependent setup outside the capture)."""
        graph = self._graphs.get(shape) if self.cuda_graph else None
        if graph is not None:
            _check_cuda(self._cudart.cudaGraphLaunch(graph, self.stream)[0], "cudaGraphLaunch")
            return
        self._enqueue()
        if self.cuda_graph:
            self._graphs[shape] = self._capture()

    def _capture(self) -> Any:
        """Capture one execute_async_v3 on the stream into an instantiated CUDA graph."""
        cudart = self._cudart
        _check_cuda(cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check_cuda(cudart.cudaStreamBeginCapture(self.stream, mode)[0], "cudaStreamBeginCapture")
        try:
            ok = self.context.execute_async_v3(self.stream)
        finally:
            err, graph = cudart.cudaStreamEndCapture(self.stream)
        try:
            if not ok or int(err) != 0:
                raise EdgekdError(f"{self.path}: this engine cannot be captured into a CUDA graph (execute "
                                  f"{'ok' if ok else 'failed'}, cudaStreamEndCapture: {err}); load it with "
                                  "cuda_graph=False")
            instantiate = getattr(cudart, "cudaGraphInstantiateWithFlags", None) or cudart.cudaGraphInstantiate
            err, graph_exec = instantiate(graph, 0)[:2]
            _check_cuda(err, "cudaGraphInstantiate")
            return graph_exec
        finally:
            if graph is not None:
                cudart.cudaGraphDestroy(graph)

    def _drop_graphs(self) -> None:
        for graph_exec in self._graphs.values():
            self._cudart.cudaGraphExecDestroy(graph_exec)
        self._graphs.clear()

    def close(self) -> None:
        """Free the device buffers, CUDA graphs and stream (also on garbage collection); later runs raise."""
        lock = getattr(self, "_lock", None)
        if lock is None or getattr(self, "stream", None) is None:
            return
        with lock:
            self._drop_graphs()
            for ptr, _ in self._device.values():
                self._cudart.cudaFree(ptr)
            self._device.clear()
            self._shape = None
            self._cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:
        self.close()


def engine_batch_range(engine: Any, input_name: str) -> tuple[int, int | None]:
    """(min, max) batch of a TensorRT engine's input: its fixed batch, else optimisation profile 0's batch range."""
    first = int(engine.get_tensor_shape(input_name)[0])
    if first >= 0:
        return first, first
    if hasattr(engine, "get_tensor_profile_shape"):  # TensorRT 8.5+, 10.x, 11.x: (min, opt, max) shapes
        low, _, high = engine.get_tensor_profile_shape(input_name, 0)
    else:  # TensorRT 8.x before the named-tensor API
        low, _, high = engine.get_profile_shape(0, input_name)
    return int(low[0]), int(high[0])


def _no_feeds(backend: str, feeds: dict[str, np.ndarray] | None) -> None:
    if feeds:
        raise EdgekdError(f"backend {backend} takes the model's one input only, not {', '.join(feeds)}")


def _malloc(cudart: Any, nbytes: int) -> int:
    err, ptr = cudart.cudaMalloc(max(nbytes, 1))
    _check_cuda(err, "cudaMalloc")
    return ptr


def _check_cuda(err: Any, what: str) -> None:
    if int(err) != 0:
        raise EdgekdError(f"CUDA error in {what}: {err}")
