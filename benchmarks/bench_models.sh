#!/usr/bin/env bash
# Reproduce the committed tables in benchmarks/results/ with one command:
#     benchmarks/bench_models.sh [WORK_DIR]          (run from the repository root; ~12-20 min on a 2-core CPU)
# Table 1: teacher ViT-B-32 (random weights) vs four students at 224 px, batch 1 and 32, threads 1 and 2, on torch
#          eager / onnxruntime / OpenVINO in fp32, plus the students' INT8 bundles from `edgekd export`.
# Table 2: the end-to-end runtime path (JPEG decode -> resize/normalise -> infer -> score -> top-5) of the INT8
#          bundles next to model-only time.
# Weights are random: latency does not depend on them (accuracy columns need trained runs).
set -euo pipefail
PY=${PY:-.venv/bin/python}
EDGEKD=${EDGEKD:-.venv/bin/edgekd}
WORK=${1:-/tmp/edgekd-bench-work}
RESULTS=${RESULTS:-benchmarks/results}
ARCHS=(mobilenetv4_conv_small mobilenetv3_large_100 efficientvit_b0 resnet18)
TIMING=(--warmup-s 0.5 --min-time-s 1.5 --min-iters 3)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# calibration images: $CALIB, else CIFAR-10 test JPEGs unpacked from ../shared/assets (beside the repository)
if [[ -z "${CALIB:-}" ]]; then
  DATA=$("$REPO/../shared/assets/unpack-cifar10.sh" /tmp/edgekd-data | tail -n 1) || {
    echo "Error: set CALIB=DIR (calibration images); ../shared/assets/unpack-cifar10.sh is not there" >&2; exit 2; }
  CALIB=$DATA/test
fi
mkdir -p "$WORK"

# 1. random-weight run dirs, then INT8 bundles for OpenVINO (NNCF) and onnxruntime (static QDQ)
$PY benchmarks/make_random_runs.py "$WORK/runs" "${ARCHS[@]}"
BUNDLES=()
for arch in "${ARCHS[@]}"; do
  for target in openvino onnx; do
    out="$WORK/bundles/$arch-$target-int8"
    if [ ! -f "$out/edgekd.json" ]; then
      # --no-gate: random weights make the parity gate meaningless (it is recorded in edgekd.json)
      $EDGEKD export "$WORK/runs/$arch" --target $target --precision int8 --calib "$CALIB" --calib-images 128 \
        --no-gate --out "$out" --overwrite
    fi
    BUNDLES+=("$out")
  done
done

# 2. Table 1 (fp32 + INT8 in one results file per setting, so speed-ups against the teacher come from the same run
#    and backend). Ordered by priority: the batch-1 / 2-thread goal row first.
# the teacher in every precision its backends offer here (INT8 calibrated like the students): 'vs best teacher'
# compares each student with the teacher a user would actually run on this CPU
BENCH_ALL=(--random-teacher "${ARCHS[@]}" "${BUNDLES[@]}" --backend torch,onnxruntime,openvino --calib "$CALIB"
           --allow-ungated "${TIMING[@]}")
ONLY=${ONLY:-}  # e.g. ONLY="cpu-b1-t2 cpu-b32-t2": just these tables
run() {  # run NAME ARGS...: bench into $WORK/NAME and copy the tables to $RESULTS/NAME
  local name=$1; shift
  [[ -z "$ONLY" || " $ONLY " == *" $name "* ]] || return 0
  $EDGEKD bench "$@" --out "$WORK/$name"
  mkdir -p "$RESULTS/$name"
  cp "$WORK/$name"/results.{json,md} "$RESULTS/$name/"
  cp "$WORK/$name"/*.png "$RESULTS/$name/" 2>/dev/null || true
}
run cpu-b1-t2 "${BENCH_ALL[@]}" --batch 1 --threads 2
# 3. Table 2: end-to-end runtime path (INT8 bundles, batch 1, 2 threads)
run e2e-t2 "${BUNDLES[@]}" --backend onnxruntime,openvino --e2e --batch 1 --threads 2 --allow-ungated "${TIMING[@]}"
run cpu-b32-t2 "${BENCH_ALL[@]}" --batch 32 --threads 2
run cpu-t1 "${BENCH_ALL[@]}" --batch 1,32 --threads 1
echo "tables in $RESULTS/*/results.md"
