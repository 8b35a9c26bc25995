"""The machine a benchmark ran on: CPU model and ISA flags, cores, GPU and driver, OS, Python and package versions,
and on Jetson the board, L4T/JetPack release, nvpmodel mode and jetson_clocks state. Values that cannot be found
are recorded as "unknown". No torch or engine imports (package versions come from installed metadata)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgekd._optional import installed_version

UNKNOWN = "unknown"
# the distributions that install the `tensorrt` module, first match wins (edgekd.export.trt_env reads them too)
TENSORRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs")
# ISA flags that decide CPU inference speed (AVX2/AVX-512 kernels, VNNI and AMX for INT8/BF16)
_FLAG_PATTERNS = ("avx2", "avx512", "amx", "vnni", "fma", "f16c", "asimd", "sve", "i8mm", "bf16", "dotprod")
_PACKAGES = {"torch": "torch", "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
             "openvino": "openvino", "tensorrt": TENSORRT_DISTS,
             "numpy": "numpy", "timm": "timm", "open_clip_torch": "open_clip_torch", "onnx": "onnx", "nncf": "nncf",
             "edgekd": "edgekd"}
# L4T major.minor -> JetPack (NVIDIA's release table)
_JETPACK = {"32.7": "4.6.x", "32.6": "4.6", "32.5": "4.5", "35.1": "5.0.2", "35.2": "5.1", "35.3": "5.1.1",
            "35.4": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4", "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1/6.2"}


def collect_environment(threads: list[int] | None = None) -> dict[str, Any]:
    """Everything a result row needs to be compared with another machine's (threads: the thread counts used)."""
    return {
        "cpu": cpu_info(),
        "memory_gb": _memory_gb(),
        "threads_used": threads or [],
        "gpu": gpu_info(),
        "os": {"system": platform.system(), "release": platform.release(), "version": platform.version(),
               "machine": platform.machine(), "libc": " ".join(platform.libc_ver()) or UNKNOWN},
        "python": platform.python_version(),
        "packages": package_versions(),
        "jetson": jetson_info(),
        "load_avg": load_average(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model, relevant ISA flags, the oneDNN ISA level in force and core counts (edgekd.cpu; `cpuinfo` for
    tests)."""
    from edgekd.cpu import cpu_facts, parse_cpuinfo, read_cpuinfo

    text = cpuinfo if cpuinfo is not None else read_cpuinfo()
    facts = cpu_facts(text)
    flags = parse_cpuinfo(text)[2]
    wanted = sorted(f for f in flags if any(p in f for p in _FLAG_PATTERNS))
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or UNKNOWN
    except ImportError:  # psutil is a core dependency; the runtime-only install may lack it
        physical = UNKNOWN
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        usable = os.cpu_count() or UNKNOWN
    return {"model": facts["model"] if facts["model"] != "unknown" else UNKNOWN, "vendor": facts["vendor"],
            "flags": wanted if flags else UNKNOWN, "onednn_isa": facts["onednn_isa"] or UNKNOWN,
            "onednn_max_cpu_isa": facts["onednn_max_cpu_isa"], "cores_logical": os.cpu_count() or UNKNOWN,
            "cores_physical": physical, "cores_usable": usable}


def load_average() -> list[float] | str:
    """1/5/15-minute load averages: a busy host (other jobs) makes every latency row slower and noisier."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return UNKNOWN


def usable_cores() -> int:
    """CPU cores this process may run on (affinity/cgroup-aware where the OS says so)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_info() -> list[dict[str, str]] | str:
    """[{name, driver, memory_mb}] per GPU from nvidia-smi, or "unknown" when there is no nvidia-smi/GPU."""
    gpus = [{"name": name, "driver": driver, "memory_mb": memory}
            for name, driver, memory in query_gpus(("name", "driver_version", "memory.total"))]
    return gpus or UNKNOWN


def query_gpus(fields: tuple[str, ...], timeout: float = 10.0) -> list[tuple[str, ...]]:
    """One tuple of `fields` per GPU from `nvidia-smi --query-gpu` (no units); [] without nvidia-smi, a GPU or an
    answer in time (an older nvidia-smi that lacks a field fails as a whole)."""
    out = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"], timeout)
    rows = [tuple(p.strip() for p in line.split(",")) for line in (out or "").strip().splitlines()]
    return [row[:len(fields)] for row in rows if len(row) >= len(fields)]


def package_versions() -> dict[str, str]:
    out = {key: installed_version(*((dists,) if isinstance(dists, str) else dists)) or "not installed"
           for key, dists in _PACKAGES.items()}
    if out["tensorrt"] == "not installed" and Path("/usr/lib/python3/dist-packages/tensorrt").is_dir():
        out["tensorrt"] = "system (JetPack), version " + UNKNOWN  # python3-libnvinfer has no pip metadata
    return out


def jetson_info(root: str | os.PathLike = "/") -> dict[str, Any] | None:
    """Board model, L4T release, JetPack, nvpmodel mode and jetson_clocks state; None when not a Jetson."""
    root = Path(root)
    model = _read(root / "proc/device-tree/model")
    release = _read(root / "etc/nv_tegra_release")
    if not model and not release:
        return None
    l4t = parse_l4t_release(release) if release else UNKNOWN
    jetpack = _JETPACK.get(".".join(l4t.split(".")[:2]), UNKNOWN) if l4t != UNKNOWN else UNKNOWN
    nvp = _run(["nvpmodel", "-q"])
    clocks = _run(["jetson_clocks", "--show"])
    return {"model": (model or UNKNOWN).strip("\x00").strip(), "l4t": l4t, "jetpack": jetpack,
            "nvpmodel": parse_nvpmodel(nvp) if nvp else UNKNOWN,
            "jetson_clocks": parse_jetson_clocks(clocks) if clocks else UNKNOWN,
            "tegrastats": shutil.which("tegrastats") is not None}


def parse_l4t_release(text: str) -> str:
    """'# R35 (release), REVISION: 4.1, GCID: ...' -> '35.4.1'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else UNKNOWN


def parse_nvpmodel(text: str) -> str:
    """`nvpmodel -q` output -> 'MAXN (0)'."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return UNKNOWN
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    mode_id = lines[-1] if lines and lines[-1].isdigit() else ""
    return f"{m.group(1)} ({mode_id})" if mode_id else m.group(1)


def parse_jetson_clocks(text: str) -> str:
    """`jetson_clocks --show` -> 'on' when every online CPU's MinFreq equals its MaxFreq (clocks locked), else 'off'."""
    cpus = re.findall(r"cpu\d+:\s*Online=1.*?MinFreq=(\d+)\s+MaxFreq=(\d+)", text)
    if not cpus:
        return UNKNOWN
    return "on" if all(lo == hi for lo, hi in cpus) else "off"


def _memory_gb() -> float | str:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 2)
    except ImportError:
        return UNKNOWN


def _read(path: str | os.PathLike) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    """stdout of `cmd`, or None when it is missing, fails or hangs (environment probing must never break a bench)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None
