"""What the installed TensorRT can do (read from the module, not assumed from its version) and the build plan that
follows from it: which ONNX the engine is built from, strong or weak typing, and which builder flags are set.

    TensorRT 11.x    strongly typed only: no FP16/INT8 builder flags, no calibrators. FP16 comes from an fp16 ONNX,
                     INT8 from a Q/DQ ONNX (NVIDIA's 10.x -> 11.x migration guide).
    TensorRT 10.x    STRONGLY_TYPED networks exist and are used (same ONNX files as 11.x); EXPLICIT_BATCH is ignored;
                     the INT8 calibrators are deprecated since 10.1. DLA builds (JetPack 6) keep the builder flags.
    TensorRT 8.5/8.6 weak typing: fp32 ONNX + BuilderFlag.FP16, or the Q/DQ ONNX + BuilderFlag.INT8 (explicit
                     quantization); the implicit calibrator only on request (--trt-calibrator, legacy, JetPack 5),
                     and always for INT8 on DLA (DLA there has no explicit quantization).

DLA by release (NVIDIA's "Working with DLA", TensorRT 11.4.1 / 11.5.0 documentation): 8.x and 10.0-10.7 on Jetson
Xavier/Orin (10.7 was the last 10.x with DLA; JetPack 6 ships 10.3); none in 11.0-11.3; 11.4.0 only on Windows on ARM;
from 11.4.1 on Jetson AGX Orin under JetPack 7.2.2+ (the SBSA build has no DLA outside JetPack; Thor has no DLA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekd import EdgekdError

# bundle file roles of the ONNX files a strongly typed engine is built from (tensorrt_build.json "onnx_files"): its
# precision comes from the graph (edgekd.export.tensorrt_qdq); weakly typed builds read "onnx" or "onnx_qdq" (fp32)
# and take their precision from the builder flags
ONNX_ROLES = {"fp32": "onnx", "fp16": "onnx_fp16", "int8": "onnx_qdq_fp16"}


def version_tuple(version: str) -> tuple[int, int, int]:
    """'10.3.0.30' -> (10, 3, 0); a family like '11.4' -> (11, 4, 0)."""
    parts = [int(p) for p in str(version).split(".")[:3] if p.isdigit()]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def dla_unsupported_reason(version: str) -> str | None:
    """Why TensorRT `version` has no DLA for edgekd's Linux targets, or None when NVIDIA documents DLA for it."""
    v = version_tuple(version)
    if (10, 8, 0) <= v < (11, 0, 0):
        return "10.7 was the last 10.x release with DLA (JetPack 6 ships 10.3)"
    if (11, 0, 0) <= v < (11, 4, 1):
        return "11.0-11.4.0 have no DLA on Jetson; it returns in 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+"
    return None  # 8.x, 10.0-10.7 (Jetson Xavier/Orin); 11.4.1+ (AGX Orin, JetPack 7.2.2+: num_DLA_cores says where)


@dataclass(frozen=True)
class TrtCapabilities:
    """The parts of the TensorRT API edgekd's builder depends on, as present in the installed module."""

    version: str
    strongly_typed: bool  # networks can be (or always are) strongly typed
    weak_typing: bool  # BuilderFlag.FP16 / INT8 exist (removed in 11.x)
    explicit_batch_flag: bool  # 8.x: ONNX networks need 1 << EXPLICIT_BATCH
    calibrator: bool  # IInt8EntropyCalibrator2 + IBuilderConfig.int8_calibrator (removed in 11.x)
    precision_constraints: bool  # BuilderFlag.OBEY_PRECISION_CONSTRAINTS (removed in 11.x)
    dla: bool

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def always_strongly_typed(self) -> bool:
        return self.strongly_typed and not self.weak_typing

    @classmethod
    def detect(cls, trt: Any) -> TrtCapabilities:
        flags = getattr(trt, "BuilderFlag", None)
        version = str(trt.__version__)
        creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
        config_cls = getattr(trt, "IBuilderConfig", None)
        weak = flags is not None and hasattr(flags, "FP16") and hasattr(flags, "INT8")
        major = version_tuple(version)[0]
        return cls(version=version,
                   strongly_typed=hasattr(creation, "STRONGLY_TYPED") or not weak,
                   weak_typing=weak,
                   explicit_batch_flag=major < 10 and hasattr(creation, "EXPLICIT_BATCH"),
                   calibrator=hasattr(trt, "IInt8EntropyCalibrator2") and config_cls is not None
                   and hasattr(config_cls, "int8_calibrator"),
                   precision_constraints=flags is not None and hasattr(flags, "OBEY_PRECISION_CONSTRAINTS"),
                   dla=hasattr(getattr(trt, "DeviceType", None), "DLA") and dla_unsupported_reason(version) is None)

    @classmethod
    def documented(cls, version: str) -> TrtCapabilities:
        """The API surface NVIDIA documents for a release family ("8.6", "10.3", "11.4"), for planning and printing
        commands on a machine without TensorRT."""
        major = int(version.split(".")[0])
        return cls(version=version, strongly_typed=major >= 10, weak_typing=major <= 10,
                   explicit_batch_flag=major < 10, calibrator=major <= 10, precision_constraints=major <= 10,
                   dla=dla_unsupported_reason(version) is None)


