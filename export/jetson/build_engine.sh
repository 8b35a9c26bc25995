#!/usr/bin/env bash
# Build a TensorRT engine for an edgekd bundle on the device (Jetson or any NVIDIA GPU) with trtexec only.
# The flags mirror edgekd.export.tensorrt.build_engine (same profile, precision, DLA and timing-cache settings);
# prefer `edgekd export BUNDLE --target tensorrt --from-onnx BUNDLE/model.onnx` when Python is available: it also
# calibrates INT8 from the bundle's calib.npy, writes engine.json and runs the parity check.
#
#   export/jetson/build_engine.sh BUNDLE [--precision fp32|fp16|int8] [--min-batch 1] [--opt-batch 1]
#                                 [--max-batch 8] [--workspace-mib 2048] [--dla-core N] [--onnx FILE]
#                                 [--calib-cache FILE] [--timing-cache FILE]
#
# INT8 with trtexec needs either a Q/DQ ONNX (--onnx BUNDLE/model.qdq.onnx, explicit quantisation) or a
# calibration cache written by a previous `edgekd ... --from-onnx` build (--calib-cache BUNDLE/calib.cache);
# plain --int8 without either uses placeholder scales (fine for timing, wrong for accuracy) and is refused here.
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[[ $# -ge 1 ]] || usage 2
[[ "$1" == "-h" || "$1" == "--help" ]] && usage 0
BUNDLE=$1; shift
PRECISION="" MIN_BATCH="" OPT_BATCH="" MAX_BATCH="" WORKSPACE_MIB="" DLA_CORE="" ONNX="" CALIB_CACHE="" TIMING=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --precision) PRECISION=$2; shift 2 ;;
    --min-batch) MIN_BATCH=$2; shift 2 ;;
    --opt-batch) OPT_BATCH=$2; shift 2 ;;
    --max-batch) MAX_BATCH=$2; shift 2 ;;
    --workspace-mib) WORKSPACE_MIB=$2; shift 2 ;;
    --dla-core) DLA_CORE=$2; shift 2 ;;
    --onnx) ONNX=$2; shift 2 ;;
    --calib-cache) CALIB_CACHE=$2; shift 2 ;;
    --timing-cache) TIMING=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -d "$BUNDLE" ]] || { echo "error: $BUNDLE is not a directory (an edgekd bundle)" >&2; exit 2; }
TRTEXEC=$(command -v trtexec || true)
[[ -z "$TRTEXEC" && -x /usr/src/tensorrt/bin/trtexec ]] && TRTEXEC=/usr/src/tensorrt/bin/trtexec  # JetPack location
[[ -n "$TRTEXEC" ]] || { echo "error: trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec)" >&2; exit 3; }

# defaults from the bundle's tensorrt_build.json (written by `edgekd export --target tensorrt`)
BUILD_JSON="$BUNDLE/tensorrt_build.json"
json_get() { python3 -c "import json,sys; s=json.load(open('$BUILD_JSON'))['settings']; v=s.get('$1'); \
print('' if v is None else ('x'.join(map(str, v)) if isinstance(v, list) else v))" 2>/dev/null || true; }
if [[ -f "$BUILD_JSON" ]]; then
  PRECISION=${PRECISION:-$(json_get precision)}; MIN_BATCH=${MIN_BATCH:-$(json_get min_batch)}
  OPT_BATCH=${OPT_BATCH:-$(json_get opt_batch)}; MAX_BATCH=${MAX_BATCH:-$(json_get max_batch)}
  DLA_CORE=${DLA_CORE:-$(json_get dla_core)}; INPUT_NAME=$(json_get input_name); SHAPE=$(json_get input_shape)
  WS_GB=$(json_get workspace_gb); [[ -n "$WS_GB" && -z "$WORKSPACE_MIB" ]] && WORKSPACE_MIB=$(python3 -c "print(int($WS_GB*1024))")
fi
PRECISION=${PRECISION:-fp16}; MIN_BATCH=${MIN_BATCH:-1}; OPT_BATCH=${OPT_BATCH:-1}; MAX_BATCH=${MAX_BATCH:-8}
WORKSPACE_MIB=${WORKSPACE_MIB:-2048}; INPUT_NAME=${INPUT_NAME:-pixels}; SHAPE=${SHAPE:-3x224x224}
ONNX=${ONNX:-$BUNDLE/model.onnx}; TIMING=${TIMING:-$BUNDLE/timing.cache}
[[ -f "$ONNX" ]] || { echo "error: $ONNX not found; pass --onnx FILE" >&2; exit 2; }

