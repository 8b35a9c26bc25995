"""Plan and run a benchmark: one subprocess per measurement (model x backend x threads x batch), so memory, thread
pools and engine state never leak from one row into the next. Backends that are not installed or cannot run the
model's format become 'skipped' rows with the reason; a measurement that raises or crashes becomes a 'failed' row
with its error."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, read_json, sha256_json
from edgekd.bench.env import collect_environment, usable_cores
from edgekd.bench.models import ALL_BACKENDS, ModelSpec
from edgekd.bench.teacher_precisions import TEACHER_PRECISIONS, precision_reason, teacher_variants

log = logging.getLogger(__name__)

SCHEMA = "edgekd.bench"
VERSION = 1
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and for how long (the `edgekd bench` options)."""

    backends: tuple[str, ...] | None = None  # None: every backend the model's format allows
    threads: tuple[int, ...] = ()  # () -> all usable cores
    batches: tuple[int, ...] = (1,)
    warmup_s: float = 2.0
    min_time_s: float = 5.0
    min_iters: int = 10
    throughput_s: float | None = None  # pipelined loop length; None -> min_time_s / 2
    device: str = "auto"  # torch device (auto = cuda when visible)
    e2e: bool = False
    power: bool = True  # sample tegrastats when present
    timeout_s: float = 1800.0  # per measurement
    # OpenMP threads that spin (ACTIVE) wait for descheduled peers at every op barrier when the host is busy, which
    # inflated torch eager latency ~20x on a shared 2-core machine; PASSIVE (sleep) is the conservative default.
    # Only torch uses OpenMP here (onnxruntime and OpenVINO have their own thread pools). The caller's own
    # OMP_WAIT_POLICY environment variable wins.
    omp_wait_policy: str = "PASSIVE"
    teacher_precisions: tuple[str, ...] = TEACHER_PRECISIONS  # each one the backend offers here (teacher_precisions)
    calib: str | None = None  # images that calibrate the INT8 teacher
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.threads:
            object.__setattr__(self, "threads", (usable_cores(),))
        if not self.batches:
            raise EdgekdError("--batch: give at least one batch size")
        bad = [b for b in self.batches if b < 1]
        if bad:
            raise EdgekdError(f"--batch {bad[0]}: batch sizes must be >= 1")
        cores = usable_cores()
        for t in self.threads:
            if t < 1:
                raise EdgekdError(f"--threads {t}: thread counts must be >= 1")
            if t > cores:
                raise EdgekdError(f"--threads {t}: this machine has only {cores} usable CPU core(s); "
                                  f"use at most --threads {cores}")
        for b in self.backends or ():
            if b not in ALL_BACKENDS:
                raise EdgekdError(f"--backend {b!r} is not a backend; use one of {', '.join(ALL_BACKENDS)}")
        if self.warmup_s < 0 or self.min_time_s < 0:
            raise EdgekdError("--warmup-s and --min-time-s must be >= 0")
        if self.omp_wait_policy.upper() not in ("PASSIVE", "ACTIVE"):
            raise EdgekdError(f"--omp-wait-policy {self.omp_wait_policy!r}: use PASSIVE or ACTIVE")
        if self.min_iters < 1:
            raise EdgekdError(f"--min-iters {self.min_iters}: must be >= 1")
        bad = [p for p in self.teacher_precisions if p not in TEACHER_PRECISIONS]
        if bad or not self.teacher_precisions:
            raise EdgekdError(f"--teacher-precisions {','.join(bad)}: use some of {', '.join(TEACHER_PRECISIONS)}")
        if self.calib is not None and not Path(self.calib).is_dir():
            raise EdgekdError(f"--calib {self.calib}: no such folder of calibration images")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Job:
    model: ModelSpec
    backend: str
    batch: int | None
    threads: int | None
    mode: str = "model"
    skip: str | None = None  # reason, when the job is not run

    def key(self) -> str:
        return f"{self.model.name} {self.backend} b{self.batch} t{self.threads} {self.mode}"


def backend_reason(model: ModelSpec, backend: str) -> str | None:
    """None when `backend` can run `model` here, else why not (format first, then installation)."""
    reason = model.format_reason(backend)
    if reason:
        return reason
    if backend == "torch":
        from edgekd._optional import is_available

        return None if is_available("torch") else "torch is not installed (pip install torch)"
    from edgekd.runtime.backends import backend_unavailable_reason

    return backend_unavailable_reason(backend)


