"""TensorRT export target: a serialized engine built from the fp32 ONNX with TensorRT's Python builder API.

    fp32 / fp16      BuilderFlag.FP16 for fp16; one optimisation profile over the batch range min/opt/max
    int8             explicit quantisation when the ONNX carries Q/DQ nodes (model.qdq.onnx), otherwise implicit
                     quantisation with an IInt8EntropyCalibrator2 (or MinMax) reading the calibration inputs, whose
                     calibration cache is written beside the engine
    DLA (Jetson)     --dla-core N: default device DLA with GPU fallback for unsupported layers
    timing cache     reused between builds (--timing-cache PATH, default BUNDLE/timing.cache)

The engine sits beside engine.json (TensorRT version, GPU, compute capability, precision, ONNX file + sha256), which
edgekd.runtime.engine_check uses to refuse an engine built elsewhere. tensorrt is imported lazily: on a machine
without it (or without a GPU) the target writes everything the device needs (ONNX, calibration inputs, held-out
inputs with reference embeddings, tensorrt_build.json) and raises EnginePendingError (exit status 4) with the exact
`trtexec` and `edgekd export ... --from-onnx` commands to run there.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_path, atomic_write_bytes, atomic_write_json, read_json, sha256_file
from edgekd._optional import is_available, require
from edgekd.export.targets import ExportRequest, ExportResult, NeedsDeviceError, register_target
from edgekd.runtime.engine_check import gpu_info

log = logging.getLogger(__name__)

ENGINE_FILE = "model.engine"
ENGINE_MANIFEST = "engine.json"  # same name edgekd.runtime.engine_check reads
BUILD_FILE = "tensorrt_build.json"
CALIB_FILE = "calib.npy"
CALIB_CACHE = "calib.cache"
VAL_FILE = "val.npy"
VAL_REFERENCE = "val_reference.npy"
TIMING_CACHE = "timing.cache"
ENGINE_FORMAT = "edgekd.engine"
# defaults of the on-device parity check (the export gate's thresholds; int8 judged by cosine without labels)


class EnginePendingError(NeedsDeviceError):
    """Raised when the engine must be built on the device; `result` describes the files already written."""


class EngineParityError(EdgekdError):
    exit_code = 3  # edgekd.cli.EXIT_GATE_FAILED


@dataclass(frozen=True)
class TrtBuildSettings:
    """Everything the builder (and the equivalent trtexec command) needs besides the ONNX file.

    input_shape is per sample: (3, H, W) for "pixels", (H, W, 3) for "frames".
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
    calib_method: str = "entropy"
    calib_batch: int = 8
    keep_fp16: tuple[str, ...] = field(default_factory=tuple)  # layers forced to fp16 in an int8 engine

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise EdgekdError(f"--precision {self.precision!r}: TensorRT supports fp32, fp16, int8")
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
            raise EdgekdError(f"--calib-method {self.calib_method!r}: TensorRT supports entropy, minmax")

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
        for k in ("min_batch", "opt_batch", "max_batch", "calib_batch"):
            if k in changes:
                changes[k] = int(changes[k])
        if "dla_core" in changes:
            changes["dla_core"] = int(changes["dla_core"])
        if "workspace_gb" in changes:
            changes["workspace_gb"] = float(changes["workspace_gb"])
        return replace(self, **changes)


def settings_from_request(req: ExportRequest) -> TrtBuildSettings:
    h, w = req.preprocess.size
    per_sample = (3, h, w) if req.input_name == "pixels" else (h, w, 3)
    return TrtBuildSettings(req.precision, req.input_name, per_sample).with_options(req.options or {})


# --- the target -----------------------------------------------------------------------------------------------------

