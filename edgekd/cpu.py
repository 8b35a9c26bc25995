"""The host CPU as inference engines see it: vendor, model, the ISA extensions that pick INT8/BF16 kernels, and the
oneDNN ISA limit in force. One implementation for bench results, bundle verdicts, the runtime's canary cache and
`--precision auto`. numpy-free and torch-free.

oneDNN (inside OpenVINO's CPU plugin and PyTorch) dispatches its kernels on the highest ISA the CPU has, capped by
`ONEDNN_MAX_CPU_ISA` (https://uxlfoundation.github.io/oneDNN/dev_guide_cpu_dispatcher_control.html). onnxruntime's
MLAS dispatches on CPUID with no runtime cap, so an onnxruntime figure always belongs to the host's full ISA.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
LEGACY_ISA_ENV = "DNNL_MAX_CPU_ISA"  # oneDNN's older name, still honoured
# oneDNN x86 ISA levels, ascending, each with the /proc/cpuinfo flags it needs (the ones that matter for
# inference; oneDNN checks a few more, which every CPU with these flags has)
ISA_LEVELS: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2", "fma"),
    "AVX512_CORE": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "AVX512_CORE_VNNI": ("avx512_vnni",),
    "AVX512_CORE_BF16": ("avx512_bf16",),
    "AVX512_CORE_AMX": ("amx_tile", "amx_int8", "amx_bf16"),
}
# flags recorded with every figure and verdict (x86 and Arm)
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                  "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp", "i8mm", "bf16", "sve")


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[str, str, set[str]]:
    """/proc/cpuinfo text -> (vendor, model name, flags)."""
    vendor = model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "vendor_id" and not vendor:
            vendor = value
        elif key in ("model name", "hardware", "cpu model") and not model and value:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
    return vendor, model, flags


def supported_isa_levels(flags: set[str]) -> list[str]:
    """The oneDNN ISA levels this CPU has, ascending (each level needs every flag of the levels below it)."""
    levels: list[str] = []
    for level, needed in ISA_LEVELS.items():
        if not all(f in flags for f in needed):
            break
        levels.append(level)
    return levels


def isa_limit(env: dict[str, str] | None = None) -> str | None:
    """The oneDNN ISA cap set in the environment (upper case), or None."""
    env = os.environ if env is None else env
    value = env.get(ONEDNN_ISA_ENV) or env.get(LEGACY_ISA_ENV)
    return value.strip().upper() if value and value.strip() and value.strip().upper() != "ALL" else None


def effective_isa(levels: list[str], limit: str | None) -> str | None:
    """The ISA oneDNN dispatches on: the host's highest level, lowered to `limit` when that is a known lower level."""
    if not levels:
        return None
    if limit in ISA_LEVELS and limit in levels:
        return limit
    return levels[-1]


def cpu_facts(cpuinfo: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Vendor, model, relevant ISA flags, the oneDNN levels this CPU supports, the limit in force and the level
    oneDNN runs at. `cpuinfo`/`env` are for tests (default: this machine)."""
    vendor, model, flags = parse_cpuinfo(read_cpuinfo() if cpuinfo is None else cpuinfo)
    levels = supported_isa_levels(flags)
    limit = isa_limit(env)
    return {"vendor": vendor or "unknown", "model": model or platform.processor() or "unknown",
            "machine": platform.machine(), "flags": sorted(f for f in flags if f in RELEVANT_FLAGS),
            "onednn_isa_levels": levels, "onednn_max_cpu_isa": limit, "onednn_isa": effective_isa(levels, limit)}


def cpu_key(facts: dict[str, Any]) -> str:
    """A short stable id of what decides kernel choice: model, flags and the oneDNN level in force."""
    text = "|".join([str(facts.get("model")), ",".join(facts.get("flags") or []), str(facts.get("onednn_isa"))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(facts: dict[str, Any]) -> str:
    """'Intel(R) Xeon(R) Processor (AVX512_CORE_AMX)' or, under a cap, '... (AVX512_CORE_VNNI of AVX512_CORE_AMX)'."""
    levels = facts.get("onednn_isa_levels") or []
    isa = facts.get("onednn_isa")
    if not isa:
        return str(facts.get("model"))
    top = levels[-1] if levels else isa
    return f"{facts.get('model')} ({isa}{'' if isa == top else f' of {top}'})"
