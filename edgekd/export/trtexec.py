"""The device side of a TensorRT bundle without Python's builder: trtexec commands per TensorRT family, and the one
writer of engine.json (used by edgekd's builder and, through `python3 -m edgekd.export.trtexec`, by
export/jetson/build_engine.sh). Torch-free: `pip install edgekd` on the device is enough.

    python3 -m edgekd.export.trtexec args BUNDLE --trt-version 10.3.0 [--precision int8] [--max-batch 4] ...
        prints the trtexec arguments (one per line) for that TensorRT
    python3 -m edgekd.export.trtexec manifest BUNDLE --trt-version 10.3.0 --built-by trtexec [--onnx FILE]
        writes BUNDLE/engine.json for BUNDLE/model.engine
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, read_json, sha256_file
from edgekd.export.tensorrt_plan import DLA_FAMILIES, FAMILIES, BuildPlan, TrtCapabilities, plan_build, trtexec_args
from edgekd.export.tensorrt_settings import TrtBuildSettings

ENGINE_FILE = "model.engine"
ENGINE_MANIFEST = "engine.json"  # the name edgekd.runtime.engine_check reads
ENGINE_FORMAT = "edgekd.engine"
BUILD_FILE = "tensorrt_build.json"


# --- trtexec --------------------------------------------------------------------------------------------------------

def trtexec_command(settings: Any, caps: TrtCapabilities, onnx_files: dict[str, str], engine: str = ENGINE_FILE,
                    calib_cache: str | None = None) -> list[str]:
    """The trtexec invocation equivalent to edgekd's builder on TensorRT `caps` (same ONNX, typing, precision flags,
    shapes, DLA and timing cache). settings: a TrtBuildSettings; onnx_files: role -> file name."""
    plan = plan_for(settings, caps)
    onnx = onnx_files.get(plan.onnx_role)
    if onnx is None:
        raise EdgekdError(f"TensorRT {caps.version} builds {settings.precision} from the {plan.onnx_role} file, which "
                          "this bundle lacks; export it again with edgekd")
    name = settings.input_name
    dims = {k: "x".join(str(d) for d in settings.shape(b)) for k, b in
            (("min", settings.min_batch), ("opt", settings.opt_batch), ("max", settings.max_batch))}
    cmd = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}", f"--minShapes={name}:{dims['min']}",
           f"--optShapes={name}:{dims['opt']}", f"--maxShapes={name}:{dims['max']}",
           f"--memPoolSize=workspace:{int(settings.workspace_gb * 1024)}",  # MiB
           f"--timingCacheFile={settings.timing_cache}", *trtexec_args(caps, plan)]
    if settings.keep_fp16:
        cmd.append("--layerPrecisions=" + ",".join(f"{layer}:fp16" for layer in settings.keep_fp16))
    if plan.quantization == "implicit_calibration" and calib_cache:
        cmd.append(f"--calib={calib_cache}")
    if settings.dla_core is not None:
        cmd.append(f"--useDLACore={settings.dla_core}")
        if settings.gpu_fallback:
            cmd.append("--allowGPUFallback")
    return cmd


def plan_for(settings: Any, caps: TrtCapabilities) -> BuildPlan:
    return plan_build(caps, settings.precision, settings.dla_core, settings.gpu_fallback, settings.trt_calibrator,
                      settings.keep_fp16)


def device_commands(bundle: Path, settings: Any, onnx_files: dict[str, str],
                    calib_cache: str | None = None) -> dict[str, Any]:
    """How to build the engine on the device, from inside the bundle: edgekd (preferred: it also writes engine.json
    and runs the parity check), or trtexec for each TensorRT family this build is possible on."""
    edgekd = ["edgekd", "export", str(bundle), "--target", "tensorrt", "--precision", settings.precision,
              "--from-onnx"]
    if settings.dla_core is not None:
        edgekd += ["--dla-core", str(settings.dla_core)]
    if settings.trt_calibrator:
        edgekd.append("--trt-calibrator")
    trtexec: dict[str, str] = {}
    for label, version, where in FAMILIES + (DLA_FAMILIES if settings.dla_core is not None else ()):
        try:
            cmd = trtexec_command(settings, TrtCapabilities.documented(version), onnx_files, calib_cache=calib_cache)
        except EdgekdError:
            continue  # not possible on that family (e.g. the legacy calibrator on 10.x+)
        trtexec[f"TensorRT {label} ({where})"] = f"cd {shlex.quote(str(bundle))} && {shlex.join(cmd)}"
    out: dict[str, Any] = {"edgekd": shlex.join(edgekd), "trtexec": trtexec,
                           "script": f"export/jetson/build_engine.sh {shlex.quote(str(bundle))}"}
    if settings.trt_calibrator:
        out["note"] = ("trtexec cannot calibrate from images: run the edgekd command once (it writes the calibration "
                       "cache), then trtexec can reuse it with --calib")
    return out


# --- engine.json ----------------------------------------------------------------------------------------------------

def engine_facts(engine: Path, onnx: Path, precision: str, trt_version: str, gpu: dict[str, str] | None,
                 built_by: str, **extra: Any) -> dict[str, Any]:
    """The contents of engine.json: what edgekd.runtime.engine_check compares with the machine that loads the
    engine (TensorRT major.minor, GPU name, compute capability), plus provenance."""
    gpu = gpu or {}
    return {"format": ENGINE_FORMAT, "version": 1, "engine_file": engine.name, "tensorrt_version": trt_version,
            "gpu_name": gpu.get("name", ""), "compute_capability": gpu.get("compute_capability", ""),
            "precision": precision, "onnx": onnx.name, "onnx_sha256": sha256_file(onnx),
            "engine_sha256": sha256_file(engine), "built_by": built_by, **extra,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}


def write_engine_manifest(facts: dict[str, Any], bundle: Path) -> Path:
    path = Path(bundle) / ENGINE_MANIFEST
    atomic_write_json(path, facts)
    return path


def detect_gpu() -> dict[str, str] | None:
    """GPU name + compute capability: cuda-python where installed, else nvidia-smi (absent on JetPack 5)."""
    try:
        from edgekd.runtime.engine_check import gpu_info

        return gpu_info()
    except (ImportError, EdgekdError):
        pass
    from edgekd.bench.env import query_gpus

    gpus = query_gpus(("name", "compute_cap"), timeout=20)
    return {"name": gpus[0][0], "compute_capability": gpus[0][1]} if gpus else None


# --- the command line of export/jetson/build_engine.sh ---------------------------------------------------------------

def _settings(bundle: Path, args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    build = bundle / BUILD_FILE
    if not build.is_file():
        raise EdgekdError(f"{bundle}: no {BUILD_FILE}; export it first with `edgekd export RUN --target tensorrt`")
    record = read_json(build)
    overrides = {k: getattr(args, k, None) for k in ("precision", "min_batch", "opt_batch", "max_batch", "dla_core",
                                                     "timing_cache")}
    if getattr(args, "workspace_mib", None):
        overrides["workspace_gb"] = args.workspace_mib / 1024
    settings = TrtBuildSettings.from_dict(record["settings"]).with_options(overrides)
    return settings, dict(record.get("onnx_files") or {"onnx": record.get("onnx", "model.onnx")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edgekd.export.trtexec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("args", help="print the trtexec arguments for BUNDLE on this TensorRT, one per line")
    m = sub.add_parser("manifest", help="write BUNDLE/engine.json for the engine trtexec built")
    for p in (a, m):
        p.add_argument("bundle", type=Path)
        p.add_argument("--trt-version", required=True)
        p.add_argument("--precision", choices=("fp32", "fp16", "int8"))
    for opt in ("--min-batch", "--opt-batch", "--max-batch", "--dla-core", "--workspace-mib"):
        a.add_argument(opt, type=int)
    a.add_argument("--timing-cache")
    a.add_argument("--calib-cache")
    m.add_argument("--onnx", help="the ONNX file the engine was built from (default: the plan's)")
    m.add_argument("--built-by", default="trtexec (export/jetson/build_engine.sh)")
    args = parser.parse_args(argv)
    try:
        settings, onnx_files = _settings(args.bundle, args)
        caps = TrtCapabilities.documented(args.trt_version)
        if args.cmd == "args":
            if not Path(settings.timing_cache).is_absolute():
                settings = replace(settings, timing_cache=str(args.bundle / settings.timing_cache))
            cmd = trtexec_command(settings, caps, {k: str(args.bundle / v) for k, v in onnx_files.items()},
                                  engine=str(args.bundle / ENGINE_FILE), calib_cache=args.calib_cache)
            print("\n".join(cmd[1:]))
            return 0
        onnx = Path(args.onnx) if args.onnx else args.bundle / onnx_files[plan_for(settings, caps).onnx_role]
        facts = engine_facts(args.bundle / ENGINE_FILE, onnx, settings.precision, args.trt_version, detect_gpu(),
                             args.built_by, settings=settings.to_dict(), dla_core=settings.dla_core)
        print(f"wrote {write_engine_manifest(facts, args.bundle)}")
        return 0
    except (EdgekdError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
