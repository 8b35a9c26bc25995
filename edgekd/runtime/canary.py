"""A bundle on a CPU it was not validated on: one guarded inference in a child process before this process loads it.

An INT8 graph that ran on the CPU it was exported on can crash another one (docs/export.md, "INT8 and the CPU"), and
a crash inside an engine kills the whole app. So the first time a bundle is loaded on a CPU backend whose host
record differs from the one its parity gate ran on, `check_runs_here` runs the model once in a child
(edgekd.runtime.isolated). A success is cached per (model files, backend and version, CPU and oneDNN ISA level) under
$EDGEKD_CACHE_DIR (default ~/.cache/edgekd/canary), so later loads cost nothing; a crash raises NativeCrashError
naming the bundle, the backend and what to do. EDGEKD_NO_CANARY=1 turns the check off.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd._io import atomic_write_json
from edgekd.runtime.bundle import BundleInfo
from edgekd.runtime.isolated import call_isolated

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEKD_CACHE_DIR"
DISABLE_ENV = "EDGEKD_NO_CANARY"
CPU_BACKENDS = ("onnxruntime", "openvino")  # the crash class guarded here is in CPU kernels
FRAME_SIZE = (480, 640)  # dynamic height/width of whole-frame models get a camera frame
CANARY_JOB = "edgekd.runtime.canary:canary_job"  # module:function run in the child (tests swap in a crasher)


def engine_version(backend: str) -> str | None:
    from edgekd._optional import installed_version
    from edgekd.runtime.backends import BACKEND_MODULES

    module = BACKEND_MODULES.get(backend, backend)
    return installed_version(*{"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")}.get(
        module, (module,)))


def host_record(backend: str) -> dict[str, Any]:
    """What a verdict about running a model holds for: this CPU (edgekd.cpu), the backend and its version."""
    from edgekd.cpu import cpu_facts, cpu_key

    facts = cpu_facts()
    return {"cpu": facts, "cpu_key": cpu_key(facts), "backend": backend, "backend_version": engine_version(backend)}


def same_host(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return bool(a) and all(a.get(k) == b.get(k) for k in ("cpu_key", "backend", "backend_version"))


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "canary"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd" / "canary"


def _cache_file(info: BundleInfo, host: dict[str, Any]) -> Path:
    import hashlib

    model_hashes = sorted((info.meta.get("sha256") or {}).items())
    key = json.dumps([model_hashes, host["cpu_key"], host["backend"], host["backend_version"]])
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def check_runs_here(info: BundleInfo, backend: str, threads: int | None = None, device: str | None = None) -> str:
    """Make sure the bundle's model runs on this CPU with `backend` (a resolved name) before it is loaded in-process.

    Returns how that is known: "validated here" (the parity gate ran on this host), "cached", "canary passed",
    or "skipped" (not a CPU backend, or EDGEKD_NO_CANARY). Raises NativeCrashError when the canary crashes.
    """
    if backend not in CPU_BACKENDS or (device or "cpu").lower() != "cpu" or os.environ.get(DISABLE_ENV, "") not in (
            "", "0"):
        return "skipped"
    host = host_record(backend)
    if same_host((info.meta.get("parity") or {}).get("validated_on"), host):
        return "validated here"
    cached = _cache_file(info, host)
    if cached.is_file():
        return "cached"
    t0 = time.perf_counter()
    call_isolated(CANARY_JOB, {"model": str(info.model_path), "backend": backend, "threads": threads},
                  what=f"a test inference of {info.root} on {backend}",
                  advice=f"this bundle cannot run on this CPU with {backend}: re-export it on this machine "
                         "(`edgekd export` picks safe INT8 settings), try another backend, or cap oneDNN's ISA for "
                         "openvino (e.g. ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI)")
    try:
        atomic_write_json(cached, {"bundle": str(info.root), **host, "seconds": round(time.perf_counter() - t0, 3),
                                   "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError as e:  # a read-only home must not stop the app: the canary just runs again next time
        log.info("could not cache the canary result in %s (%s)", cached.parent, e)
    log.info("canary: %s runs on this CPU with %s (%.2f s)", info.root, backend, time.perf_counter() - t0)
    return "canary passed"


def canary_input(shape: list[Any], dtype: np.dtype) -> np.ndarray:
    """One deterministic input of the model's shape: batch 1 (or the static batch), whole-frame models a 480x640
    frame."""
    dims = [d if isinstance(d, int) and d > 0 else 1 if i == 0 else FRAME_SIZE[0] if i == 1 else FRAME_SIZE[1]
            for i, d in enumerate(shape)]
    rng = np.random.default_rng(0)
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, dims, dtype=np.uint8)
    return rng.standard_normal(dims).astype(dtype)


def canary_job(model: str, backend: str, threads: int | None) -> dict[str, Any]:
    """Child side: load the model and run it twice on one input (a crash kills only this process)."""
    from edgekd.runtime.backends import create_backend

    be = create_backend(model, backend=backend, threads=threads)
    x = canary_input(be.input_shape, be.input_dtype)
    for _ in range(2):
        outs = be.run(x)
    return {"outputs": {k: list(np.shape(v)) for k, v in outs.items()}}