@register_target("tensorrt", precisions=("fp32", "fp16", "int8"))
def build_tensorrt(req: ExportRequest) -> ExportResult:
    """TensorRT engine (+ engine.json); without tensorrt/GPU: device-ready files and the commands (exit 4)."""
    out = Path(req.out_dir)
    settings = settings_from_request(req)
    files: dict[str, str] = {"onnx": Path(req.onnx_path).name}
    if settings.precision == "int8":
        if req.calib is None or len(req.calib) == 0:
            raise EdgekdError("--precision int8 for tensorrt needs calibration images: pass --calib DIR")
        if len(req.calib) < settings.calib_batch:
            raise EdgekdError(f"--calib: {len(req.calib)} images are fewer than --calib-batch {settings.calib_batch}")
        save_inputs(out / CALIB_FILE, req.calib)
        files["calib"] = CALIB_FILE
    if req.val is not None and len(req.val):
        save_parity_inputs(out, req)
        files.update(val=VAL_FILE, val_reference=VAL_REFERENCE)
    commands = device_commands(out, settings, files["onnx"])
    atomic_write_json(out / BUILD_FILE, {"format": "edgekd.tensorrt_build", "version": 1,
                                         "settings": settings.to_dict(), "onnx": files["onnx"],
                                         "onnx_sha256": sha256_file(req.onnx_path), "commands": commands})
    files["build"] = BUILD_FILE
    meta: dict[str, Any] = {"settings": settings.to_dict(), "commands": commands}
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        meta["engine"] = "pending"
        result = ExportResult(files=files, backend="tensorrt", metadata={"tensorrt": meta})
        raise EnginePendingError(pending_message(out, reason, commands), result)
    facts = build_engine(req.onnx_path, out / ENGINE_FILE, settings, bundle_dir=out,
                         calib=req.calib if settings.precision == "int8" else None)
    files.update(model=ENGINE_FILE, engine_manifest=ENGINE_MANIFEST)
    if settings.precision == "int8" and facts.get("int8", {}).get("calibration_cache"):
        files["calib_cache"] = CALIB_CACHE
    meta.update(**facts, engine="built")
    return ExportResult(files=files, backend="tensorrt", metadata={"tensorrt": meta})


def tensorrt_unavailable_reason() -> str | None:
    """None when an engine can be built here, else why not."""
    if not is_available("tensorrt"):
        return "tensorrt is not installed here"
    try:
        gpu = gpu_info()
    except EdgekdError as e:
        return str(e)
    return None if gpu else "no CUDA GPU is visible here"


def save_inputs(path: Path, x: np.ndarray) -> None:
    """Model inputs for the device: uint8 frames as they are, float pixels as float16 (half the bytes; enough
    for calibration ranges, and the parity reference is computed from the same rounded values)."""
    x = np.asarray(x)
    arr = x if x.dtype == np.uint8 else x.astype(np.float16)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)


def load_inputs(path: Path) -> np.ndarray:
    """Inverse of `save_inputs`: uint8 frames, or float32 pixels."""
    x = np.load(path)
    return x if x.dtype == np.uint8 else x.astype(np.float32)


def save_parity_inputs(out: Path, req: ExportRequest, max_images: int = 64) -> None:
    """Held-out inputs + the torch student's embeddings of them, so the device can run the parity gate."""
    import torch

    val = np.asarray(req.val)[:max_images]
    save_inputs(out / VAL_FILE, val)
    stored = load_inputs(out / VAL_FILE)
    pixels = stored if req.input_name == "pixels" else req.preprocess.normalize(stored)
    with torch.no_grad():
        ref = req.student(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))).float().numpy()
    with atomic_path(out / VAL_REFERENCE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, ref.astype(np.float32))


# --- commands for the device ----------------------------------------------------------------------------------------

def trtexec_command(settings: TrtBuildSettings, onnx: str, engine: str = ENGINE_FILE,
                    calib_cache: str | None = None) -> list[str]:
    """The trtexec invocation equivalent to `build_engine` (TensorRT 8.5+ flags; same shapes, precision, DLA)."""
    name = settings.input_name
    dims = {k: "x".join(str(d) for d in settings.shape(b)) for k, b in
            (("min", settings.min_batch), ("opt", settings.opt_batch), ("max", settings.max_batch))}
    cmd = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}", f"--minShapes={name}:{dims['min']}",
           f"--optShapes={name}:{dims['opt']}", f"--maxShapes={name}:{dims['max']}",
           f"--memPoolSize=workspace:{int(settings.workspace_gb * 1024)}",  # MiB
           f"--timingCacheFile={settings.timing_cache}"]
    if settings.precision in ("fp16", "int8"):
        cmd.append("--fp16")
    if settings.precision == "int8":
        cmd.append("--int8")
        if calib_cache:  # implicit quantisation needs a cache; a Q/DQ ONNX carries its own scales
            cmd.append(f"--calib={calib_cache}")
    if settings.dla_core is not None:
        cmd.append(f"--useDLACore={settings.dla_core}")
        if settings.gpu_fallback:
            cmd.append("--allowGPUFallback")
    return cmd