# the families a bundle prints trtexec commands for: (label, version, where it is found)
FAMILIES = (("11.x", "11.4", "x86_64 / SBSA GPUs"), ("10.x", "10.3", "JetPack 6"), ("8.6", "8.6", "JetPack 5: 8.5"))
# DLA builds also get the one 11.x with DLA (the x86 11.x family has none)
DLA_FAMILIES = (("11.4.1", "11.4.1", "JetPack 7.2.2+, AGX Orin"),)


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built on one TensorRT: from which ONNX (role), typed how, with which BuilderFlag names."""

    precision: str
    onnx_role: str
    strongly_typed: bool
    flags: tuple[str, ...]
    quantization: str | None  # "explicit_qdq", "implicit_calibration" (legacy) or None

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "onnx_role": self.onnx_role, "strongly_typed": self.strongly_typed,
                "flags": list(self.flags), "quantization": self.quantization}


def plan_build(caps: TrtCapabilities, precision: str, dla_core: int | None = None, gpu_fallback: bool = True,
               trt_calibrator: bool = False, keep_fp16: tuple[str, ...] = ()) -> BuildPlan:
    """The build for `precision` on TensorRT `caps`; raises EdgekdError for a combination that version lacks."""
    if trt_calibrator:
        if precision != "int8":
            raise EdgekdError("--trt-calibrator is for --precision int8 only")
        if caps.major >= 10 or not caps.calibrator:
            raise EdgekdError(f"--trt-calibrator: TensorRT {caps.version} has no implicit INT8 calibration (deprecated "
                              "in 10.1, removed in 11); leave the option out: edgekd builds INT8 from its Q/DQ ONNX")
    if dla_core is not None:
        check_dla(caps, precision, trt_calibrator)
    dla_flags = ("GPU_FALLBACK",) if dla_core is not None and gpu_fallback else ()
    # DLA on TensorRT < 11 (JetPack 5/6) is built with the precision flags; NVIDIA documents strongly typed DLA
    # networks only from 11.x on
    strong = caps.strongly_typed and not trt_calibrator and not (dla_core is not None and caps.weak_typing)
    if keep_fp16:
        if precision != "int8":
            raise EdgekdError("--keep-fp16 is for --precision int8 (layers to keep out of INT8)")
        if strong or not caps.precision_constraints:
            raise EdgekdError(f"--keep-fp16: TensorRT {caps.version} builds strongly typed networks, whose precisions "
                              "come from the ONNX; keep nodes out of INT8 with --keep-fp32 NODES (or --auto-mixed)")
    if strong:
        quant = "explicit_qdq" if precision == "int8" else None
        return BuildPlan(precision, ONNX_ROLES[precision], True, dla_flags, quant)
    if not caps.weak_typing:
        raise EdgekdError(f"TensorRT {caps.version}: neither strongly typed networks nor precision flags available")
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]
    if keep_fp16:
        flags += ("OBEY_PRECISION_CONSTRAINTS",)
    if precision == "int8":
        role, quant = ("onnx", "implicit_calibration") if trt_calibrator else ("onnx_qdq", "explicit_qdq")
    else:
        role, quant = "onnx", None  # weak typing: the fp32 ONNX, reduced precision chosen by the builder
    return BuildPlan(precision, role, False, flags + dla_flags, quant)


def check_dla(caps: TrtCapabilities, precision: str, trt_calibrator: bool) -> None:
    """Refuse --dla-core where the installed TensorRT has no DLA, and DLA INT8 on 8.x without the calibrator."""
    if not caps.dla:
        why = dla_unsupported_reason(caps.version) or "its module has no DeviceType.DLA"
        raise EdgekdError(f"--dla-core: TensorRT {caps.version} has no DLA ({why}); build without --dla-core")
    # TensorRT 8.x (JetPack 5): "DLA does not support Explicit Quantization" (TensorRT 8.x Developer Guide, ch. 12
    # "TensorRT and DLA", as on NVIDIA's developer blog tensorrt-deep-learning-accelerator-cn; NVIDIA/TensorRT#2222:
    # convert to implicit quantization for DLA). DLA INT8 takes implicit scales from IInt8EntropyCalibrator2, "the
    # required calibrator for DLA" (its API reference). NVIDIA's Q/DQ Translator (Deep-Learning-Accelerator-SW
    # tools/qdq-translator), which turns Q/DQ scales into a calibration cache for DLA, needs DLA 3.13+, on Jetson
    # JetPack 6.0+: on JetPack 5 the calibrator is the only route.
    if precision == "int8" and caps.major < 10 and not trt_calibrator:
        raise EdgekdError(f"--dla-core with --precision int8 on TensorRT {caps.version}: DLA there has no Q/DQ "
                          "(explicit) quantization; add --trt-calibrator (implicit INT8 calibration on --calib)")


def trtexec_args(caps: TrtCapabilities, plan: BuildPlan) -> list[str]:
    """The precision part of a trtexec command for `plan` (NVIDIA's trtexec migration notes: 11.x has no precision
    flags and is always strongly typed; 10.x needs --stronglyTyped; 8.x takes --fp16 / --int8)."""
    args: list[str] = []
    if plan.strongly_typed and caps.weak_typing:
        args.append("--stronglyTyped")
    if not plan.strongly_typed:
        args += [{"FP16": "--fp16", "INT8": "--int8", "OBEY_PRECISION_CONSTRAINTS": "--precisionConstraints=obey"}[f]
                 for f in plan.flags if f != "GPU_FALLBACK"]
    return args
