"""The teacher at its best on this device: every precision each backend offers here (fp32, bf16, fp16, INT8).

A student is worth deploying only if it beats the teacher a user would actually run, not the teacher in fp32: on an
Intel AMX CPU OpenVINO runs ViT-B-32 2-3x faster in bf16 than in f32. So `edgekd bench --teacher` times the teacher
in every precision below that the backend offers on this machine, and the report compares each student with the
fastest of them ("vs best teacher") next to the same-backend fp32 teacher.

    fp32  every backend
    bf16  torch (autocast; CPUs with AVX512-BF16 or AMX-BF16, or CUDA), openvino (INFERENCE_PRECISION_HINT bf16, when
          the CPU plugin lists BF16 and the CPU has native bf16)
    fp16  openvino (INFERENCE_PRECISION_HINT f16, when the CPU plugin lists FP16)
    int8  onnxruntime and openvino, quantised by edgekd's own export path (onnxruntime.quantization / NNCF,
          transformer settings) on --calib images
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from edgekd.bench.models import ModelSpec

TEACHER_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def teacher_variants(spec: ModelSpec, precisions: tuple[str, ...] = TEACHER_PRECISIONS) -> list[ModelSpec]:
    """One spec per precision (same name: the table tells them apart by precision)."""
    return [dataclasses.replace(spec, precision=p) for p in precisions]


def precision_reason(backend: str, precision: str, calib: str | None, device: str = "auto") -> str | None:
    """None when `backend` offers the teacher in `precision` on this machine, else why not (a skipped row)."""
    if precision == "fp32":
        return None
    if precision == "int8":
        if backend not in ("onnxruntime", "openvino"):
            return f"INT8 teacher rows are measured on onnxruntime and openvino, not {backend}"
        return None if calib else "an INT8 teacher needs calibration images: pass --calib DIR"
    if backend == "torch":
        if precision == "bf16":
            return None if _native_bf16() or _cuda(device) else (
                "this CPU has no native bf16 (AVX512-BF16 / AMX-BF16): torch would emulate it, slower than fp32")
        return None if _cuda(device) else "torch fp16 on CPU is no fast path; use --device cuda for it"
    if backend == "openvino":
        caps = openvino_capabilities()
        name = {"bf16": "BF16", "fp16": "FP16"}[precision]
        if name not in caps:
            return f"OpenVINO's CPU plugin offers {', '.join(caps)} here, not {name}"
        if precision == "bf16" and not _native_bf16():
            return "this CPU has no native bf16 (AVX512-BF16 / AMX-BF16); OpenVINO would run f32"
        return None
    return f"{backend} has no {precision} CPU kernels for this model"


@lru_cache(maxsize=1)
def openvino_capabilities() -> tuple[str, ...]:
    from edgekd._optional import require

    ov = require("openvino", purpose="the openvino backend")
    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX, and no ONEDNN_MAX_CPU_ISA cap below it)."""
    from edgekd.cpu import cpu_facts

    facts = cpu_facts()
    levels, isa = facts["onednn_isa_levels"], facts["onednn_isa"]
    return "AVX512_CORE_BF16" in levels and isa in levels and levels.index(isa) >= levels.index("AVX512_CORE_BF16")


def _cuda(device: str) -> bool:
    if not device.startswith(("cuda", "auto")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