def plan(models: list[ModelSpec], cfg: BenchConfig) -> list[Job]:
    """Every (model, backend, threads, batch) to run, plus one skipped job per unusable (model, backend). A teacher
    is planned in every precision of cfg.teacher_precisions that the backend offers on this machine."""
    jobs = []
    for model in models:
        variants = teacher_variants(model, cfg.teacher_precisions) if model.is_teacher else [model]
        for backend in cfg.backends or model.backends():
            reason = backend_reason(model, backend)
            if reason:  # the backend cannot run the model at all: one skipped row, not one per precision
                jobs.append(Job(variants[0], backend, None, None, skip=reason))
                continue
            for variant in variants:
                why = precision_reason(backend, variant.precision, cfg.calib, cfg.device) if variant.is_teacher \
                    else None
                if why:
                    jobs.append(Job(variant, backend, None, None, skip=why))
                    continue
                for threads in cfg.threads:
                    jobs += [Job(variant, backend, b, threads) for b in cfg.batches]
                    # students: the runtime (numpy + an engine); teachers: their own bicubic resize + the model, in
                    # every backend and precision, so the e2e ratio is against the teacher a user would run
                    if cfg.e2e and (variant.is_teacher or backend != "torch"):
                        jobs.append(Job(variant, backend, 1, threads, mode="e2e"))
    return jobs