ARGS=(--onnx="$ONNX" --saveEngine="$BUNDLE/model.engine"
      --minShapes="$INPUT_NAME:${MIN_BATCH}x$SHAPE" --optShapes="$INPUT_NAME:${OPT_BATCH}x$SHAPE"
      --maxShapes="$INPUT_NAME:${MAX_BATCH}x$SHAPE"
      --memPoolSize=workspace:"$WORKSPACE_MIB" --timingCacheFile="$TIMING")
case "$PRECISION" in
  fp32) ;;
  fp16) ARGS+=(--fp16) ;;
  int8)
    ARGS+=(--fp16 --int8)
    if [[ -n "$CALIB_CACHE" ]]; then ARGS+=(--calib="$CALIB_CACHE")
    elif [[ -f "$BUNDLE/calib.cache" && "$ONNX" != *qdq* ]]; then ARGS+=(--calib="$BUNDLE/calib.cache")
    elif [[ "$ONNX" != *qdq* ]]; then
      echo "error: INT8 needs a Q/DQ ONNX (--onnx ...qdq.onnx) or a calibration cache (--calib-cache);" \
           "run 'edgekd export $BUNDLE --target tensorrt --precision int8 --from-onnx $ONNX' to calibrate" >&2
      exit 2
    fi ;;
  *) echo "error: --precision $PRECISION: use fp32, fp16 or int8" >&2; exit 2 ;;
esac
if [[ -n "$DLA_CORE" ]]; then
  [[ "$PRECISION" == fp32 ]] && { echo "error: DLA runs fp16/int8 only; pass --precision fp16 or int8" >&2; exit 2; }
  ARGS+=(--useDLACore="$DLA_CORE" --allowGPUFallback)
fi
echo "+ $TRTEXEC ${ARGS[*]}"
"$TRTEXEC" "${ARGS[@]}"
# record what was built so the edgekd runtime can refuse the engine on another TensorRT/GPU
TRT_VERSION=$(python3 -c "import tensorrt; print(tensorrt.__version__)" 2>/dev/null || \
              dpkg-query -W -f='${Version}' libnvinfer8 libnvinfer10 2>/dev/null | head -n1 | cut -d- -f1 || true)
# the same name/compute capability the runtime reads (cudaGetDeviceProperties); nvidia-smi where cuda-python is
# missing (Jetson has no nvidia-smi on JetPack 5: the fields stay empty and the runtime checks the version only)
GPU=$(python3 -c "
try:
    from cuda.bindings import runtime as rt
except ImportError:
    from cuda import cudart as rt
err, p = rt.cudaGetDeviceProperties(0)
print(p.name.decode().rstrip(chr(0)) + ',' + f'{p.major}.{p.minor}')" 2>/dev/null || \
      nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n1 || true)
python3 - "$BUNDLE" "$PRECISION" "$(basename "$ONNX")" "$TRT_VERSION" "$GPU" "$DLA_CORE" <<'PY'
import datetime, hashlib, json, os, sys
bundle, precision, onnx, trt, gpu, dla = sys.argv[1:7]
name, _, cc = (gpu.partition(",") if gpu else ("", "", ""))
sha = hashlib.sha256(open(os.path.join(bundle, onnx), "rb").read()).hexdigest()
manifest = {"format": "edgekd.engine", "version": 1, "engine_file": "model.engine", "tensorrt_version": trt,
            "gpu_name": name.strip(), "compute_capability": cc.strip(), "precision": precision, "onnx": onnx,
            "onnx_sha256": sha, "dla_core": int(dla) if dla else None, "built_by": "trtexec (export/jetson)",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
tmp = os.path.join(bundle, ".engine.json.tmp")
with open(tmp, "w") as f:
    json.dump(manifest, f, indent=2)
os.replace(tmp, os.path.join(bundle, "engine.json"))
print(f"wrote {bundle}/model.engine and engine.json (TensorRT {trt or 'unknown'}, GPU {name or 'unknown'})")
PY
