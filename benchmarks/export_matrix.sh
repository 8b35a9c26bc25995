#!/usr/bin/env bash
# The export issue's size/latency table in one `edgekd bench` run: mobilenetv4_conv_small and efficientvit_b0 at
# 224 px, batch 1, 2 threads: PyTorch eager, ONNX fp32 (onnxruntime), ONNX INT8, OpenVINO fp32, OpenVINO INT8.
#     benchmarks/export_matrix.sh [WORK_DIR]          (run from the repository root; ~5 min on a 2-core CPU)
# Weights are random (latency and size do not depend on them); INT8 is calibrated on 128 CIFAR-10 test JPEGs.
set -euo pipefail
PY=${PY:-.venv/bin/python}
EDGEKD=${EDGEKD:-.venv/bin/edgekd}
WORK=${1:-/tmp/edgekd-export-matrix}
OUT=${OUT:-benchmarks/results/export_matrix}
ARCHS=(mobilenetv4_conv_small efficientvit_b0)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# calibration images: $CALIB, else CIFAR-10 test JPEGs unpacked from ../shared/assets (beside the repository)
if [[ -z "${CALIB:-}" ]]; then
  DATA=$("$REPO/../shared/assets/unpack-cifar10.sh" /tmp/edgekd-data | tail -n 1) || {
    echo "Error: set CALIB=DIR (calibration images); ../shared/assets/unpack-cifar10.sh is not there" >&2; exit 2; }
  CALIB=$DATA/test
fi
mkdir -p "$WORK"
$PY benchmarks/make_random_runs.py "$WORK/runs" "${ARCHS[@]}"
MODELS=()
for arch in "${ARCHS[@]}"; do
  MODELS+=("$WORK/runs/$arch")  # torch eager + the fp32 ONNX that bench exports for onnxruntime
  for target in onnx openvino; do
    for prec in fp32 int8; do
      [[ $target == onnx && $prec == fp32 ]] && continue  # the run dir's own ONNX row
      out="$WORK/bundles/$arch-$target-$prec"
      [[ -f "$out/edgekd.json" ]] || $EDGEKD export "$WORK/runs/$arch" --target $target --precision $prec \
        --calib "$CALIB" --calib-images 128 --no-gate --out "$out" --overwrite
      MODELS+=("$out")
    done
  done
done
$EDGEKD bench "${MODELS[@]}" --backend torch,onnxruntime,openvino --batch 1 --threads 2 --warmup-s 1 --min-time-s 4 \
  --min-iters 50 --allow-ungated --out "$WORK/bench"
mkdir -p "$OUT"
cp "$WORK/bench"/results.{json,md} "$OUT/"
echo "table: $OUT/results.md"
