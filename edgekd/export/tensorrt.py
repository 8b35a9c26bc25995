"""TensorRT export target: a serialized engine built with TensorRT's Python builder, right on 8.5/8.6, 10.x and 11.x.

Here (any machine) the target writes the ONNX files an engine is built from and gates them with onnxruntime:

    model.onnx        fp32
    model.fp16.onnx   fp16 compute, float32 IO, normalisation and the L2-norm tail in fp32 (onnxconverter-common)
    model.qdq.onnx    INT8 by explicit quantization: symmetric int8 activations, per-channel weights, float biases,
                      Q/DQ on the inputs of Conv/Gemm/MatMul (onnxruntime.quantization, calibrated on --calib); the
                      fp32 graph TensorRT 8.6 builds with its FP16 + INT8 flags
    model.qdq.fp16.onnx  the same Q/DQ graph in fp16 (opset 19), float32 IO and L2 tail: what strongly typed
                      10.x / 11.x builds run, so layers outside INT8 run in fp16 as 8.6's flags give them
                      (edgekd.export.tensorrt_qdq)

Every file passes onnx's full check, strict shape inference, an onnxruntime load and the contract of the TensorRT
parsers that read it (edgekd.export.trt_contract) before the bundle is written.

On the device (TensorRT + GPU) `build_engine` reads what the installed TensorRT can do (edgekd.export.tensorrt_plan)
and builds: strongly typed from model.fp16.onnx / model.qdq.onnx where the module has strong typing (10.x, 11.x), or
with BuilderFlag.FP16/INT8 where it does not (8.x) or for DLA before 11.x. The implicit INT8 calibrator
(IInt8EntropyCalibrator2, deprecated in 10.1, removed in 11) is only used with --trt-calibrator on TensorRT < 10.
DLA (--dla-core) forces a static shape (min = opt = max) and reports the layers that fall back to the GPU.

The engine sits beside engine.json (edgekd.export.trtexec writes it), which edgekd.runtime.engine_check uses to refuse
an engine built elsewhere. tensorrt is imported lazily: without it (or a GPU) the target writes everything the device
needs (ONNX files, held-out inputs with reference embeddings, tensorrt_build.json) and raises EnginePendingError
(exit status 4) with the `edgekd export --from-onnx` and `trtexec` commands to run there.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import atomic_path, atomic_write_bytes, atomic_write_json, read_json, sha256_file
from edgekd._optional import is_available, require
from edgekd.export.targets import (
    ExportRequest,
    ExportResult,
    IntermediateGateError,
    NeedsDeviceError,
    register_target,
)
from edgekd.export.tensorrt_plan import BuildPlan, TrtCapabilities
from edgekd.export.tensorrt_settings import TrtBuildSettings
from edgekd.export.trtexec import (
    BUILD_FILE,
    ENGINE_FILE,
    ENGINE_MANIFEST,
    device_commands,
    engine_facts,
    plan_for,
    write_engine_manifest,
)
from edgekd.runtime.engine_check import gpu_info

log = logging.getLogger(__name__)

ONNX_FILES = {"onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx", "onnx_qdq": "model.qdq.onnx",
              "onnx_qdq_fp16": "model.qdq.fp16.onnx"}
# which TensorRT families build from each file (edgekd.export.tensorrt_plan): each file is held to their parsers'
# contract (edgekd.export.trt_contract). 10.x DLA builds are weakly typed, from model.onnx / model.qdq.onnx.
READ_BY = {"onnx": ("8.6", "10.x", "11.x"), "onnx_fp16": ("10.x", "11.x"), "onnx_qdq": ("8.6", "10.x"),
           "onnx_qdq_fp16": ("10.x", "11.x")}
# the reduced-precision files, in the order their gate results are reported (the first is the newest TensorRT's)
GATED_ROLES = ("onnx_fp16", "onnx_qdq_fp16", "onnx_qdq")
CALIB_FILE = "calib.npy"
VAL_FILE = "val.npy"
VAL_REFERENCE = "val_reference.npy"
MAX_PARITY_IMAGES = 256  # held-out inputs stored for the on-device check (float16: ~38 MB at 224 px)

__all__ = ["BUILD_FILE", "ENGINE_FILE", "ENGINE_MANIFEST", "TrtBuildSettings", "build_engine", "build_from_onnx",
           "EnginePendingError", "EngineParityError", "EngineOnnxGateError"]


class EnginePendingError(NeedsDeviceError):
    """Raised when the engine must be built on the device; `result` describes the files already written."""


class EngineParityError(EdgekdError):
    exit_code = 3  # edgekd.cli.EXIT_GATE_FAILED


class EngineOnnxGateError(IntermediateGateError):
    """The ONNX an engine would be built from failed the parity gate: no engine is built from it."""


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
    if settings.precision == "int8" and (req.calib is None or len(req.calib) == 0):
        raise EdgekdError("--precision int8 for tensorrt needs calibration images: pass --calib DIR")
    onnx_files, quant_meta = prepare_engine_onnx(req, settings)
    files: dict[str, str] = dict(onnx_files)
    meta: dict[str, Any] = {"settings": settings.to_dict(), **quant_meta}
    reduced = [role for role in GATED_ROLES if role in onnx_files]
    if reduced and req.gate_model is not None:
        gates = {onnx_files[r]: gate_engine_onnx(req.gate_model, out / onnx_files[r], files, meta) for r in reduced}
        meta["onnx_gate"], meta["onnx_gates"] = gates[onnx_files[reduced[0]]], gates
    if settings.trt_calibrator:
        if len(req.calib) < settings.calib_batch:
            raise EdgekdError(f"--calib: {len(req.calib)} images are fewer than --calib-batch {settings.calib_batch}")
        save_inputs(out / CALIB_FILE, req.calib)
        files["calib"] = CALIB_FILE
    if req.val is not None and len(req.val):
        save_parity_inputs(out, req)
        files.update(val=VAL_FILE, val_reference=VAL_REFERENCE)
    calib_cache = calib_cache_name(out / onnx_files["onnx"]) if settings.trt_calibrator else None
    commands = device_commands(out, settings, onnx_files, calib_cache)
    atomic_write_json(out / BUILD_FILE, {"format": "edgekd.tensorrt_build", "version": 2,
                                         "settings": settings.to_dict(), "onnx_files": onnx_files,
                                         "onnx_sha256": {f: sha256_file(out / f) for f in onnx_files.values()},
                                         "commands": commands})
    files["build"] = BUILD_FILE
    meta["commands"] = commands
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        meta["engine"] = "pending"
        result = ExportResult(files=files, backend="tensorrt", metadata={"tensorrt": meta})
        raise EnginePendingError(pending_message(out, reason, commands), result)
    facts = build_engine({role: out / f for role, f in onnx_files.items()}, out / ENGINE_FILE, settings,
                         bundle_dir=out, calib=req.calib if settings.trt_calibrator else None)
    files.update(model=ENGINE_FILE, engine_manifest=ENGINE_MANIFEST)
    if (facts.get("int8") or {}).get("calibration_cache"):
        files["calib_cache"] = facts["int8"]["calibration_cache"]
    meta.update(**facts, engine="built")
    return ExportResult(files=files, backend="tensorrt", metadata={"tensorrt": meta})


def prepare_engine_onnx(req: ExportRequest, settings: TrtBuildSettings) -> tuple[dict[str, str], dict[str, Any]]:
    """Write the ONNX files the engine can be built from (role -> file name) and what made them; each is checked
    against the contract of the TensorRT parsers that read it."""
    from edgekd.export.onnx import convert_fp16
    from edgekd.export.tensorrt_qdq import convert_qdq_fp16

    out = Path(req.out_dir)
    files = {"onnx": Path(req.onnx_path).name}
    meta: dict[str, Any] = {}
    if settings.precision == "fp16":
        meta["fp16"] = convert_fp16(req.onnx_path, out / ONNX_FILES["onnx_fp16"])
        files["onnx_fp16"] = ONNX_FILES["onnx_fp16"]
    elif settings.precision == "int8" and not settings.trt_calibrator:
        from edgekd.export.onnx_int8 import build_int8

        result = build_int8(req, ONNX_FILES["onnx_qdq"], flavour="tensorrt")
        meta.update(result.metadata)
        meta["qdq_fp16"] = convert_qdq_fp16(out / ONNX_FILES["onnx_qdq"], out / ONNX_FILES["onnx_qdq_fp16"])
        files.update(onnx_qdq=ONNX_FILES["onnx_qdq"], onnx_qdq_fp16=ONNX_FILES["onnx_qdq_fp16"])
    meta["contract"] = check_engine_onnx(out, files)
    return files, meta


def check_engine_onnx(out: Path, files: dict[str, str]) -> dict[str, Any]:
    """Hold each file to the contract of the TensorRT parsers that read it (each was validated with onnx's checks and
    onnxruntime where it was written: export_onnx, convert_fp16, build_int8, convert_qdq_fp16); raises EdgekdError
    naming the file and node. Returns {file: {"tensorrt": families, "weighted_layers": counts by precision}}."""
    from edgekd.export.trt_contract import check_for_tensorrt

    return {name: check_for_tensorrt(out / name, READ_BY[role]) for role, name in files.items()}


def gate_engine_onnx(gate_model: Callable[[Path, str], dict[str, Any]], onnx_path: Path, files: dict[str, str],
                     meta: dict[str, Any]) -> dict[str, Any]:
    """Run the parity gate on the ONNX the engine will be built from (onnxruntime on this CPU); raise
    EngineOnnxGateError when it fails, so that no engine is built from it."""
    report = gate_model(onnx_path, "onnxruntime")
    report["where"] = f"{onnx_path.name} on onnxruntime (the ONNX the TensorRT engine is built from)"
    summary = {k: report.get(k) for k in ("passed", "reasons", "backend", "where")}
    summary["metrics"] = {k: report["metrics"].get(k) for k in ("cosine_mean", "cosine_p01", "cosine_min",
                                                                "top1_agreement", "top1_agreement_strict")}
    if not report["passed"]:
        result = ExportResult(files=files, backend="tensorrt", metadata={"tensorrt": {**meta, "engine": "not built"}})
        raise EngineOnnxGateError(f"{onnx_path.name} failed the parity gate ({'; '.join(report['reasons'])}); no "
                                  "engine is built from it", result, report)
    return summary


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


def save_parity_inputs(out: Path, req: ExportRequest, max_images: int = MAX_PARITY_IMAGES) -> None:
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


def calib_cache_name(onnx_path: Path) -> str:
    """The legacy calibrator's cache, named by the ONNX it was made for: a new model never reuses a stale cache."""
    return f"calib-{sha256_file(onnx_path)[:16]}.cache"


