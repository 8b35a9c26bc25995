"""TrtBuildSettings: what a TensorRT engine build needs besides the ONNX file, for edgekd's builder
(edgekd.export.tensorrt) and for the trtexec command line (edgekd.export.trtexec) alike; recorded in
tensorrt_build.json. Torch-free and tensorrt-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgekd import EdgekdError

TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class TrtBuildSettings:
    """Everything the builder (and the equivalent trtexec command) needs besides the ONNX file.

    input_shape is per sample: (3, H, W) for "pixels", (H, W, 3) for "frames". With dla_core the profile is static
    (DLA needs min = opt = max): every batch becomes opt_batch.
    """

    precision: str
    input_name: str
    input_shape: tuple[int, ...]
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_gb: float = 2.0
    dla_core: int | None = None
    gpu_fallback: bool = True
    timing_cache: str = TIMING_CACHE  # relative to the bundle, or absolute (shared between builds)
    trt_calibrator: bool = False  # legacy implicit INT8 calibration (TensorRT < 10 only)
    calib_method: str = "entropy"
    calib_batch: int = 8
    keep_fp16: tuple[str, ...] = field(default_factory=tuple)  # layers forced to fp16 in a weakly typed int8 engine

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise EdgekdError(f"--precision {self.precision!r}: TensorRT supports fp32, fp16, int8")
        if self.dla_core is not None and not self.min_batch == self.opt_batch == self.max_batch:
            for name in ("min_batch", "max_batch"):  # DLA: static shapes only
                object.__setattr__(self, name, self.opt_batch)
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EdgekdError(f"--min-batch/--opt-batch/--max-batch must satisfy 1 <= min <= opt <= max, got "
                              f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if self.workspace_gb <= 0:
            raise EdgekdError(f"--workspace-gb {self.workspace_gb}: must be > 0")
        if self.dla_core is not None and self.dla_core < 0:
            raise EdgekdError(f"--dla-core {self.dla_core}: must be >= 0")
        if self.dla_core is not None and self.precision == "fp32":
            raise EdgekdError("--dla-core: DLA runs fp16 or int8 only; use --precision fp16 or int8")
        if self.calib_method not in ("entropy", "minmax"):
            raise EdgekdError(f"--calib-method {self.calib_method!r}: TensorRT's calibrators are entropy, minmax")
        if self.trt_calibrator and self.precision != "int8":
            raise EdgekdError("--trt-calibrator is for --precision int8 only")
        if self.trt_calibrator and self.dla_core is not None and self.calib_method != "entropy":
            # IInt8EntropyCalibrator2 is "the required calibrator for DLA" (TensorRT API reference)
            raise EdgekdError(f"--calib-method {self.calib_method} with --dla-core: DLA INT8 calibrates with "
                              "TensorRT's entropy calibrator only; use --calib-method entropy")

    def shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"], d["keep_fp16"] = list(self.input_shape), list(self.keep_fp16)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrtBuildSettings:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["input_shape"] = tuple(d["input_shape"])
        d["keep_fp16"] = tuple(d.get("keep_fp16") or ())
        return cls(**d)

    def with_options(self, options: dict[str, Any]) -> TrtBuildSettings:
        """A copy with the CLI options that were given (None = keep)."""
        changes = {k: v for k, v in options.items() if k in self.__dataclass_fields__ and v is not None}
        if "keep_fp16" in changes:
            keep = changes["keep_fp16"]
            changes["keep_fp16"] = tuple(k.strip() for k in (keep.split(",") if isinstance(keep, str) else keep)
                                         if k and k.strip())
        for k in ("min_batch", "opt_batch", "max_batch", "calib_batch", "dla_core"):
            if k in changes:
                changes[k] = int(changes[k])
        if "workspace_gb" in changes:
            changes["workspace_gb"] = float(changes["workspace_gb"])
        if "trt_calibrator" in changes:
            changes["trt_calibrator"] = bool(changes["trt_calibrator"])
        return replace(self, **changes)