def device_commands(bundle: Path, settings: TrtBuildSettings, onnx: str) -> dict[str, str]:
    """Both ways to build the engine on the device, run from inside the bundle directory."""
    edgekd = ["edgekd", "export", str(bundle), "--target", "tensorrt", "--precision", settings.precision,
              "--from-onnx", str(bundle / onnx)]
    if settings.dla_core is not None:
        edgekd += ["--dla-core", str(settings.dla_core)]
    trtexec = trtexec_command(settings, onnx)
    note = ""
    if settings.precision == "int8":
        note = ("trtexec cannot calibrate from images: run the edgekd command once (it writes calib.cache), then "
                f"add --calib={CALIB_CACHE} to reuse it with trtexec")
    return {"edgekd": shlex.join(edgekd), "trtexec": f"cd {shlex.quote(str(bundle))} && {shlex.join(trtexec)}",
            **({"note": note} if note else {})}


def pending_message(bundle: Path, reason: str, commands: dict[str, str]) -> str:
    lines = [f"TensorRT engine not built ({reason}); {bundle} holds the TensorRT-ready ONNX and build settings.",
             "On the device (TensorRT + GPU), build it with edgekd:", f"  {commands['edgekd']}",
             "or with trtexec:", f"  {commands['trtexec']}"]
    if "note" in commands:
        lines.append(f"  ({commands['note']})")
    return "\n".join(lines)


# --- the builder ----------------------------------------------------------------------------------------------------