def run_bench(models: list[ModelSpec], cfg: BenchConfig, work_dir: str | os.PathLike,
              progress: bool = True) -> dict[str, Any]:
    """Run all jobs and return the results document (schema edgekd.bench v1). ONNX exports of torch models (for
    the engine backends) are written to `work_dir`/onnx and reused when the same model asks again."""
    from tqdm.auto import tqdm

    jobs = plan(models, cfg)
    onnx_files: dict[str, dict[str, Any]] = {}
    rows = []
    bar = tqdm(jobs, desc="bench", unit="run", disable=not progress)
    for job in bar:
        bar.set_postfix_str(job.key()[:60])
        row = base_row(job)
        if job.skip:
            row.update(status="skipped", reason=job.skip)
        else:
            extra: dict[str, Any] = {}
            if job.model.is_torch and job.backend != "torch":
                exp = ensure_onnx(job.model, Path(work_dir) / "onnx", onnx_files, cfg.timeout_s)
                if exp["status"] != "ok":
                    row.update(status="failed", reason=f"ONNX export failed: {exp['reason']}")
                    rows.append(row)
                    continue
                extra["onnx"] = exp["onnx"]
                row["file"] = exp["onnx"]
                if job.model.is_teacher and job.model.precision == "int8":
                    q = ensure_teacher_int8(job.model, job.backend, exp["onnx"], Path(work_dir) / "onnx", onnx_files,
                                            cfg)
                    if q["status"] != "ok":
                        row.update(status="failed", reason=f"INT8 teacher export failed: {q['reason']}")
                        rows.append(row)
                        continue
                    extra["engine_file"] = row["file"] = q["file"]
            spec = {"task": "measure", "model": job.model.to_dict(), "backend": job.backend, "batch": job.batch,
                    "threads": job.threads, "warmup_s": cfg.warmup_s, "min_time_s": cfg.min_time_s,
                    "min_iters": cfg.min_iters, "throughput_s": cfg.throughput_s, "device": cfg.device,
                    "mode": job.mode, "power": cfg.power, **extra}
            if spec["throughput_s"] is None:
                spec["throughput_s"] = cfg.min_time_s / 2
            row.update(run_worker(spec, job.threads, cfg.timeout_s, cfg.omp_wait_policy))
        log.info("%s: %s", job.key(), _summary(row))
        rows.append(row)
    return {"schema": SCHEMA, "version": VERSION,
            "environment": collect_environment(list(cfg.threads)),
            "config": {**cfg.to_dict(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", cfg.omp_wait_policy)},
            "rows": rows}


def base_row(job: Job) -> dict[str, Any]:
    m = job.model
    precision = m.precision if not m.is_torch or m.is_teacher else "fp32"
    return {"model": m.name, "kind": m.kind, "teacher": m.is_teacher, "arch": m.extra.get("arch"),
            "backend": job.backend, "precision": precision, "batch": job.batch, "threads": job.threads,
            "img_size": list(m.img_size), "frame_size": list(m.frame_size) if m.frame_size else None,
            "embed_dim": m.embed_dim, "mode": job.mode, "status": "pending",
            "reason": None, "source": m.source, "file": m.file, "eval": m.eval, "parity": m.extra.get("parity"),
            "latency_ms": None, "throughput_ips": None, "peak_rss_mb": None, "peak_gpu_mb": None, "load_s": None,
            "model_mb": None}


def ensure_onnx(model: ModelSpec, out_dir: Path, memo: dict[str, dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    """Export a torch model to ONNX once (in a subprocess); reuse an export of the identical spec from disk."""
    key = sha256_json(model.to_dict())[:12]
    if key in memo:
        return memo[key]
    path = out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', model.name)}-{key}.onnx"
    stamp = path.with_suffix(".json")
    if path.is_file() and stamp.is_file():
        memo[key] = read_json(stamp)
        return memo[key]
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to %s", model.name, path)
    result = run_worker({"task": "export", "model": model.to_dict(), "onnx": str(path)}, None, timeout_s)
    if result["status"] == "ok":
        atomic_write_json(stamp, {**result, "model": model.to_dict()})
    memo[key] = result
    return result


def ensure_teacher_int8(model: ModelSpec, backend: str, onnx: str, out_dir: Path,
                        memo: dict[str, dict[str, Any]], cfg: BenchConfig) -> dict[str, Any]:
    """The teacher's INT8 model for `backend` through edgekd's own export path (in a subprocess), once per run."""
    key = f"int8-{backend}-" + sha256_json({"model": model.to_dict(), "calib": cfg.calib})[:12]
    if key in memo:
        return memo[key]
    target = {"onnxruntime": "onnx", "openvino": "openvino"}[backend]
    folder = out_dir / key
    stamp = folder / "quantized.json"
    if stamp.is_file():
        memo[key] = read_json(stamp)
        return memo[key]
    folder.mkdir(parents=True, exist_ok=True)
    log.info("quantising %s to INT8 for %s (calibration: %s)", model.name, backend, cfg.calib)
    result = run_worker({"task": "quantize", "model": model.to_dict(), "onnx": onnx, "target": target,
                         "calib": cfg.calib, "out_dir": str(folder)}, None, cfg.timeout_s)
    if result["status"] == "ok":
        atomic_write_json(stamp, result)
    memo[key] = result
    return result


def run_worker(spec: dict[str, Any], threads: int | None, timeout_s: float = 1800.0,
               omp_wait_policy: str | None = None) -> dict[str, Any]:
    """Run one spec in `python -m edgekd.bench.worker`; -> its result dict, or a 'failed' one if the process
    crashed, was killed or timed out (with the last lines of its stderr)."""
    env = dict(os.environ)
    if threads:
        env.update({k: str(threads) for k in THREAD_ENV})
    if omp_wait_policy:
        env.setdefault("OMP_WAIT_POLICY", omp_wait_policy.upper())
    env.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "edgekd.bench.worker", str(spec_path), str(out_path)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
        wall = time.perf_counter() - t0
        if out_path.is_file():
            result = read_json(out_path)
            result["worker_s"] = wall
            return result
    return {"status": "failed", "reason": _crash_reason(proc.returncode, proc.stderr), "worker_s": wall}


def _crash_reason(rc: int, stderr: str) -> str:
    lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
    tail = lines[-1].strip()[:300] if lines else "no output"
    if rc < 0:
        from edgekd.runtime.isolated import signal_name

        sig = signal_name(rc)
        hint = {"SIGKILL": " (out of memory?)", "SIGSEGV": " (the engine crashed on this CPU; docs/export.md, 'INT8 "
                "and the CPU')", "SIGABRT": " (the engine aborted)"}.get(sig, "")
        return f"worker killed by {sig}{hint}: {tail}"
    return f"worker exited with status {rc}: {tail}"


def _summary(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}"
    lat = row["latency_ms"]
    return f"p50 {lat['p50']:.2f} ms, {row['throughput_ips']:.1f} img/s, RSS {row['peak_rss_mb']:.0f} MB"