def pending_message(bundle: Path, reason: str, commands: dict[str, Any]) -> str:
    lines = [f"TensorRT engine not built ({reason}); {bundle} holds the TensorRT-ready ONNX and build settings.",
             "On the device (TensorRT + GPU), build it with edgekd:", f"  {commands['edgekd']}",
             f"or with trtexec only: {commands['script']}", "or by hand:"]
    lines += [f"  {label}: {cmd}" for label, cmd in commands["trtexec"].items()]
    if "note" in commands:
        lines.append(f"  ({commands['note']})")
    return "\n".join(lines)


# --- the builder ----------------------------------------------------------------------------------------------------

def build_engine(onnx_files: dict[str, Path], engine_path: Path, settings: TrtBuildSettings,
                 bundle_dir: Path | None = None, calib: np.ndarray | None = None) -> dict[str, Any]:
    """Build and serialize a TensorRT engine; writes engine_path + engine.json beside it.

    onnx_files: role (ONNX_FILES' keys) -> path; the installed TensorRT's plan picks one.
    Returns the facts recorded in engine.json (versions, GPU, plan, profile, int8 and DLA details, build seconds).
    """
    trt = require("tensorrt", extra="tensorrt", purpose="building TensorRT engines")
    engine_path = Path(engine_path)
    bundle_dir = Path(bundle_dir or engine_path.parent)
    caps = TrtCapabilities.detect(trt)
    plan = plan_for(settings, caps)
    onnx_path = onnx_files.get(plan.onnx_role)
    if onnx_path is None or not Path(onnx_path).is_file():
        raise EdgekdError(f"TensorRT {caps.version} builds {settings.precision} from the bundle's "
                          f"{ONNX_FILES[plan.onnx_role]}, which is missing; export the bundle again with edgekd")
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, caps, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgekdError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors[:500]}")
    check_network(trt, network, plan, settings.input_name, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(settings.input_name, settings.shape(settings.min_batch), settings.shape(settings.opt_batch),
                      settings.shape(settings.max_batch))
    config.add_optimization_profile(profile)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    int8: dict[str, Any] = {"mode": plan.quantization} if plan.quantization else {}
    calibrator = None
    if plan.quantization == "implicit_calibration":
        cache = bundle_dir / calib_cache_name(onnx_path)
        calibrator, int8 = attach_legacy_calibrator(trt, builder, config, settings, calib, cache)
    if settings.keep_fp16:
        int8["keep_fp16"] = keep_layers_in_fp16(trt, network, settings.keep_fp16)
    dla = configure_dla(trt, builder, config, network, settings) if settings.dla_core is not None else None

    timing_path = Path(settings.timing_cache)
    timing_path = timing_path if timing_path.is_absolute() else bundle_dir / timing_path
    use_timing_cache(config, timing_path)
    log.info("building TensorRT %s engine from %s (TensorRT %s, %s typing)", settings.precision, onnx_path.name,
             caps.version, "strong" if plan.strongly_typed else "weak")
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
    facts = engine_facts(engine_path, onnx_path, settings.precision, caps.version, gpu_info() or {},
                         "edgekd.export.tensorrt.build_engine", plan=plan.to_dict(), capabilities=asdict(caps),
                         settings=settings.to_dict(),
                         profile={"input": settings.input_name, "min": list(settings.shape(settings.min_batch)),
                                  "opt": list(settings.shape(settings.opt_batch)),
                                  "max": list(settings.shape(settings.max_batch))},
                         dla_core=settings.dla_core, dla=dla, timing_cache=str(timing_path), int8=int8 or None,
                         build_seconds=round(seconds, 2))
    write_engine_manifest(facts, engine_path.parent)
    return facts


def network_flags(trt: Any, caps: TrtCapabilities, plan: BuildPlan) -> int:
    """create_network flags: EXPLICIT_BATCH on 8.x (ignored from 10.0), STRONGLY_TYPED where a strongly typed build
    must be asked for (10.x; 11.x networks always are, and the flag is deprecated there)."""
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if caps.explicit_batch_flag:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if plan.strongly_typed and caps.weak_typing:
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def check_network(trt: Any, network: Any, plan: BuildPlan, input_name: str, onnx_path: Path) -> None:
    """The parsed network is the one the plan expects: the bundle's input, and (strongly typed) fp16 tensors for an
    fp16 build; Q/DQ layers for explicit INT8. A wrong ONNX would otherwise build silently at another precision."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if not inputs or inputs[0].name != input_name:
        raise EdgekdError(f"{onnx_path}: input is {[i.name for i in inputs]}, the bundle expects {input_name!r}")
    if plan.quantization == "explicit_qdq" and not network_has_qdq(trt, network):
        raise EdgekdError(f"{onnx_path}: no Q/DQ nodes; INT8 is built from the bundle's "
                          f"{ONNX_FILES[plan.onnx_role]} (run --from-onnx without a file to use it)")
    if plan.strongly_typed and plan.precision == "fp16" and not network_has_fp16(trt, network):
        raise EdgekdError(f"{onnx_path}: no fp16 tensors, so a strongly typed build would run in fp32; fp16 is built "
                          f"from the bundle's {ONNX_FILES['onnx_fp16']} (run --from-onnx without a file to use it)")


def network_has_qdq(trt: Any, network: Any) -> bool:
    """True when the parsed ONNX carries Q/DQ nodes (explicit quantisation: no calibrator needed)."""
    qdq = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    return any(network.get_layer(i).type in qdq for i in range(network.num_layers))


def network_has_fp16(trt: Any, network: Any) -> bool:
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if any(layer.get_output(j).dtype == trt.float16 for j in range(layer.num_outputs)):
            return True
    return False


def attach_legacy_calibrator(trt: Any, builder: Any, config: Any, settings: TrtBuildSettings,
                             calib: np.ndarray | None, cache: Path) -> tuple[Any, dict[str, Any]]:
    """TensorRT < 10, --trt-calibrator: implicit INT8 calibration with an IInt8 calibrator (legacy, JetPack 5)."""
    from edgekd.export.tensorrt_calibrator import make_calibrator
    from edgekd.runtime import engine_check

    cudart = engine_check.import_cudart()
    calibrator = make_calibrator(trt, cudart, calib, settings.calib_batch, cache, settings.calib_method)
    config.int8_calibrator = calibrator
    if hasattr(config, "set_calibration_profile"):  # dynamic shapes: calibrate at the calibration batch
        calib_profile = builder.create_optimization_profile()
        shape = settings.shape(settings.calib_batch)
        calib_profile.set_shape(settings.input_name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
    return calibrator, {"mode": "implicit_calibration (legacy)", "calib_method": settings.calib_method,
                        "calib_batch": settings.calib_batch,
                        "calibration_images": 0 if calib is None else len(calib), "calibration_cache": cache.name}


def keep_layers_in_fp16(trt: Any, network: Any, names: tuple[str, ...]) -> list[str]:
    """Pin the named layers (ONNX node names) to fp16 inside a weakly typed int8 engine (with the plan's
    OBEY_PRECISION_CONSTRAINTS flag)."""
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    missing = [n for n in names if n not in layers]
    if missing:
        close = [n for n in layers if missing[0].rsplit("/", 1)[-1] in n][:5]
        raise EdgekdError(f"--keep-fp16 {missing[0]!r}: no such layer in the TensorRT network"
                          + (f"; similar: {', '.join(close)}" if close else ""))
    for name in names:
        layers[name].precision = trt.float16
    return list(names)


def configure_dla(trt: Any, builder: Any, config: Any, network: Any, settings: TrtBuildSettings) -> dict[str, Any]:
    """Default device DLA on settings.dla_core; the layers DLA cannot run (IBuilderConfig.can_run_on_DLA) run on the
    GPU with GPU fallback, and an engine where none of them runs on DLA is refused."""
    core = settings.dla_core
    if builder.num_DLA_cores <= core:
        raise EdgekdError(f"--dla-core {core}: this device has {builder.num_DLA_cores} DLA core(s)")
    max_dla = getattr(builder, "max_DLA_batch_size", None)
    if max_dla is not None and settings.max_batch > max_dla:
        raise EdgekdError(f"--dla-core: batch {settings.max_batch} exceeds this DLA's maximum {max_dla}; lower "
                          "--opt-batch")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    on_gpu = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
    if on_gpu and not settings.gpu_fallback:
        raise EdgekdError(f"--dla-core {core}: {len(on_gpu)} layers cannot run on DLA (e.g. {on_gpu[0]}) and GPU "
                          "fallback is off")
    if layers and len(on_gpu) == len(layers):
        raise EdgekdError(f"--dla-core {core}: none of the {len(layers)} layers can run on DLA, so the whole engine "
                          "would run on the GPU; build without --dla-core")
    if on_gpu:
        log.warning("DLA core %d: %d of %d layers fall back to the GPU (%s%s)", core, len(on_gpu), len(layers),
                    ", ".join(on_gpu[:5]), ", ..." if len(on_gpu) > 5 else "")
    return {"core": core, "layers": len(layers), "gpu_fallback_layers": on_gpu,
            "static_batch": settings.opt_batch}


def use_timing_cache(config: Any, path: Path) -> None:
    """Reuse the timing cache at `path` (a mismatching one, from another TensorRT/GPU, is replaced)."""
    timing = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if not config.set_timing_cache(timing, False):
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


# --- on the device: --from-onnx ---------------------------------------------------------------------------------------

def build_from_onnx(bundle: str | Path, onnx_path: str | Path | None = None, **options: Any) -> Path:
    """`edgekd export BUNDLE --target tensorrt --from-onnx [ONNX]`: build the engine on the device from a bundle
    prepared elsewhere (tensorrt_build.json, the ONNX files, val.npy + val_reference.npy), check parity against the
    torch reference embeddings, and update the bundle's edgekd.json. Without `onnx_path` the installed TensorRT's
    plan picks the bundle's file (model.fp16.onnx / model.qdq.onnx / model.onnx). Options override the recorded
    settings (precision, min/opt/max_batch, workspace_gb, dla_core, timing_cache, trt_calibrator, keep_fp16,
    min_cosine). Returns the engine path.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise EdgekdError(f"{bundle}: not a directory; pass the bundle written by `edgekd export --target tensorrt`")
    build_file = bundle / BUILD_FILE
    if not build_file.is_file():
        raise EdgekdError(f"{bundle}: no {BUILD_FILE}; export it first with `edgekd export RUN --target tensorrt "
                          f"--out {bundle}` (on any machine)")
    record = read_json(build_file)
    min_cosine = options.pop("min_cosine", None)
    settings = TrtBuildSettings.from_dict(record["settings"]).with_options(options)
    onnx_files = {role: bundle / f for role, f in (record.get("onnx_files") or {"onnx": record["onnx"]}).items()}
    if onnx_path is not None:
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise EdgekdError(f"--from-onnx {onnx_path}: no such file")
        if onnx_path.resolve().parent != bundle.resolve():
            shutil.copyfile(onnx_path, bundle / onnx_path.name)
            onnx_path = bundle / onnx_path.name
        onnx_files = dict.fromkeys(ONNX_FILES, onnx_path)  # the file given, whatever the plan
    calib = load_inputs(bundle / CALIB_FILE) if settings.trt_calibrator and (bundle / CALIB_FILE).is_file() else None
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise NeedsDeviceError(f"--from-onnx builds the engine on the device, but {reason}")
    facts = build_engine(onnx_files, bundle / ENGINE_FILE, settings, bundle_dir=bundle, calib=calib)
    parity = device_parity(bundle, settings.precision, min_cosine)
    update_bundle_manifest(bundle, facts, parity)
    if parity and not parity["passed"]:
        raise EngineParityError(f"{bundle / ENGINE_FILE}: parity failed ({'; '.join(parity['reasons'])}); try "
                                "--precision fp16, or export again with more calibration images or --auto-mixed")
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


def update_bundle_manifest(bundle: Path, facts: dict[str, Any], parity: dict[str, Any] | None) -> None:
    """Point the bundle's edgekd.json at the new engine (adds fields only; re-hashes every file)."""
    from edgekd.export.bundle import MANIFEST, write_manifest

    path = bundle / MANIFEST
    if not path.is_file():
        log.warning("%s: no %s to update; the engine and %s stand alone", bundle, MANIFEST, ENGINE_MANIFEST)
        return
    manifest = read_json(path)
    files = dict(manifest.get("files") or {})
    files.update(model=ENGINE_FILE, engine_manifest=ENGINE_MANIFEST)
    if facts["onnx"] not in files.values():
        files["onnx_engine_source"] = facts["onnx"]
    if (facts.get("int8") or {}).get("calibration_cache"):
        files["calib_cache"] = facts["int8"]["calibration_cache"]
    target_meta = dict(manifest.get("target_metadata") or {})
    trt_meta = dict(target_meta.get("tensorrt") or {})
    trt_meta.update({k: v for k, v in facts.items() if k not in ("format", "version")}, engine="built")
    target_meta["tensorrt"] = trt_meta
    manifest.update(files=files, target_metadata=target_meta, precision=facts["precision"], backend="tensorrt")
    manifest.setdefault("versions", {})["tensorrt"] = facts["tensorrt_version"]
    if parity is not None:
        parity = {**parity, "onnx_gate": (manifest.get("parity") or {}).get("onnx_gate")}
        manifest["parity"] = parity
    manifest.pop("sha256", None)
    write_manifest(bundle, manifest)