def build_engine(onnx_path: Path, engine_path: Path, settings: TrtBuildSettings, bundle_dir: Path | None = None,
                 calib: np.ndarray | None = None) -> dict[str, Any]:
    """Build and serialize a TensorRT engine from `onnx_path`; writes engine_path + engine.json beside it.

    Returns the facts recorded in engine.json (versions, GPU, precision, profile, int8 details, build seconds).
    """
    trt = require("tensorrt", purpose="building TensorRT engines")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    bundle_dir = Path(bundle_dir or engine_path.parent)
    major = int(trt.__version__.split(".")[0])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it for ONNX
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgekdError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors[:500]}")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if not inputs or inputs[0].name != settings.input_name:
        raise EdgekdError(f"{onnx_path}: input is {[i.name for i in inputs]}, the bundle expects "
                          f"{settings.input_name!r}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(settings.input_name, settings.shape(settings.min_batch), settings.shape(settings.opt_batch),
                      settings.shape(settings.max_batch))
    config.add_optimization_profile(profile)

    if settings.precision in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast fp16; TensorRT may pick fp32 kernels")
        config.set_flag(trt.BuilderFlag.FP16)
    int8: dict[str, Any] = {}
    calibrator = None
    if settings.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if network_has_qdq(trt, network):
            int8 = {"mode": "explicit_qdq"}
        else:
            from edgekd.export.tensorrt_calibrator import make_calibrator
            from edgekd.runtime.backends import _import_cudart

            cache = bundle_dir / CALIB_CACHE
            calibrator = make_calibrator(trt, _import_cudart(), calib, settings.calib_batch, cache,
                                         settings.calib_method)
            config.int8_calibrator = calibrator
            if hasattr(config, "set_calibration_profile"):  # dynamic shapes: calibrate at the calibration batch
                calib_profile = builder.create_optimization_profile()
                shape = settings.shape(settings.calib_batch)
                calib_profile.set_shape(settings.input_name, shape, shape, shape)
                config.set_calibration_profile(calib_profile)
            int8 = {"mode": "implicit_calibration", "calib_method": settings.calib_method,
                    "calib_batch": settings.calib_batch, "calibration_images": 0 if calib is None else len(calib),
                    "calibration_cache": CALIB_CACHE}
        if settings.keep_fp16:
            int8["keep_fp16"] = keep_layers_in_fp16(trt, network, config, settings.keep_fp16)
    if settings.dla_core is not None:
        if builder.num_DLA_cores <= settings.dla_core:
            raise EdgekdError(f"--dla-core {settings.dla_core}: this device has {builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        if settings.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    timing_path = Path(settings.timing_cache)
    timing_path = timing_path if timing_path.is_absolute() else bundle_dir / timing_path
    timing_data = timing_path.read_bytes() if timing_path.is_file() else b""
    timing = config.create_timing_cache(timing_data)
    if not config.set_timing_cache(timing, False):
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one", timing_path)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    log.info("building TensorRT %s engine from %s (TensorRT %s)", settings.precision, onnx_path, trt.__version__)
    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise EdgekdError(f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above); try "
                          "--workspace-gb larger, --precision fp16, or without --dla-core")
    atomic_write_bytes(engine_path, bytes(serialized))
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    if calibrator is not None:
        int8["calibration_batches"] = calibrator.batches_served
    gpu = gpu_info() or {}
    facts = {"format": ENGINE_FORMAT, "version": 1, "engine_file": engine_path.name,
             "tensorrt_version": trt.__version__, "gpu_name": gpu.get("name", ""),
             "compute_capability": gpu.get("compute_capability", ""), "precision": settings.precision,
             "onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "settings": settings.to_dict(),
             "profile": {"input": settings.input_name, "min": list(settings.shape(settings.min_batch)),
                         "opt": list(settings.shape(settings.opt_batch)),
                         "max": list(settings.shape(settings.max_batch))},
             "dla_core": settings.dla_core, "timing_cache": str(timing_path), "int8": int8 or None,
             "engine_sha256": sha256_file(engine_path), "build_seconds": round(seconds, 2),
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    atomic_write_json(engine_path.parent / ENGINE_MANIFEST, facts)
    return facts


def network_has_qdq(trt: Any, network: Any) -> bool:
    """True when the parsed ONNX carries Q/DQ nodes (explicit quantisation: no calibrator needed)."""
    qdq = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    return any(network.get_layer(i).type in qdq for i in range(network.num_layers))


def keep_layers_in_fp16(trt: Any, network: Any, config: Any, names: tuple[str, ...]) -> list[str]:
    """Pin the named layers (ONNX node names) to fp16 inside an int8 engine."""
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    missing = [n for n in names if n not in layers]
    if missing:
        close = [n for n in layers if missing[0].rsplit("/", 1)[-1] in n][:5]
        raise EdgekdError(f"--keep-fp16 {missing[0]!r}: no such layer in the TensorRT network"
                          + (f"; similar: {', '.join(close)}" if close else ""))
    for name in names:
        layers[name].precision = trt.float16
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return list(names)


# --- on the device: --from-onnx ---------------------------------------------------------------------------------------

def build_from_onnx(bundle: str | Path, onnx_path: str | Path, **options: Any) -> Path:
    """`edgekd export BUNDLE --target tensorrt --from-onnx ONNX`: build the engine on the device from a bundle
    prepared elsewhere (tensorrt_build.json, calib.npy, val.npy + val_reference.npy), check parity against the
    torch reference embeddings, and update the bundle's edgekd.json. Options override the recorded settings
    (precision, min/opt/max_batch, workspace_gb, dla_core, timing_cache, calib_method, keep_fp16, min_cosine).
    Returns the engine path.
    """
    bundle, onnx_path = Path(bundle), Path(onnx_path)
    if not onnx_path.is_file():
        raise EdgekdError(f"--from-onnx {onnx_path}: no such file")
    if not bundle.is_dir():
        raise EdgekdError(f"{bundle}: not a directory; pass the bundle written by `edgekd export --target tensorrt`")
    build_file = bundle / BUILD_FILE
    if not build_file.is_file():
        raise EdgekdError(f"{bundle}: no {BUILD_FILE}; export it first with `edgekd export RUN --target tensorrt "
                          f"--out {bundle}` (on any machine)")
    record = read_json(build_file)
    min_cosine = options.pop("min_cosine", None)
    settings = TrtBuildSettings.from_dict(record["settings"]).with_options(options)
    if onnx_path.resolve().parent != bundle.resolve():
        shutil.copyfile(onnx_path, bundle / onnx_path.name)
        onnx_path = bundle / onnx_path.name
    calib = None
    if settings.precision == "int8" and (bundle / CALIB_FILE).is_file():
        calib = load_inputs(bundle / CALIB_FILE)
    elif settings.precision == "int8" and not (bundle / CALIB_CACHE).is_file():
        log.info("no %s in the bundle: INT8 needs a Q/DQ ONNX", CALIB_FILE)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise NeedsDeviceError(f"--from-onnx builds the engine on the device, but {reason}")
    facts = build_engine(onnx_path, bundle / ENGINE_FILE, settings, bundle_dir=bundle, calib=calib)
    parity = device_parity(bundle, settings.precision, min_cosine)
    update_bundle_manifest(bundle, onnx_path.name, facts, parity)
    if parity and not parity["passed"]:
        raise EngineParityError(f"{bundle / ENGINE_FILE}: parity failed ({'; '.join(parity['reasons'])}); try "
                                "--precision fp16, more calibration images or --keep-fp16 LAYERS")
    return bundle / ENGINE_FILE


def device_parity(bundle: Path, precision: str, min_cosine: float | None = None) -> dict[str, Any] | None:
    """Engine vs the torch student's reference embeddings stored at export time (None when not stored), judged by the
    parity gate's own criteria (edgekd.export.parity: cosine mean / p1 / worst, and top-1 agreement over the bundle's
    label pack for INT8). min_cosine overrides the mean-cosine floor."""
    if not (bundle / VAL_FILE).is_file() or not (bundle / VAL_REFERENCE).is_file():
        log.warning("%s: no held-out inputs stored; skipping the parity check", bundle)
        return None
    from edgekd.export.parity import MIN_GATE_IMAGES, GateCriteria, compare, judge
    from edgekd.runtime.backends import create_backend
    from edgekd.runtime.batching import run_batched
    from edgekd.runtime.canary import host_record

    backend = create_backend(bundle / ENGINE_FILE, backend="tensorrt")
    val, ref = load_inputs(bundle / VAL_FILE), np.load(bundle / VAL_REFERENCE)
    emb = run_batched(backend, val)["embedding"]  # in batches the engine's profile accepts, the last one padded
    pack = None
    if (bundle / "labels.npz").is_file():
        from edgekd.labelpack import load_label_pack

        pack = load_label_pack(bundle / "labels.npz")
    # the held-out set was sized at export time (its minimum enforced there, or waived with --small-gate-ok)
    overrides: dict[str, Any] = {"min_images": min(MIN_GATE_IMAGES, len(val))}
    if min_cosine is not None:
        overrides["min_mean_cosine"] = float(min_cosine)
    criteria = GateCriteria.default(precision, **overrides)
    metrics = compare(ref, emb, pack, tie_margin=criteria.tie_margin)
    passed, reasons, described = judge(metrics, criteria)
    return {"passed": passed, "skipped": False, "reasons": reasons, "criteria": described, "backend": "tensorrt",
            "precision": precision, "metrics": metrics, "where": "device (--from-onnx)",
            "validated_on": host_record("tensorrt")}


def update_bundle_manifest(bundle: Path, onnx_name: str, facts: dict[str, Any], parity: dict[str, Any] | None) -> None:
    """Point the bundle's edgekd.json at the new engine (adds fields only; re-hashes every file)."""
    from edgekd.export.bundle import MANIFEST, write_manifest

    path = bundle / MANIFEST
    if not path.is_file():
        log.warning("%s: no %s to update; the engine and %s stand alone", bundle, MANIFEST, ENGINE_MANIFEST)
        return
    manifest = read_json(path)
    files = dict(manifest.get("files") or {})
    files.update(model=ENGINE_FILE, onnx=onnx_name, engine_manifest=ENGINE_MANIFEST)
    if (bundle / CALIB_CACHE).is_file():
        files["calib_cache"] = CALIB_CACHE
    target_meta = dict(manifest.get("target_metadata") or {})
    trt_meta = dict(target_meta.get("tensorrt") or {})
    trt_meta.update({k: v for k, v in facts.items() if k not in ("format", "version")}, engine="built")
    target_meta["tensorrt"] = trt_meta
    manifest.update(files=files, target_metadata=target_meta, precision=facts["precision"], backend="tensorrt")
    manifest.setdefault("versions", {})["tensorrt"] = facts["tensorrt_version"]
    if parity is not None:
        manifest["parity"] = parity
    manifest.pop("sha256", None)
    write_manifest(bundle, manifest)
