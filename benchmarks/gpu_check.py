"""The GPU path, proven on a CUDA host: the runtime's cudart helpers, torch latency of student and teacher, gpu-marked
tests, a ViT-B-32 teacher cache, distillation speed (bf16 AMP), ONNX parity (onnxruntime's CUDA EP when installed).

Driven by benchmarks/gpu_check.sh (which installs edgekd from the checkout first); the subcommands are:

    python benchmarks/gpu_check.py detect      # exit 0 when torch sees a CUDA GPU, else one line and exit 10
    python benchmarks/gpu_check.py prepare     # (a host with PyPI) the carried wheels + 2,000/300 CIFAR-10 images
                                               # into .gpucheck/, checked against the carry limit
    python benchmarks/gpu_check.py run [--budget S] [--steps N] [--out benchmarks/results/gpu]

`run` executes each stage of STAGES in its own process with its own timeout (STAGE_TIME; a crash or hang in one stage
is recorded and the others still run) inside one overall budget: environment; cudart (edgekd.runtime's cuda-python
helpers on the real CUDA runtime: device info, malloc, an async memcpy round trip, a stream, CUDA-graph capture and
replay, all without torch or TensorRT); latency (torch eager p50 of the student and of the ViT-B-32 image tower, random
weights, fp32 and fp16, batch 1 and a larger batch, channels_last and not on the CNN); the `gpu`-marked tests; a
ViT-B-32 cache (random weights) of the training images; the distillation data path alone; mobilenetv4_conv_small
distilled at 224 for a fixed number of steps under bf16 autocast; ONNX export gated on CPU, then on onnxruntime's CUDA
EP; TensorRT when importable. A stage that cannot run on the host records "skipped" with the reason. GPU utilisation
is sampled through NVML (nvidia-ml-py, else `nvidia-smi -lms`). It writes results.json and results.md to --out and
exits 1 when any stage failed.
Images: --data/--val, else $EDGEKD_GPU_CHECK_DATA/{train,val}, else .gpucheck/data/{train,val} (made by `prepare`),
else a subset unpacked from --assets (default $EDGEKD_ASSETS or ../shared/assets beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NO_GPU_EXIT = 10
CARRY_DIR = ROOT / ".gpucheck"  # ignored by git; the device tool's `carry` brings it (wheels + images)
STAGES = ("environment", "cudart", "latency", "tests", "cache", "loader", "distill", "onnx", "tensorrt")
# (expected seconds on one H100/H200, timeout): estimated from the step counts, image numbers and timing plans below,
# about 5 minutes in all, and to be replaced by the wall_s of a run there; a stage hanging until its timeout still
# leaves every other stage its time inside the budget of gpu_check.sh (test_gpu_check checks the arithmetic)
STAGE_TIME = {"environment": (10, 45), "cudart": (5, 45), "latency": (60, 120), "tests": (60, 120), "cache": (30, 90),
              "loader": (20, 60), "distill": (60, 120), "onnx": (40, 90), "tensorrt": (5, 60)}
STAGE_TIMEOUT = {name: timeout for name, (_, timeout) in STAGE_TIME.items()}
RUN_BUDGET_S = 430  # gpu_check.sh: 480 s in all, less the install (~30 s) and a margin for writing the results
NEEDS = {"loader": "cache", "distill": "cache", "onnx": "distill", "tensorrt": "distill"}
NEEDS_IMAGES = ("cache", "onnx", "tensorrt")
MIN_STAGE_SECONDS = 20
LOADER_BATCHES = 100
TARGET_UTIL = 80.0
# torch latency: warm-up, then timed calls until both counts are reached; the larger batch is a throughput point
LATENCY_TIMING = {"cuda": {"warmup_s": 0.5, "min_time_s": 1.0, "min_iters": 20, "batches": (1, 128)},
                  "cpu": {"warmup_s": 0.2, "min_time_s": 0.3, "min_iters": 3, "batches": (1, 4)}}
LATENCY_PRECISIONS = ("fp32", "fp16")

# Wheels for CPython 3.12 x86-64 that the lent CUDA host (torch 2.11 + CUDA 13, no index reachable) may lack; pip
# takes each only where the host has no satisfying version. Pure Python except wcwidth (abi3) and cuda-bindings.
CARRIED_WHEELS = (
    "open_clip_torch==3.3.0", "ftfy==6.3.1", "wcwidth==0.9.4",  # the teacher and its tokenizer's needs
    "timm==1.0.31",  # recent enough for open_clip 3.x
    # the onnx extra's fp16 converter; needs numpy, onnx, packaging, protobuf>=3.20.2, which torch images have
    "onnxconverter-common==1.16.0",
    # the runtime's cudart helpers (edgekd.runtime.engine_check.import_cudart); 13.0.x = the CUDA of the hosts' r580
    # driver, so no newer-driver call can sneak in. Installed by gpu_check.sh only where `cuda.bindings` is missing.
    "cuda-bindings==13.0.3", "cuda-pathfinder==1.9.1",
)
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CARRY_LIMIT_MIB = 50  # the device tool carries 64 MiB per call, the checkout's own files included


# ---------------------------------------------------------------- detection (torch only, before edgekd is installed)

def detect() -> tuple[bool, str]:
    """(True, GPU name) when torch can use a CUDA device, else (False, why not)."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none"
        return False, f"torch {torch.__version__} (CUDA build: {built}) sees no CUDA device"
    return True, torch.cuda.get_device_name(0)


# ---------------------------------------------------------------- images

def _cifar_members(tar_path: Path, per_class: dict[str, int]) -> list[str]:
    """Sorted first-N JPEG member names per split ({"train": 200, "test": 30}) and class of the CIFAR-10 tarball."""
    chosen: dict[tuple[str, str], list[str]] = {}
    with tarfile.open(tar_path, "r:gz") as tar:
        for name in tar.getnames():
            parts = name.split("/")
            if len(parts) == 4 and parts[1] in per_class and parts[3].endswith(".jpg"):
                chosen.setdefault((parts[1], parts[2]), []).append(name)
    return [n for (split, _), names in sorted(chosen.items()) for n in sorted(names)[:per_class[split]]]


def unpack_subset(tar_path: Path, dest: Path, train_per_class: int = 200, val_per_class: int = 30) -> dict[str, Path]:
    """dest/train/<class>/*.jpg (200 per class = 2,000) and dest/val/<class>/*.jpg (30 per class, from the test split,
    never trained on) from the CIFAR-10 JPEG tarball of ../shared/assets. Idempotent."""
    out = {"train": dest / "train", "val": dest / "val"}
    done = dest / ".complete"
    if done.is_file():
        return out
    if not tar_path.is_file():
        raise FileNotFoundError(f"{tar_path}: no CIFAR-10 tarball; pass --data/--val or --assets DIR (the folder "
                                "holding cifar10-jpg.tar.gz)")
    names = set(_cifar_members(tar_path, {"train": train_per_class, "test": val_per_class}))
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            if member.name in names:
                _, split, cls, fname = member.name.split("/")
                target = out["train" if split == "train" else "val"] / cls / fname
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    (dest / "SOURCE.txt").write_text(f"{tar_path.name}: {train_per_class}/class of train -> train, "
                                     f"{val_per_class}/class of test -> val\n")
    done.touch()
    return out


