"""The GPU path, proven on a CUDA host: gpu-marked tests, a ViT-B-32 teacher cache, distillation speed, ORT CUDA parity.

Driven by benchmarks/gpu_check.sh (which installs edgekd from the checkout first); the subcommands are:

    python benchmarks/gpu_check.py detect      # exit 0 when torch sees a CUDA GPU, else one line and exit 10
    python benchmarks/gpu_check.py prepare     # (any host) 2,000 + 300 CIFAR-10 images into .gpucheck/data
    python benchmarks/gpu_check.py run [--budget S] [--steps N] [--out benchmarks/results/gpu]

`run` executes each stage in its own process with a timeout (a crash or hang in one stage is recorded and the others
still run): environment, the `gpu`-marked tests, a ViT-B-32 cache (random weights) of the training images, the
distillation data path alone, mobilenetv4_conv_small distilled at 224 for a fixed number of steps, ONNX export with
onnxruntime's CUDA EP parity, TensorRT when importable. GPU utilisation is sampled through NVML (nvidia-ml-py, else
`nvidia-smi -lms`). It writes results.json and results.md to --out and exits 1 when any stage failed.
Images: --data/--val, else $EDGEKD_GPU_CHECK_DATA/{train,val}, else .gpucheck/data/{train,val} (made by `prepare`),
else a subset unpacked from --assets (default $EDGEKD_ASSETS or ../shared/assets beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
STAGES = ("environment", "tests", "cache", "loader", "distill", "onnx", "tensorrt")
STAGE_TIMEOUT = {"environment": 60, "tests": 150, "cache": 150, "loader": 90, "distill": 150, "onnx": 150,
                 "tensorrt": 120}
NEEDS = {"loader": "cache", "distill": "cache", "onnx": "distill", "tensorrt": "distill"}
MIN_STAGE_SECONDS = 20
LOADER_BATCHES = 100
TARGET_UTIL = 80.0


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
            "python": platform.python_version(), "packages": env["packages"], "os": env["os"],
            "onnxruntime_providers": _ort_providers()}


def _ort_providers() -> list[str] | str:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return f"onnxruntime not importable ({e})"
    return ort.get_available_providers()


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
    bits = [f"[{name}] {r['status']}", f"{r.get('wall_s', 0)} s"]
    if "images_per_s" in r:
        bits.append(f"{r['images_per_s']:,.0f} img/s")
    util = r.get("gpu", {}).get("util_mean")
    if util is not None:
        bits.append(f"GPU util {util:.0f}%")
    if r.get("peak_memory_allocated_mib") is not None:
        bits.append(f"peak {r['peak_memory_allocated_mib']} MiB")
    if "passed" in r and name == "tests":
        bits.append(f"{r['passed']} passed, {r.get('skipped', 0)} skipped")
    for key in ("error", "reason"):
        if key in r:
            bits.append(r[key])
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
    return "\n".join(lines)


def _detail(name: str, r: dict[str, Any]) -> str:
    if name == "tests" and "error" not in r:
        return f"{r.get('passed')} passed, {r.get('skipped')} skipped, {r.get('failures')} failed"
    if name == "distill" and "student" in r:
        return (f"{r['student']} @ {r['img_size']}, batch {r['batch_size']}, {r['steps']} steps, median-step rate "
                f"{r['images_per_s_median_step']} img/s, last loss {r['last_loss']:.4g}")
    if name == "onnx":
        gates = {k: r[k] for k in ("cpu_gate", "cuda_gate") if k in r}
        return "; ".join(f"{k}: passed={v['passed']}, cos mean {v.get('cosine_mean')}, min {v.get('cosine_min')}"
                         for k, v in gates.items())
    if name == "cache" and "teacher" in r:
        return f"{r['teacher']} ({r['weights']} weights), {r['images']} images x {r['views']} views"
    return ""


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
        if images is None and name in ("cache", "onnx", "tensorrt"):
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
    prep = sub.add_parser("prepare", help="unpack the 2,000 training + 300 held-out images into .gpucheck/data")
    run = sub.add_parser("run", help="every stage, then results.json + results.md")
    for q in (prep, run):
        q.add_argument("--assets", default=os.environ.get("EDGEKD_ASSETS", str(ROOT.parent / "shared" / "assets")),
                       help="folder holding cifar10-jpg.tar.gz [default: $EDGEKD_ASSETS or ../shared/assets]")
    run.add_argument("--data", default=None, help="training images (ImageFolder) [default: see the docstring]")
    run.add_argument("--val", default=None, help="held-out images for the parity gates (>= 200)")
    run.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "edgekd-gpu-check"))
    run.add_argument("--out", default=None, help="results folder [default: benchmarks/results/gpu]")
    run.add_argument("--budget", type=float, default=450, help="seconds for all stages together")
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
        found = unpack_subset(Path(args.assets) / "cifar10-jpg.tar.gz", CARRY_DIR / "data")
        print(" ".join(f"{k}={v} ({sum(1 for _ in v.rglob('*.jpg'))} images)" for k, v in found.items()))
        return 0
    if args.cmd == "stage":
        return run_stage_here(args.name, args.ctx)
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
