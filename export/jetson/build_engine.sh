#!/usr/bin/env bash
# Build a TensorRT engine for an edgekd bundle on the device (Jetson or any NVIDIA GPU) with trtexec.
# The trtexec arguments and engine.json come from edgekd's own Python code (python3 -m edgekd.export.trtexec), so
# this script and `edgekd export --from-onnx` cannot disagree: the same ONNX file per TensorRT version (11.x and 10.x:
# strongly typed from model.fp16.onnx / model.qdq.fp16.onnx; 8.x: --fp16 / --int8), the same profile, DLA and timing
# cache. Needs `pip install edgekd` (torch-free) on the device. Prefer `edgekd export BUNDLE --target tensorrt
# --from-onnx` when the TensorRT Python bindings are there: it also runs the parity check.
#
#   export/jetson/build_engine.sh BUNDLE [--precision fp32|fp16|int8] [--min-batch N] [--opt-batch N]
#                                 [--max-batch N] [--workspace-mib N] [--dla-core N] [--timing-cache FILE]
#                                 [--calib-cache FILE]   (legacy --trt-calibrator bundles, TensorRT 8.x)
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[[ $# -ge 1 ]] || usage 2
[[ "$1" == "-h" || "$1" == "--help" ]] && usage 0
BUNDLE=${1%/}; shift
PASS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --precision|--min-batch|--opt-batch|--max-batch|--workspace-mib|--dla-core|--timing-cache|--calib-cache)
      [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
      PASS+=("$1" "$2"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -d "$BUNDLE" ]] || { echo "error: $BUNDLE is not a directory (an edgekd bundle)" >&2; exit 2; }
PY=${EDGEKD_PYTHON:-python3}
"$PY" -c "import edgekd.export.trtexec" 2>/dev/null || {
  echo "error: $PY cannot import edgekd; pip install edgekd on the device (no torch needed)" >&2; exit 3; }
TRTEXEC=$(command -v trtexec || true)
[[ -z "$TRTEXEC" && -x /usr/src/tensorrt/bin/trtexec ]] && TRTEXEC=/usr/src/tensorrt/bin/trtexec  # JetPack location
[[ -n "$TRTEXEC" ]] || { echo "error: trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec)" >&2; exit 3; }

# trtexec's banner: "[TensorRT v8601]" (8.6.1), "[TensorRT v100300]" (10.3.0)
CODE=$("$TRTEXEC" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9' || true)
case ${#CODE} in
  4) TRT_VERSION="${CODE:0:1}.${CODE:1:1}.$((10#${CODE:2}))" ;;
  6) TRT_VERSION="$((10#${CODE:0:2})).$((10#${CODE:2:2})).$((10#${CODE:4}))" ;;
  *) echo "error: cannot read the TensorRT version from '$TRTEXEC --help'" >&2; exit 3 ;;
esac

PRECISION_ARGS=()
for ((i = 0; i < ${#PASS[@]}; i += 2)); do
  [[ "${PASS[i]}" == --precision ]] && PRECISION_ARGS=(--precision "${PASS[i+1]}")
done
mapfile -t ARGS < <("$PY" -m edgekd.export.trtexec args "$BUNDLE" --trt-version "$TRT_VERSION" "${PASS[@]}")
[[ ${#ARGS[@]} -gt 0 ]] || exit 2  # the Python side printed why
echo "+ $TRTEXEC ${ARGS[*]}"
"$TRTEXEC" "${ARGS[@]}"
"$PY" -m edgekd.export.trtexec manifest "$BUNDLE" --trt-version "$TRT_VERSION" "${PRECISION_ARGS[@]}" \
  --built-by "trtexec (export/jetson/build_engine.sh)"