def resolve_images(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """Training and held-out image folders, in the order the module docstring gives."""
    if args.data and args.val:
        return {"train": Path(args.data), "val": Path(args.val)}
    env = os.environ.get("EDGEKD_GPU_CHECK_DATA")
    for base in ([Path(env)] if env else []) + [CARRY_DIR / "data"]:
        if (base / "train").is_dir() and (base / "val").is_dir():
            return {"train": Path(args.data or base / "train"), "val": Path(args.val or base / "val")}
    found = unpack_subset(Path(args.assets) / "cifar10-jpg.tar.gz", work / "images")
    return {"train": Path(args.data or found["train"]), "val": Path(args.val or found["val"])}


# ---------------------------------------------------------------- what is carried to a host with no package index

class CarryError(RuntimeError):
    """`prepare` could not make a complete .gpucheck/ within the carry limit."""


def dist_key(name: str, version: str) -> tuple[str, str]:
    """(PEP 503 normalised project name, version): a spec `open_clip_torch==3.3.0` and its wheel file agree on it."""
    return re.sub(r"[-_.]+", "-", name).lower(), version


def spec_key(spec: str) -> tuple[str, str]:
    name, sep, version = spec.partition("==")
    if not sep:
        raise ValueError(f"{spec}: carried wheels are pinned as NAME==VERSION")
    return dist_key(name, version)


def wheel_key(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return dist_key(name, version)


def download_wheels(dest: Path, specs: tuple[str, ...]) -> None:
    """pip download of `specs` for CPython 3.12 on manylinux x86-64 (the lent hosts), without their dependencies."""
    platforms = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *specs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CarryError(f"pip download failed (exit {r.returncode}; is a package index reachable from here?): "
                         f"{r.stderr.strip()[-800:]}")


def sync_wheels(dest: Path, specs: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Delete the wheels in `dest` that `specs` do not pin (two versions of one package stop pip's install) ->
    (removed file names, specs that still have no wheel)."""
    want = {spec_key(s): s for s in specs}
    removed = []
    for whl in sorted(dest.glob("*.whl")):
        if wheel_key(whl) not in want:
            whl.unlink()
            removed.append(whl.name)
    have = {wheel_key(w) for w in dest.glob("*.whl")}
    return removed, [s for k, s in want.items() if k not in have]


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def checkout_bytes(root: Path = ROOT) -> int | None:
    """Bytes of the files a device call sends besides the carried folder (tracked + untracked, not ignored)."""
    try:
        r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    files = (root / n for n in r.stdout.decode(errors="replace").split("\0") if n)
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def prepare_carry(carry: Path, assets: Path, download: Any = download_wheels, specs: tuple[str, ...] = CARRIED_WHEELS,
                  limit_mib: float = CARRY_LIMIT_MIB) -> dict[str, Any]:
    """carry/wheels (exactly `specs`) + carry/data (2,000 training, 300 held-out images) + carry/CARRIED.json, or a
    CarryError when a wheel is missing or the folder is over `limit_mib`. `download(dest, specs)` fetches the wheels
    (None: use the wheels already there)."""
    wheels = carry / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if download is not None:
        download(wheels, specs)
    removed, missing = sync_wheels(wheels, specs)
    if missing:
        raise CarryError(f"{wheels}: no wheel for {', '.join(missing)}; run `bash benchmarks/gpu_check.sh --prepare` "
                         "where PyPI is reachable")
    images = unpack_subset(assets / "cifar10-jpg.tar.gz", carry / "data")
    doc = {"wheels": {w.name: w.stat().st_size for w in sorted(wheels.glob("*.whl"))}, "removed": removed,
           "images": {k: sum(1 for _ in v.rglob("*.jpg")) for k, v in images.items()},
           "data_bytes": tree_bytes(carry / "data"), "limit_mib": limit_mib, "checkout_bytes": checkout_bytes()}
    (carry / "CARRIED.json").unlink(missing_ok=True)
    doc["carried_bytes"] = tree_bytes(carry)  # all but this manifest (under 1 KiB)
    (carry / "CARRIED.json").write_text(json.dumps(doc, indent=1) + "\n")
    if doc["carried_bytes"] > limit_mib * 2**20:
        raise CarryError(f"{carry} holds {doc['carried_bytes'] / 2**20:.1f} MiB, over the {limit_mib} MiB it may "
                         "take of a device call's 64 MiB: carry fewer wheels or images (CARRIED_WHEELS, unpack_subset)")
    return doc


def carry_summary(doc: dict[str, Any]) -> str:
    mib = 2**20
    whl = sum(doc["wheels"].values())
    line = (f"{len(doc['wheels'])} wheels ({whl / mib:.1f} MiB), {doc['images'].get('train', 0):,} + "
            f"{doc['images'].get('val', 0):,} images ({doc['data_bytes'] / mib:.1f} MiB): "
            f"{doc['carried_bytes'] / mib:.1f} MiB carried (limit {doc['limit_mib']} MiB)")
    if doc.get("checkout_bytes") is not None:
        line += f"; with the checkout {(doc['carried_bytes'] + doc['checkout_bytes']) / mib:.1f} of 64 MiB per call"
    if doc.get("removed"):
        line += f"; removed {', '.join(doc['removed'])}"
    return line


# ---------------------------------------------------------------- GPU utilisation sampling

class GpuSampler:
    """Samples GPU utilisation (%) and memory used (MiB) every `period` s in a thread: NVML through nvidia-ml-py when
    importable, else a background `nvidia-smi --query-gpu=... -lms`. `summary(t0, t1)` averages a time window."""

    def __init__(self, index: int, period: float = 0.1):
        self.index, self.period = index, period
        self.samples: list[tuple[float, float, float]] = []  # (perf_counter, util %, memory MiB)
        self.source = "none"
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> GpuSampler:
        handle, pynvml = self._nvml_handle()
        if handle is not None:
            self.source = "nvml (nvidia-ml-py)"
            self._thread = threading.Thread(target=self._poll_nvml, args=(pynvml, handle), daemon=True)
        elif shutil.which("nvidia-smi") is None:
            self.error += "; no nvidia-smi either: utilisation not sampled"
            return self
        else:
            self.source = "nvidia-smi -lms"
            self._proc = subprocess.Popen(
                ["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", str(max(100, int(self.period * 1000)))],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        self._thread.start()
        return self

    def _nvml_handle(self) -> tuple[Any, Any]:
        try:
            import pynvml
        except ImportError:
            self.error = "NVML unavailable (nvidia-ml-py is not installed)"
            return None, None
        try:
            pynvml.nvmlInit()
            return pynvml.nvmlDeviceGetHandleByIndex(self.index), pynvml
        except pynvml.NVMLError as e:
            self.error = f"NVML unavailable ({e})"
            return None, None

    def _poll_nvml(self, pynvml: Any, handle: Any) -> None:
        while not self._stop.is_set():
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            self.samples.append((time.perf_counter(), float(util), float(mem)))
            self._stop.wait(self.period)

    def _read_smi(self) -> None:
        for line in self._proc.stdout:
            try:
                util, mem = (float(v) for v in line.strip().split(",")[:2])
            except ValueError:
                continue
            self.samples.append((time.perf_counter(), util, mem))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self, t0: float | None = None, t1: float | None = None) -> dict[str, Any]:
        rows = [s for s in self.samples if (t0 is None or s[0] >= t0) and (t1 is None or s[0] <= t1)]
        out: dict[str, Any] = {"source": self.source, "samples": len(rows), "period_s": self.period}
        if self.error:
            out["note"] = self.error
        if rows:
            utils = sorted(r[1] for r in rows)
            out.update(util_mean=round(sum(utils) / len(utils), 1), util_p50=utils[len(utils) // 2],
                       util_min=utils[0], memory_used_max_mib=round(max(r[2] for r in rows)))
        return out


def nvml_index() -> int:
    """NVML numbers GPUs like nvidia-smi, not like CUDA_VISIBLE_DEVICES: map CUDA device 0 back when it is numeric."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


# ---------------------------------------------------------------- stages (each runs in its own process)

def stage_environment(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    from edgekd._optional import installed_version
    from edgekd.bench.env import collect_environment
    from edgekd.cpu import cpu_facts, describe

    env = collect_environment()
    gpu: dict[str, Any] = {"gpu_name": "none (CPU rehearsal)"}
    if ctx["device"] == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu = {"gpu_name": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
               "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count}
    return {**gpu, "driver": (env["gpu"][0]["driver"] if isinstance(env["gpu"], list) and env["gpu"] else "unknown"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "host_cpu": describe(cpu_facts()), "cpu_cores_usable": env["cpu"]["cores_usable"],
            "python": platform.python_version(), "os": env["os"], "onnxruntime_providers": _ort_providers(),
            "packages": {**env["packages"], **{d: installed_version(d) or "not installed" for d in EXTRA_DISTS}}}


EXTRA_DISTS = ("cuda-bindings", "onnxconverter-common", "onnxscript", "nvidia-ml-py")


def _ort_providers() -> list[str] | str:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return f"onnxruntime not importable ({e})"
    return ort.get_available_providers()


def stage_cudart(ctx: dict[str, Any]) -> dict[str, Any]:
    """edgekd.runtime's cuda-python helpers on the real CUDA runtime, in a process without torch: the binding
    (engine_check.import_cudart), device info (engine_check.gpu_info), then TensorRTBackend's own buffer, copy,
    CUDA-graph and close methods (see cudart_round_trip)."""
    torch_before = "torch" in sys.modules
    from edgekd._optional import installed_version
    from edgekd.runtime import backends, engine_check

    try:
        cudart = engine_check.import_cudart()
    except ImportError as e:
        return {"status": "skipped", "reason": f"cuda-python is not importable ({str(e).splitlines()[0]})"}
    out: dict[str, Any] = {"binding": cudart.__name__, "cuda_bindings": installed_version("cuda-bindings",
                                                                                         "cuda-python"),
                           "runtime_version": _cuda_version(cudart.cudaRuntimeGetVersion()),
                           "driver_version": _cuda_version(cudart.cudaDriverGetVersion())}
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        return {**out, "status": "skipped", "reason": f"cudart sees no CUDA device (cudaGetDeviceCount: "
                                                      f"{getattr(err, 'name', err)})"}
    out["gpu"] = engine_check.gpu_info(0, cudart)
    out.update(cudart_round_trip(backends, cudart))
    # the runtime never imports torch (this stage's process starts without it)
    out["imported_torch"] = "torch" in sys.modules and not torch_before
    failed = [k for k in ("round_trip_equal", "graph_captured", "graph_replay_equal", "closed") if not out[k]]
    if out["imported_torch"]:
        failed.append("the runtime imported torch")
    if failed:
        out["error"] = "cudart check failed: " + ", ".join(failed)
    return out


def _cuda_version(result: tuple[Any, Any]) -> str | None:
    err, v = result
    return f"{v // 1000}.{v % 1000 // 10}" if int(err) == 0 and v else None


class DeviceCopyContext:
    """Stands in for a TensorRT IExecutionContext in the cudart stage (the lent hosts have no TensorRT), with the
    contract TensorRT 10 documents for `execute_async_v3(stream_handle) -> bool`: enqueue the work on that stream
    without waiting and return True when it was enqueued. The work is one device-to-device cudaMemcpyAsync of `nbytes`
    from `src` to `dst`, which stream capture records into a graph as it records an engine's kernels. `calls` counts
    the enqueues, so a graph replay (which makes none) is told apart from a direct run."""

    def __init__(self, cudart: Any, src: int, dst: int, nbytes: int):
        self.cudart, self.src, self.dst, self.nbytes, self.calls = cudart, src, dst, nbytes, 0

    def execute_async_v3(self, stream_handle: Any) -> bool:
        self.calls += 1
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        return int(self.cudart.cudaMemcpyAsync(self.dst, self.src, self.nbytes, kind, stream_handle)[0]) == 0


def backend_shell(backends: Any, cudart: Any) -> Any:
    """A TensorRTBackend without an engine. Its __init__ needs tensorrt and a serialized engine, so this sets the
    state __init__ leaves for the buffer, copy, capture and close methods, and creates the stream as __init__ does."""
    be = backends.TensorRTBackend.__new__(backends.TensorRTBackend)
    be._cudart, be.path, be.cuda_graph = cudart, Path("gpu_check cudart stage (no engine)"), True
    be._lock, be._device, be._graphs, be._shape = threading.Lock(), {}, {}, None
    err, be.stream = cudart.cudaStreamCreate()
    backends._check_cuda(err, "cudaStreamCreate")
    return be


def cudart_round_trip(backends: Any, cudart: Any, nbytes: int = 4 << 20) -> dict[str, Any]:
    """On the backend's stream: `_reserve` two device buffers (cudaMalloc), host -> device -> host (`_copy`, async,
    then cudaStreamSynchronize) with the bytes compared; `_execute` of a DeviceCopyContext twice: a direct run that
    the backend then captures into a CUDA graph, and a graph launch that must copy new input bytes without an
    enqueue; `close` frees buffers, graphs and stream."""
    import numpy as np

    rng = np.random.default_rng(0)
    first, second = (rng.integers(0, 256, nbytes, dtype=np.uint8) for _ in range(2))
    back = np.zeros(nbytes, np.uint8)
    be = backend_shell(backends, cudart)
    t0 = time.perf_counter()
    try:
        be._reserve("input", nbytes)
        be._reserve("output", nbytes)
        src, dst = be._device["input"][0], be._device["output"][0]

        def holds(ptr: int, want: Any) -> bool:
            back[:] = 0
            be._copy(back.ctypes.data, ptr, nbytes, "DeviceToHost")
            backends._check_cuda(cudart.cudaStreamSynchronize(be.stream)[0], "cudaStreamSynchronize")
            return bool(np.array_equal(back, want))

        be._copy(src, first.ctypes.data, nbytes, "HostToDevice")
        round_trip = holds(src, first)
        be.context = DeviceCopyContext(cudart, src, dst, nbytes)
        shape = (1, nbytes)
        be._execute(shape)  # the direct run, then the capture (recorded, not run)
        captured = shape in be._graphs and be.context.calls == 2
        direct = holds(dst, first)
        be._copy(src, second.ctypes.data, nbytes, "HostToDevice")
        be._execute(shape)  # the graph launch
        replay = holds(dst, second) and be.context.calls == 2
    finally:
        be.close()
    return {"bytes": nbytes, "round_trip_equal": round_trip, "graph_captured": captured and direct,
            "graph_replay_equal": replay, "closed": be.stream is None and not be._device and not be._graphs,
            "seconds": round(time.perf_counter() - t0, 3),
            "exercised": "edgekd.runtime.backends: _malloc, _check_cuda, TensorRTBackend._reserve/"
                         "_copy/_execute/_capture/_drop_graphs/close; engine_check.import_cudart, gpu_info",
            "note": "TensorRT's execute_async_v3 is a stand-in (DeviceCopyContext: one device-to-device "
                    "cudaMemcpyAsync); everything else is the runtime's code on the real cudart"}


def stage_latency(ctx: dict[str, Any]) -> dict[str, Any]:
    """torch eager latency (edgekd.bench.timer: warm-up, device sync per call, p50/p90) of the student (random init,
    its preset's head, channels_last and contiguous) and the teacher's image tower (random weights, built from its
    config), fp32 then fp16 weights and inputs (.half()), at batch 1 and a larger batch."""
    import torch

    from edgekd.bench.models import resolve_teacher
    from edgekd.bench.timer import Timer
    from edgekd.bench.worker import build_torch_module
    from edgekd.students.model import create_student
    from edgekd.students.registry import resolve_student

    cuda = ctx["device"] == "cuda"
    plan = LATENCY_TIMING[ctx["device"]]
    torch.backends.cudnn.benchmark = True  # fixed shapes, as a deployment has; the warm-up pays for the search
    sync = torch.cuda.synchronize if cuda else None
    timer = Timer(plan["warmup_s"], plan["min_time_s"], plan["min_iters"], sync=sync)
    teacher = resolve_teacher(ctx["teacher"], random_init=True)
    preset = resolve_student(ctx["student"])
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    torch.manual_seed(0)
    student = create_student(preset.arch, teacher.embed_dim or 512, ctx["img_size"], preset.head)
    rows += latency_rows(f"student {preset.arch}", student.eval().requires_grad_(False).to(ctx["device"]),
                         (ctx["img_size"], ctx["img_size"]), ("channels_last", "contiguous"), timer, ctx, plan)
    del student
    tower = build_torch_module(teacher, ctx["device"])
    rows += latency_rows(f"teacher {ctx['teacher']} image tower", tower, teacher.img_size, ("contiguous",), timer,
                         ctx, plan)
    return {"rows": rows, "speedup": student_speedup(rows), "seconds": round(time.perf_counter() - t0, 1),
            "cudnn_benchmark": True, "fp32_matmul_precision": torch.get_float32_matmul_precision(),
            "note": "torch eager, inference_mode; fp16 = .half() weights and inputs (norms included); cos_min = the "
                    "lowest cosine of an fp16 embedding to the fp32 one of the same input"}


def latency_rows(name: str, module: Any, hw: tuple[int, int], layouts: tuple[str, ...], timer: Any,
                 ctx: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per precision x layout x batch: p50/p90 ms, images/s at p50, and fp16's cosine to fp32."""
    import torch

    from edgekd.bench.teacher_precisions import precision_reason

    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, 3, *hw, generator=gen).to(ctx["device"]) for b in plan["batches"]}
    reference: dict[int, Any] = {}
    rows = []
    for precision in LATENCY_PRECISIONS:  # fp32 first: it gives the reference embeddings, then .half() in place
        # every precision runs on CUDA; on a CPU rehearsal the bench's own reason skips fp16
        reason = None if ctx["device"] == "cuda" else precision_reason("torch", precision, None, "cpu")
        if reason:
            rows.append({"model": name, "precision": precision, "status": "skipped", "reason": reason})
            continue
        dtype = torch.float16 if precision == "fp16" else torch.float32
        module.to(dtype)
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            module.to(memory_format=fmt)
            for batch, x32 in inputs.items():
                x = x32.to(dtype).contiguous(memory_format=fmt)
                rows.append(_latency_row(module, x, timer, {"model": name, "precision": precision, "layout": layout,
                                                            "batch": batch}, reference))
    return rows


def _latency_row(module: Any, x: Any, timer: Any, row: dict[str, Any], reference: dict[int, Any]) -> dict[str, Any]:
    import torch

    def infer() -> Any:
        with torch.inference_mode():
            return module(x)

    timing = timer.measure(infer)
    stats = timing.stats_ms()
    out = infer().float()
    if not bool(torch.isfinite(out).all()):
        return {**row, "status": "failed", "error": "non-finite embeddings", "p50_ms": round(stats["p50"], 3)}
    batch = row["batch"]
    cos = None
    if row["precision"] == "fp32":
        reference.setdefault(batch, out)
    elif batch in reference:
        cos = round(float(torch.nn.functional.cosine_similarity(out, reference[batch], dim=-1).min()), 5)
    return {**row, "status": "ok", "p50_ms": round(stats["p50"], 3), "p90_ms": round(stats["p90"], 3),
            "n": stats["n"], "images_per_s": round(batch * 1e3 / stats["p50"], 1),
            "first_call_ms": round(timing.first_call_s * 1e3, 1), "cos_min": cos}


def student_speedup(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per batch: the teacher's fastest p50 / the student's fastest p50 (each at its best precision and layout)."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        key = (r["model"].split()[0], r["batch"])
        if key not in best or r["p50_ms"] < best[key]["p50_ms"]:
            best[key] = r
    out: dict[str, Any] = {}
    for (role, batch), s in sorted(best.items()):
        t = best.get(("teacher", batch))
        if role == "student" and t:
            out[f"batch {batch}"] = {"ratio": round(t["p50_ms"] / s["p50_ms"], 1),
                                     "student": f"{s['precision']} {s['layout']} {s['p50_ms']} ms",
                                     "teacher": f"{t['precision']} {t['layout']} {t['p50_ms']} ms"}
    return out


def stage_tests(ctx: dict[str, Any]) -> dict[str, Any]:
    """pytest -m gpu over the test files that use the marker (collecting the others would import optional backends
    this host may lack, and a collection error there is no GPU failure); the JUnit XML gives the counts."""
    import xml.etree.ElementTree as ET

    work = Path(ctx["work"])
    xml = work / "tests-junit.xml"
    files = sorted(str(f) for f in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in f.read_text(errors="replace"))
    if not files:
        return {"error": "no test file under tests/ uses the gpu marker"}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *files]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=ctx["timeout"] - 10)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in counts}
        failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                  if c.find("failure") is not None or c.find("error") is not None]
    else:
        failed = []
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ok = r.returncode == 0 and counts["passed"] > 0
    out = {**counts, "files": [Path(f).name for f in files], "failed_tests": failed, "pytest_exit": r.returncode,
           "tail": (r.stdout + r.stderr)[-1500:]}
    if not ok:
        out["error"] = (f"pytest -m gpu exit {r.returncode}: {counts['passed']} passed, {counts['failures']} failed, "
                        f"{counts['errors']} errors, {counts['skipped']} skipped")
    return out


def stage_cache(ctx: dict[str, Any]) -> dict[str, Any]:
    """ViT-B-32 (random weights) over the training images on CUDA: images/s and GPU utilisation of the build."""
    from edgekd.teacher.cache import build_cache
    from edgekd.teacher.clip import load_teacher

    t = time.perf_counter()
    teacher = load_teacher(ctx["teacher"], pretrained=None, random_init=True, device=ctx["device"])
    load_s = time.perf_counter() - t
    with GpuSampler(nvml_index()) as sampler:
        _sync(ctx)
        t0 = time.perf_counter()
        cache = build_cache(ctx["images"]["train"], Path(ctx["work"]) / "cache", teacher, views=ctx["views"],
                            batch_size=ctx["cache_batch"], workers=ctx["workers"], progress=False, overwrite=True)
        _sync(ctx)
        t1 = time.perf_counter()
    n = int(len(cache.paths))
    return {"teacher": ctx["teacher"], "weights": "random", "images": n, "views": ctx["views"],
            "batch_size": ctx["cache_batch"], "workers": ctx["workers"], "teacher_load_s": round(load_s, 2),
            "seconds": round(t1 - t0, 2), "images_per_s": round(n * ctx["views"] / (t1 - t0), 1),
            "gpu": sampler.summary(t0, t1), "note": "seconds include the label pack's text embeddings"}


def _student_preprocess(ctx: dict[str, Any], cache: Any) -> Any:
    """The student's preprocessing as `edgekd distill` resolves it (edgekd.distill.loop.train)."""
    from edgekd.students.model import create_student
    from edgekd.students.registry import resolve_student

    preset = resolve_student(ctx["student"])
    student = create_student(preset.arch, cache.embed_dim, ctx["img_size"], preset.head, 0,
                             preprocess=cache.preprocess, teacher_id=cache.teacher_id)
    return student.cfg.get_preprocess()


def stage_loader(ctx: dict[str, Any]) -> dict[str, Any]:
    """The distillation data path alone (decode, render at 224, collate, pin, copy to the GPU), with the DataLoader
    settings of edgekd.distill.loop.train: the ceiling on distillation images/s that the CPU side allows."""
    import numpy as np
    import torch

    from edgekd.distill.data import CachedViewDataset, GlobalBatchSampler, worker_init
    from edgekd.teacher.cache import TeacherCache

    cache = TeacherCache.open(Path(ctx["work"]) / "cache")
    dataset = CachedViewDataset(cache, _student_preprocess(ctx, cache), 0)
    sampler = GlobalBatchSampler(np.flatnonzero(cache.valid), ctx["batch"], 0, 0, 1)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=ctx["workers"],
                                         persistent_workers=ctx["workers"] > 0, worker_init_fn=worker_init,
                                         pin_memory=ctx["device"] == "cuda")
    batches = min(ctx["steps"], LOADER_BATCHES)  # a rate, not a run: fewer batches than distillation's steps do
    want, seen, epoch = ctx["warmup_steps"] + batches, 0, 0
    t0 = None
    while seen < want:
        sampler.set_epoch(epoch, 0)
        for b in loader:
            b["pixels"].to(ctx["device"], non_blocking=True)
            seen += 1
            if seen == ctx["warmup_steps"]:
                _sync(ctx)
                t0 = time.perf_counter()
            if seen >= want:
                break
        epoch += 1
    _sync(ctx)
    seconds = time.perf_counter() - t0
    return {"batches": batches, "batch_size": ctx["batch"], "workers": ctx["workers"],
            "seconds": round(seconds, 2), "images_per_s": round(batches * ctx["batch"] / seconds, 1),
            "bytes_per_image": int(3 * ctx["img_size"] ** 2 * 4), "note": "float32 pixels leave the workers"}


def stage_distill(ctx: dict[str, Any]) -> dict[str, Any]:
    """mobilenetv4_conv_small at 224 from the cache for warm-up + `steps` optimizer steps (bf16 autocast)."""
    import torch

    from edgekd.distill.config import DistillConfig, recipe_loss_config
    from edgekd.distill.loop import train

    stamps: list[float] = []

    def on_step(step: int, parts: dict) -> bool:
        _sync(ctx)
        stamps.append(time.perf_counter())
        return False

    run = Path(ctx["work"]) / "run"
    shutil.rmtree(run, ignore_errors=True)
    total = ctx["warmup_steps"] + ctx["steps"]
    cfg = DistillConfig(cache=str(Path(ctx["work"]) / "cache"), student=ctx["student"], out=str(run),
                        img_size=ctx["img_size"], batch_size=ctx["batch"], epochs=10_000, max_steps=total,
                        workers=ctx["workers"], device=ctx["device"], log_every=10_000,
                        loss=recipe_loss_config("default"))
    cuda = ctx["device"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with GpuSampler(nvml_index()) as sampler:
        result = train(cfg, progress=False, on_step=on_step)
    t0, t1 = stamps[ctx["warmup_steps"] - 1], stamps[-1]
    steps = len(stamps) - ctx["warmup_steps"]
    intervals = sorted(b - a for a, b in zip(stamps[ctx["warmup_steps"] - 1:], stamps[ctx["warmup_steps"]:]))
    median = intervals[len(intervals) // 2]
    steps_per_epoch = int(cache_rows(cfg.cache) // ctx["batch"])
    return {"student": ctx["student"], "img_size": ctx["img_size"], "batch_size": ctx["batch"],
            "workers": ctx["workers"], "precision": f"{'bf16 autocast' if cuda else 'fp32'}, channels_last",
            "steps": steps,
            "seconds": round(t1 - t0, 2), "images_per_s": round(steps * ctx["batch"] / (t1 - t0), 1),
            "images_per_s_median_step": round(ctx["batch"] / median, 1), "steps_per_epoch": steps_per_epoch,
            "peak_memory_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
            "last_loss": result.last.get("loss"), "run_dir": str(run), "gpu": sampler.summary(t0, t1),
            "note": "images/s over the timed steps, epoch ends (checkpoint + loader restart) included; the median "
                    "step gives the rate between them"}


def _sync(ctx: dict[str, Any]) -> None:
    """Wait for the GPU before reading a clock (timings without it measure kernel launches, not work)."""
    if ctx["device"] == "cuda":
        import torch

        torch.cuda.synchronize()


def cache_rows(cache_dir: str) -> int:
    from edgekd.teacher.cache import TeacherCache

    return int(TeacherCache.open(cache_dir).valid.sum())


def stage_onnx(ctx: dict[str, Any]) -> dict[str, Any]:
    """Export the distilled student to ONNX fp32 (gated on CPU), then the same gate on onnxruntime's CUDA EP."""
    from edgekd.export.calibration import load_image_set
    from edgekd.export.parity import GateCriteria, check_parity
    from edgekd.export.pipeline import export_bundle
    from edgekd.runtime.backends import backend_unavailable_reason
    from edgekd.students.io import load_student, load_student_config

    run, bundle = Path(ctx["work"]) / "run", Path(ctx["work"]) / "bundle-onnx"
    t = time.perf_counter()
    export_bundle(run, "onnx", "fp32", bundle, val_dir=ctx["images"]["val"], overwrite=True)
    cpu = json.loads((bundle / "parity.json").read_text())
    out: dict[str, Any] = {"export_s": round(time.perf_counter() - t, 1), "cpu_gate": _gate_row(cpu)}
    reason = backend_unavailable_reason("ort-cuda")
    if reason:
        return {**out, "status": "skipped", "reason": f"ort-cuda: {reason}"}
    pp = load_student_config(run).get_preprocess()
    val = load_image_set(ctx["images"]["val"], pp, None, "--val")
    pixels = pp.normalize(val.frames)
    report = check_parity(load_student(run).eval(), bundle / "model.onnx", "ort-cuda", pixels, pixels,
                          GateCriteria.default("fp32"))
    out["cuda_gate"] = _gate_row(report)
    if not report["passed"]:
        out["error"] = "onnxruntime CUDA EP parity failed: " + "; ".join(report["reasons"])
    return out


def _gate_row(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("cosine_mean", "cosine_p01", "cosine_min", "n_images", "images")
    return {"passed": report.get("passed"), "backend": report.get("backend"),
            **{k: report["metrics"][k] for k in keep if k in report.get("metrics", {})}}


def stage_tensorrt(ctx: dict[str, Any]) -> dict[str, Any]:
    """TensorRT fp16 engine of the distilled student through `edgekd export`, when tensorrt is importable."""
    from edgekd._optional import installed_version, is_available

    if not is_available("tensorrt"):
        return {"status": "skipped", "reason": "tensorrt is not importable on this host"}
    from edgekd.export.pipeline import export_bundle

    bundle = Path(ctx["work"]) / "bundle-trt"
    export_bundle(Path(ctx["work"]) / "run", "tensorrt", "fp16", bundle, val_dir=ctx["images"]["val"],
                  overwrite=True)
    report = json.loads((bundle / "parity.json").read_text())
    out = {"tensorrt": installed_version("tensorrt", "tensorrt-cu12", "tensorrt_cu12"), "gate": _gate_row(report)}
    if not report.get("passed"):
        out["error"] = "TensorRT fp16 parity failed: " + "; ".join(report.get("reasons", []))
    return out


STAGE_FUNCS = {name: globals()[f"stage_{name}"] for name in STAGES}


def run_stage_here(name: str, ctx_file: Path) -> int:
    """Child side: run one stage and write its JSON (an exception becomes an error with its one-line message)."""
    from edgekd._io import atomic_write_json

    ctx = json.loads(ctx_file.read_text())
    ctx["timeout"] = int(os.environ.get("GPU_CHECK_STAGE_TIMEOUT", STAGE_TIMEOUT[name]))
    try:
        res = STAGE_FUNCS[name](ctx)
    except Exception as e:  # recorded in the results, never hidden: the parent marks the stage failed
        import traceback

        traceback.print_exc()
        res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    atomic_write_json(Path(ctx["work"]) / f"{name}.json", res)
    return 0


# ---------------------------------------------------------------- parent: orchestrate, summarise, write

def run_stage(name: str, ctx_file: Path, work: Path, deadline: float, failed: set[str], scale: float = 1
              ) -> dict[str, Any]:
    """Parent side: the stage in a child process, bounded by its timeout (x scale) and the overall deadline."""
    need = NEEDS.get(name)
    if need in failed:
        return {"status": "skipped", "reason": f"needs the {need} stage, which did not succeed"}
    left = deadline - time.monotonic()
    if left < MIN_STAGE_SECONDS:
        return {"status": "failed", "error": f"not run: {left:.0f} s of the time budget left"}
    timeout = int(min(STAGE_TIMEOUT[name] * scale, left))
    (work / f"{name}.json").unlink(missing_ok=True)
    t = time.monotonic()
    with open(work / f"{name}.log", "w") as log:
        env = {**os.environ, "GPU_CHECK_STAGE_TIMEOUT": str(timeout), "PYTHONUNBUFFERED": "1"}
        try:
            rc = subprocess.run([sys.executable, __file__, "stage", name, "--ctx", str(ctx_file)], stdout=log,
                                stderr=subprocess.STDOUT, timeout=timeout, env=env, cwd=ROOT).returncode
        except subprocess.TimeoutExpired:
            rc = None
    seconds = round(time.monotonic() - t, 1)
    res_file = work / f"{name}.json"
    res = json.loads(res_file.read_text()) if res_file.is_file() else {}
    if rc is None:
        res["error"] = f"timed out after {timeout} s"
    elif not res:
        res["error"] = f"the stage process exited with status {rc} before writing its result"
    status = res.pop("status", None) or ("failed" if "error" in res else "ok")
    if status == "failed":
        res["log_tail"] = (work / f"{name}.log").read_text(errors="replace")[-1500:]
    return {"status": status, "wall_s": seconds, **res}


def one_line(name: str, r: dict[str, Any]) -> str:
    head = f"[{name}] {r['status']}" + (f": {r['reason']}" if r["status"] == "skipped" and "reason" in r else "")
    bits = [head, f"{r.get('wall_s', 0)} s"]
    if "images_per_s" in r:
        bits.append(f"{r['images_per_s']:,.0f} img/s")
    util = r.get("gpu", {}).get("util_mean")
    if util is not None:
        bits.append(f"GPU util {util:.0f}%")
    if r.get("peak_memory_allocated_mib") is not None:
        bits.append(f"peak {r['peak_memory_allocated_mib']} MiB")
    if "passed" in r and name == "tests":
        bits.append(f"{r['passed']} passed, {r.get('skipped', 0)} skipped")
    if name in ("cudart", "latency") and r["status"] == "ok":
        bits.append(_detail(name, r))
    if "error" in r:
        bits.append(r["error"])
    if "reason" in r and r["status"] != "skipped":
        bits.append(r["reason"])
    return ", ".join(bits)


def verdict_on_data_path(stages: dict[str, Any]) -> str:
    """Why distillation does or does not reach the utilisation target, from the measured rates."""
    d, ld = stages.get("distill", {}), stages.get("loader", {})
    util = d.get("gpu", {}).get("util_mean")
    if d.get("status") != "ok" or util is None:
        return "not measured (the distill stage or the utilisation sampling did not succeed)"
    if util >= TARGET_UTIL:
        return f"GPU utilisation {util:.0f}% >= {TARGET_UTIL:.0f}%: the data path keeps up"
    msg = f"GPU utilisation {util:.0f}% < {TARGET_UTIL:.0f}%"
    if ld.get("status") == "ok":
        ratio = d["images_per_s"] / ld["images_per_s"]
        if ratio > 0.8:
            return (f"{msg}: limited by the data path: the loader alone delivers {ld['images_per_s']:,.0f} img/s "
                    f"with {ld['workers']} workers and training reaches {d['images_per_s']:,.0f} ({ratio:.0%} of it); "
                    f"each image leaves a worker as {ld['bytes_per_image'] / 2**20:.2f} MiB of float32 pixels "
                    "(decode + resize in PIL, collate, pin, copy)")
        return (f"{msg}, although the loader alone delivers {ld['images_per_s']:,.0f} img/s against "
                f"{d['images_per_s']:,.0f} in training: the step itself leaves the GPU idle (a host sync per step for "
                "the loop's finite-loss check and this check's timing, small kernels of a small model, epoch ends "
                f"every {d['steps_per_epoch']} steps at {d['batch_size']} images)")
    return f"{msg}; the loader stage did not succeed, so the cause is not separated"


def write_results(out: Path, doc: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))
    from edgekd._io import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", doc)
    atomic_write_text(out / "results.md", render_markdown(doc))


def render_markdown(doc: dict[str, Any]) -> str:
    e = doc["stages"].get("environment", {})
    lines = ["# GPU check (`benchmarks/gpu_check.sh`)", "",
             f"{doc['created']}: {e.get('gpu_name', doc.get('gpu', '?'))} ({e.get('gpu_memory_gib', '?')} GiB, "
             f"compute {e.get('compute_capability', '?')}), driver {e.get('driver', '?')}, torch {e.get('torch', '?')}"
             f" (CUDA {e.get('cuda', '?')}, cuDNN {e.get('cudnn', '?')}), host CPU {e.get('host_cpu', '?')} "
             f"({e.get('cpu_cores_usable', '?')} cores usable), Python {e.get('python', '?')}.", "",
             f"Overall: **{'passed' if doc['ok'] else 'FAILED'}**. Settings: {json.dumps(doc['settings'])}", "",
             "| stage | status | s | images/s | GPU util mean % (p50, min) | peak / used memory | detail |",
             "| --- | --- | ---: | ---: | --- | --- | --- |"]
    for name, r in doc["stages"].items():
        g = r.get("gpu", {})
        util = f"{g['util_mean']} ({g['util_p50']}, {g['util_min']}), {g['samples']} samples" if "util_mean" in g \
            else g.get("note", "")
        mem = (f"{r['peak_memory_allocated_mib']} MiB allocated" if r.get("peak_memory_allocated_mib") else
               f"{g['memory_used_max_mib']} MiB used" if "memory_used_max_mib" in g else "")
        detail = "; ".join(str(x) for x in (r.get("error"), r.get("reason"), _detail(name, r)) if x)
        lines.append(f"| {name} | {r['status']} | {r.get('wall_s', '')} | {r.get('images_per_s', '')} | {util} | "
                     f"{mem} | {str(detail).replace('|', '/')} |")
    lines += ["", f"Data path: {doc['data_path']}", ""]
    lat = doc["stages"].get("latency", {})
    if lat.get("rows"):
        lines += latency_markdown(lat)
    return "\n".join(lines)


def latency_markdown(r: dict[str, Any]) -> list[str]:
    lines = ["## Torch eager latency (random weights)", "", r.get("note", ""), "",
             "| model | precision | layout | batch | p50 ms | p90 ms | images/s at p50 | fp16 cos min vs fp32 |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in r["rows"]:
        if row["status"] != "ok":
            why = row.get("reason") or row.get("error", "")
            lines.append(f"| {row['model']} | {row['precision']} | {row.get('layout', '')} | {row.get('batch', '')} "
                         f"| {row['status']}: {why} | | | |")
            continue
        lines.append(f"| {row['model']} | {row['precision']} | {row['layout']} | {row['batch']} | {row['p50_ms']} | "
                     f"{row['p90_ms']} | {row['images_per_s']:,.0f} | {row.get('cos_min') or ''} |")
    for batch, v in r.get("speedup", {}).items():
        lines.append(f"\nAt {batch} the student is {v['ratio']}x faster than the teacher, each at its fastest here "
                     f"(student {v['student']}, teacher {v['teacher']}).")
    return lines + [""]


def _detail(name: str, r: dict[str, Any]) -> str:
    if name == "tests" and "error" not in r:
        return f"{r.get('passed')} passed, {r.get('skipped')} skipped, {r.get('failures')} failed"
    if name == "distill" and "student" in r:
        return (f"{r['student']} @ {r['img_size']}, {r.get('precision', '?')}, batch {r['batch_size']}, "
                f"{r['steps']} steps, median-step rate "
                f"{r['images_per_s_median_step']} img/s, last loss {r['last_loss']:.4g}")
    if name == "onnx":
        gates = {k: r[k] for k in ("cpu_gate", "cuda_gate") if k in r}
        return "; ".join(f"{k}: passed={v['passed']}, cos mean {v.get('cosine_mean')}, min {v.get('cosine_min')}"
                         for k, v in gates.items())
    if name == "cache" and "teacher" in r:
        return f"{r['teacher']} ({r['weights']} weights), {r['images']} images x {r['views']} views"
    if name == "cudart" and "round_trip_equal" in r:
        gpu = (r.get("gpu") or {}).get("name", "?")
        return (f"{r['binding']} {r.get('cuda_bindings')} (runtime {r.get('runtime_version')}, driver "
                f"{r.get('driver_version')}) on {gpu}: memcpy round trip {_yes(r['round_trip_equal'])}, graph capture "
                f"{_yes(r['graph_captured'])}, replay {_yes(r['graph_replay_equal'])}, close {_yes(r['closed'])}")
    if name == "latency" and "rows" in r:
        ok = [x for x in r["rows"] if x["status"] == "ok"]
        best = "; ".join(f"{b}: {v['ratio']}x" for b, v in r.get("speedup", {}).items())
        return f"{len(ok)} of {len(r['rows'])} rows timed (table below); student vs teacher p50, {best or 'n/a'}"
    return ""


def _yes(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def install_record(status: str, log_file: str | None) -> dict[str, Any]:
    """gpu_check.sh's install of edgekd: ok (editable, deps from carried wheels), fallback (PYTHONPATH) or failed."""
    tail = Path(log_file).read_text(errors="replace")[-1500:] if log_file and Path(log_file).is_file() else ""
    how = {"ok": "pip install --no-index --find-links .gpucheck/wheels -e '.[torch,onnx]'",
           "fallback": "the editable install failed; the checkout and the carried wheels through PYTHONPATH"}
    if status == "failed":
        return {"status": "failed", "error": "could not install edgekd or the carried wheels", "log_tail": tail}
    return {"status": "ok", "how": how.get(status, status), **({"log_tail": tail} if status != "ok" else {})}


def run_all(args: argparse.Namespace) -> int:
    import datetime as _dt

    ok, gpu = detect()
    if args.device == "cpu":  # a rehearsal of the stages, for developing this script without a GPU
        ok, gpu = True, "none (CPU rehearsal: no GPU figure is measured)"
    if not ok:
        print(f"gpu_check: no CUDA GPU on this host ({gpu}); nothing to check")
        return 0
    start = time.monotonic()
    deadline = start + args.budget
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    workers = args.workers or max(1, min(12, (os.cpu_count() or 2) - 2))
    settings = {"device": args.device, "teacher": args.teacher, "views": args.views, "cache_batch": 256,
                "student": "mobilenetv4_conv_small",
                "img_size": 224, "batch": args.batch_size, "steps": args.steps, "warmup_steps": args.warmup_steps,
                "workers": workers}
    stages: dict[str, Any] = {}
    if args.install_status:
        stages["install"] = install_record(args.install_status, args.install_log)
    try:
        images = resolve_images(args, work)
    except (OSError, tarfile.TarError) as e:
        images = None
        stages["images"] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    ctx = {**settings, "work": str(work), "images": {k: str(v) for k, v in (images or {}).items()}}
    ctx_file = work / "ctx.json"
    ctx_file.write_text(json.dumps(ctx))
    failed: set[str] = set() if images else {"cache"}
    for name in STAGES:
        if images is None and name in NEEDS_IMAGES:
            stages[name] = {"status": "skipped", "reason": "no images (see the images stage)"}
            continue
        stages[name] = run_stage(name, ctx_file, work, deadline, failed, 1 if args.device == "cuda" else 4)
        if stages[name]["status"] != "ok":
            failed.add(name)
        print(one_line(name, stages[name]), flush=True)
    doc = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "gpu": gpu,
           "ok": not any(r["status"] == "failed" for r in stages.values()), "settings": settings,
           "images": ctx["images"], "total_s": round(time.monotonic() - start, 1), "stages": stages,
           "data_path": verdict_on_data_path(stages)}
    write_results(Path(args.out), doc)
    print(f"gpu_check: {'passed' if doc['ok'] else 'FAILED'} in {doc['total_s']} s; {doc['data_path']}; "
          f"results in {args.out}")
    return 0 if doc["ok"] else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("detect", help="exit 0 when torch sees a CUDA GPU, else say why in one line and exit 10")
    prep = sub.add_parser("prepare", help="the carried wheels and 2,000 training + 300 held-out images into "
                          ".gpucheck/, within the carry limit")
    prep.add_argument("--carry", default=str(CARRY_DIR), help=argparse.SUPPRESS)
    prep.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                      help="pip download the wheels of CARRIED_WHEELS (--no-download: check the ones already there)")
    run = sub.add_parser("run", help="every stage, then results.json + results.md")
    for q in (prep, run):
        q.add_argument("--assets", default=os.environ.get("EDGEKD_ASSETS", str(ROOT.parent / "shared" / "assets")),
                       help="folder holding cifar10-jpg.tar.gz [default: $EDGEKD_ASSETS or ../shared/assets]")
    run.add_argument("--data", default=None, help="training images (ImageFolder) [default: see the docstring]")
    run.add_argument("--val", default=None, help="held-out images for the parity gates (>= 200)")
    run.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "edgekd-gpu-check"))
    run.add_argument("--out", default=None, help="results folder [default: benchmarks/results/gpu]")
    run.add_argument("--budget", type=float, default=RUN_BUDGET_S, help="seconds for all stages together")
    run.add_argument("--steps", type=int, default=300, help="timed distillation steps (after --warmup-steps)")
    run.add_argument("--warmup-steps", type=int, default=10)
    run.add_argument("--batch-size", type=int, default=128)
    run.add_argument("--teacher", default="ViT-B-32", help="open_clip teacher, random weights (--random-teacher)")
    run.add_argument("--views", type=int, default=1, help="teacher views per image in the cache")
    run.add_argument("--workers", type=int, default=0, help="DataLoader workers [default: cores - 2, at most 12]")
    run.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                     help="cpu: rehearse the stages without a GPU (needs --out; small --data/--val advised)")
    run.add_argument("--install-status", choices=("ok", "fallback", "failed"), default=None, help=argparse.SUPPRESS)
    run.add_argument("--install-log", default=None, help=argparse.SUPPRESS)
    st = sub.add_parser("stage", help=argparse.SUPPRESS)
    st.add_argument("name", choices=STAGES)
    st.add_argument("--ctx", required=True, type=Path)
    args = p.parse_args(argv)
    if args.cmd == "run" and (args.steps < 2 or args.warmup_steps < 1):
        p.error("--steps must be >= 2 and --warmup-steps >= 1")
    if args.cmd == "run" and args.device == "cpu" and args.out is None:
        p.error("--device cpu rehearses the stages: pass --out DIR (benchmarks/results/gpu holds GPU figures only)")
    if args.cmd == "run" and args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / "gpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cmd == "detect":
        ok, what = detect()
        if not ok:
            print(f"gpu_check: no CUDA GPU on this host ({what}); nothing to check")
        return 0 if ok else NO_GPU_EXIT
    if args.cmd == "prepare":
        try:
            doc = prepare_carry(Path(args.carry), Path(args.assets), download_wheels if args.download else None)
        except (CarryError, OSError, tarfile.TarError) as e:
            print(f"gpu_check prepare: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(f"gpu_check prepare: {args.carry}: {carry_summary(doc)}")
        return 0
    if args.cmd == "stage":
        return run_stage_here(args.name, args.ctx)
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
