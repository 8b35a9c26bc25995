#!/usr/bin/env bash
# End to end on real images: CIFAR-10 -> labels -> teacher cache -> distill -> eval -> export (ONNX/OpenVINO,
# fp32/INT8, parity gate) -> bench (teacher vs student) -> classify -> benchmarks/results/cifar10/.
#
#   benchmarks/cifar10_pipeline.sh [--data DIR] [--work DIR] [--device cpu|cuda] [--pretrained TAG] [--results DIR]
#                                  [--train-per-class N] [--test-per-class N] [--epochs N] [--img-size N]
#
# Every stage is resumable: re-running skips stages whose output is complete (cache manifest "complete", run dir with
# model.safetensors + the pipeline's DONE marker, bundle with edgekd.json, bench with results.json, eval JSON).
# Big artifacts live in --work (default /tmp/edgekd-cifar10, or $EDGEKD_WORK), never in the repository.
# The default teacher is a *random* ViT-B-32 (no model hub here): fidelity/latency are meaningful, zero-shot accuracy
# and the seen/unseen split are not. Use --pretrained openai (or EDGEKD_PRETRAINED=openai) where the hub is reachable.
# See docs/pipeline.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${EDGEKD_DEMO_DATA:-}"
WORK="${EDGEKD_WORK:-/tmp/edgekd-cifar10}"
DEVICE="${EDGEKD_DEVICE:-cpu}"
PRETRAINED="${EDGEKD_PRETRAINED:-}"
RESULTS="$REPO/benchmarks/results/cifar10"
TEACHER="ViT-B-32"
STUDENT="mobilenetv4_conv_small"
UNSEEN="cat,truck"  # held out of distillation (the seen/unseen split of eval)
TRAIN_PER_CLASS="" TEST_PER_CLASS="" EPOCHS="" IMG_SIZE="" TEMPLATES="" BATCH=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --pretrained) PRETRAINED="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    --train-per-class) TRAIN_PER_CLASS="$2"; shift 2 ;;
    --test-per-class) TEST_PER_CLASS="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --img-size) IMG_SIZE="$2"; shift 2 ;;
    --templates) TEMPLATES="$2"; shift 2 ;;
    -h|--help) sed -n 2,13p "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "Error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ "$DEVICE" == cuda* ]]; then  # full data and resolution on a GPU machine
  : "${TRAIN_PER_CLASS:=5000}" "${TEST_PER_CLASS:=1000}" "${EPOCHS:=30}" "${IMG_SIZE:=224}" "${TEMPLATES:=default}"
  : "${BATCH:=256}"
else  # sized for a 2-core CPU in < 45 min; the teacher (~5-10 images/s) is the bottleneck
  : "${TRAIN_PER_CLASS:=500}" "${TEST_PER_CLASS:=100}" "${EPOCHS:=10}" "${IMG_SIZE:=128}" "${TEMPLATES:=simple}"
  : "${BATCH:=64}"
fi
PY="${EDGEKD_PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
EDGEKD=(edgekd_cmd)
edgekd_cmd() { echo "\$ edgekd $*" | sed -e "s#$WORK#WORK#g" -e "s#$REPO/##g" >&2; "$PY" -m edgekd "$@"; }
if [[ -n "$PRETRAINED" ]]; then TEACHER_FLAGS=(--teacher "$TEACHER" --pretrained "$PRETRAINED")
else TEACHER_FLAGS=(--teacher "$TEACHER" --random-teacher); fi
DESC="$REPO/benchmarks/data/cifar10_descriptions.json"
mkdir -p "$WORK" "$RESULTS"
TIMINGS="$WORK/timings.jsonl"
export PYTHONUNBUFFERED=1

# stage NAME DONE_TEST_CMD -- CMD...: run CMD unless DONE_TEST_CMD succeeds; log wall time to timings.jsonl
stage() {
  local name="$1" check="$2"; shift 3
  if eval "$check"; then
    echo "== [$name] done already, skipping"
    printf '{"stage": "%s", "status": "skipped", "seconds": 0, "time": %s}\n' "$name" "$(date +%s)" >> "$TIMINGS"
    return 0
  fi
  echo "== [$name] $*"
  local t0 rc=0; t0=$(date +%s.%N)
  # the stage's output goes to RESULTS/transcript/NAME.txt, WORK shortened and progress bars dropped: the README's
  # example outputs are excerpts of these files (benchmarks/readme_tables.py)
  mkdir -p "$RESULTS/transcript"
  set +e
  "$@" 2>&1 | tee "$WORK/.stage.log"
  rc=${PIPESTATUS[0]}
  set -e
  tr '\r' '\n' < "$WORK/.stage.log" | sed -e "s#$WORK#WORK#g" -e "s#$REPO/##g" -e "s#$PY -m edgekd#edgekd#g" \
    | grep -v -E '[0-9]+%\||━|^\s*$' > "$RESULTS/transcript/$name.txt" || true
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  printf '{"stage": "%s", "status": "%s", "rc": %d, "seconds": %s, "time": %s}\n' "$name" \
    "$([[ $rc == 0 ]] && echo ok || echo failed)" "$rc" "$dt" "$(date +%s)" >> "$TIMINGS"
  echo "== [$name] rc=$rc in ${dt}s"
  return "$rc"
}
complete_cache() { [[ -f "$1/manifest.json" ]] && "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("complete") else 1)' "$1/manifest.json"; }

# --- 1. data: locate or unpack CIFAR-10 JPEGs -----------------------------------------------------------------
if [[ -z "$DATA" ]]; then
  if [[ -d /tmp/edgekd-data/cifar10-images/train ]]; then DATA=/tmp/edgekd-data/cifar10-images
  elif [[ -x "$REPO/../shared/assets/unpack-cifar10.sh" ]]; then
    DATA="$("$REPO/../shared/assets/unpack-cifar10.sh" /tmp/edgekd-data | tail -n 1)"
  else echo "Error: no CIFAR-10 images: pass --data DIR (with train/ and test/ class folders) or set EDGEKD_DEMO_DATA" >&2; exit 2
  fi
fi
[[ -d "$DATA/train" && -d "$DATA/test" ]] || { echo "Error: --data $DATA needs train/<class>/ and test/<class>/ folders" >&2; exit 2; }
echo "data: $DATA  work: $WORK  device: $DEVICE  teacher: ${TEACHER_FLAGS[*]}"

# --- 2. subsets (symlink ImageFolders; seen classes only for training) ---------------------------------------
make_subsets() {
  "$PY" - "$DATA" "$WORK/data" "$TRAIN_PER_CLASS" "$TEST_PER_CLASS" "$UNSEEN" <<'EOF'
import os, sys, json
from pathlib import Path
src, out, ntr, nte, unseen = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(",")
classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
missing = [c for c in unseen if c not in classes]
if missing:
    sys.exit(f"Error: unseen classes {missing} are not CIFAR-10 classes {classes}")
def link(split, name, n, cls, skip=0):
    files = sorted(p for p in (src / split / cls).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    d = out / name / cls
    d.mkdir(parents=True, exist_ok=True)
    for f in files[skip:skip + n]:
        if not (d / f.name).exists():
            os.symlink(f.resolve(), d / f.name)
    return min(n, max(0, len(files) - skip))
counts = {"train": {c: link("train", "train", ntr, c) for c in classes if c not in unseen},
          "test": {c: link("test", "test", nte, c) for c in classes},
          "demo": {c: link("test", "demo", 1, c, skip=nte) for c in classes}}  # classify: images not in test/
json.dump({"source": str(src), "classes": classes, "unseen": unseen, "counts": counts},
          open(out / "subsets.json", "w"), indent=1)
print({k: sum(v.values()) for k, v in counts.items()})
EOF
}
stage subsets "[[ -f '$WORK/data/subsets.json' ]]" -- make_subsets

# --- 3. label pack of all 10 classes (templates + descriptions) ------------------------------------------------
stage labels "[[ -f '$WORK/labels.npz' ]]" -- \
  "${EDGEKD[@]}" labels "${TEACHER_FLAGS[@]}" --device "$DEVICE" --data "$WORK/data/test" \
  --templates "$TEMPLATES" --descriptions "$DESC" --out "$WORK/labels.npz"

# --- 4. teacher caches: train (1 view, the fidelity study's default; seen classes) and test (eval view) ----------
stage cache-train "complete_cache '$WORK/cache-train'" -- \
  "${EDGEKD[@]}" cache "${TEACHER_FLAGS[@]}" --device "$DEVICE" --data "$WORK/data/train" --out "$WORK/cache-train" \
  --views 1 --templates "$TEMPLATES" --descriptions "$DESC" --batch-size "$BATCH" --no-progress
stage cache-test "complete_cache '$WORK/cache-test'" -- \
  "${EDGEKD[@]}" cache "${TEACHER_FLAGS[@]}" --device "$DEVICE" --data "$WORK/data/test" --out "$WORK/cache-test" \
  --views 1 --templates "$TEMPLATES" --descriptions "$DESC" --batch-size "$BATCH" --no-progress

stage info-cache "[[ -s '$RESULTS/transcript/info-cache.txt' && '$RESULTS/transcript/info-cache.txt' -nt '$WORK/cache-train/manifest.json' ]]" -- \
  "${EDGEKD[@]}" info "$WORK/cache-train"
stage students "[[ -s '$RESULTS/transcript/students.txt' ]]" -- "${EDGEKD[@]}" students --img-size 224

# --- 5. distill -----------------------------------------------------------------------------------------------
RUN="$WORK/run-$STUDENT-$IMG_SIZE"
distill() {
  local resume=()
  [[ -f "$RUN/train_state.pt" ]] && resume=(--resume)
  "${EDGEKD[@]}" distill --cache "$WORK/cache-train" --student "$STUDENT" --img-size "$IMG_SIZE" --epochs "$EPOCHS" \
    --batch-size 64 --device "$DEVICE" --out "$RUN" --no-progress --log-every 20 "${resume[@]}" \
    && touch "$RUN/DONE" && echo "\$ head -2 RUN/metrics.csv; tail -1 RUN/metrics.csv" \
    && head -2 "$RUN/metrics.csv" && tail -1 "$RUN/metrics.csv"
}
stage distill "[[ -f '$RUN/model.safetensors' && -f '$RUN/DONE' ]]" -- distill

# --- 6. eval of the run (teacher fidelity; zero-shot + seen/unseen split over all 10 classes) --------------------
mkdir -p "$WORK/eval"
EVAL_ARGS=(--data "$WORK/data/test" --labels "$WORK/labels.npz" --unseen "$UNSEEN" --teacher-cache "$WORK/cache-test"
           --train-index "$WORK/cache-train" --shots 1,5,16 --device "$DEVICE")
stage eval-run "[[ -f '$WORK/eval/run.json' ]]" -- \
  "${EDGEKD[@]}" eval "$RUN" "${EVAL_ARGS[@]}" --no-metrics-csv --out "$WORK/eval/run.json"
# the same student untrained (seed 0), through the same eval: what the distillation adds
untrained() {
  "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from fidelity_study import untrained_run; from pathlib import Path
untrained_run(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))' \
    "$REPO/benchmarks" "$STUDENT" "$IMG_SIZE" "$WORK/cache-train" "$WORK/untrained-$STUDENT-$IMG_SIZE" \
  && "${EDGEKD[@]}" eval "$WORK/untrained-$STUDENT-$IMG_SIZE" "${EVAL_ARGS[@]}" --no-metrics-csv \
    --out "$WORK/eval/untrained.json"
}
stage eval-untrained "[[ -f '$WORK/eval/untrained.json' ]]" -- untrained

# --- 7. export: ONNX and OpenVINO, fp32 and INT8, each through the parity gate ----------------------------------
BUNDLES=()
EXPORT_ARGS=(--labels "$WORK/labels.npz" --calib "$WORK/data/train" --val "$WORK/data/test" --calib-images 300
             --val-images 500 --threads 2)
gate_failed() { [[ -f "$1/edgekd.json" ]] && "$PY" -c 'import json,sys; p=json.load(open(sys.argv[1])).get("parity") or {}
sys.exit(0 if p.get("passed") is False else 1)' "$1/edgekd.json"; }
for target in onnx openvino; do
  for prec in fp32 int8; do
    b="$WORK/bundles/$target-$prec"
    BUNDLES+=("$b")
    # exit 3 = parity gate failed: the bundle is kept and its edgekd.json records the failure (reported, not hidden)
    stage "export-$target-$prec" "[[ -f '$b/edgekd.json' ]]" -- \
      "${EDGEKD[@]}" export "$RUN" --target "$target" --precision "$prec" --out "$b" "${EXPORT_ARGS[@]}" || \
      echo "!! export $target $prec exited non-zero (see above); continuing"
    # a failed INT8 gate: keep that bundle (reported as FAILED) and add a mixed-precision one that keeps the most
    # sensitive layers in float until the same gate passes (--auto-mixed; chosen on calibration images only)
    if [[ "$prec" == int8 ]] && gate_failed "$b"; then
      BUNDLES+=("$b-mixed")
      stage "export-$target-$prec-mixed" "[[ -f '$b-mixed/edgekd.json' ]]" -- \
        "${EDGEKD[@]}" export "$RUN" --target "$target" --precision "$prec" --out "$b-mixed" --auto-mixed \
        "${EXPORT_ARGS[@]}" || echo "!! export $target $prec --auto-mixed exited non-zero (see above); continuing"
    fi
  done
done

# whole-frame bundle: the graph also crops and resizes (--preprocess-in-graph full); its gate runs on the original
# test images, so it measures the in-graph resize against Pillow's too
b="$WORK/bundles/onnx-int8-frames"
BUNDLES+=("$b")
stage export-onnx-int8-frames "[[ -f '$b/edgekd.json' ]]" -- \
  "${EDGEKD[@]}" export "$RUN" --target onnx --precision int8 --preprocess-in-graph full --out "$b" \
  "${EXPORT_ARGS[@]}" || echo "!! export onnx int8 --preprocess-in-graph full exited non-zero (see above); continuing"

# --- 8. eval of the bundles (fidelity of the exported/quantised students to the same teacher) -------------------
for b in "${BUNDLES[@]}"; do
  n="$(basename "$b")"
  [[ -f "$b/edgekd.json" ]] || continue
  stage "eval-$n" "[[ -f '$WORK/eval/$n.json' ]]" -- \
    "${EDGEKD[@]}" eval "$b" "${EVAL_ARGS[@]}" --shots 0 --out "$WORK/eval/$n.json" || echo "!! eval $n failed"
done

# --- 9. bench: teacher vs student (run dir on torch/onnxruntime/OpenVINO + the 4 bundles), batch 1 and 32 --------
BENCH_TEACHER=(--random-teacher)
[[ -n "$PRETRAINED" ]] && BENCH_TEACHER=(--teacher "$TEACHER:$PRETRAINED")
EXISTING=()
for b in "${BUNDLES[@]}"; do [[ -f "$b/edgekd.json" ]] && EXISTING+=("$b"); done
BENCH_BACKENDS=torch,onnxruntime,openvino
[[ "$DEVICE" == cuda* ]] && BENCH_BACKENDS=torch,onnxruntime,openvino,ort-cuda,tensorrt
# complete = results.json for the same list of models (a bundle added later, e.g. a mixed INT8 one, re-runs it)
MODELS_LIST="$(printf '%s\n' "$RUN" "${EXISTING[@]}" "${BENCH_TEACHER[@]}")"
bench() {
  rm -f "$WORK/bench/models.txt"
  # the teacher in every precision its backends offer here (INT8 calibrated on training images): the speed-ups
  # against the fastest of them are the ones a user gets
  "${EDGEKD[@]}" bench "$RUN" "${EXISTING[@]}" "${BENCH_TEACHER[@]}" --backend "$BENCH_BACKENDS" --device "$DEVICE" \
    --batch 1,32 --threads 2 --warmup-s 1 --min-time-s 3 --min-iters 5 --calib "$WORK/data/train" --out "$WORK/bench" \
    && printf '%s\n' "$MODELS_LIST" > "$WORK/bench/models.txt"
}
stage bench "[[ -f '$WORK/bench/results.json' && \"\$(cat '$WORK/bench/models.txt' 2>/dev/null)\" == \"\$MODELS_LIST\" ]]" \
  -- bench

# --- 10. classify a few unseen-by-eval test images through the runtime (numpy only, the INT8 OpenVINO bundle) ----
# the first bundle whose parity gate passed, fastest first
CLS_BUNDLE=""
for n in openvino-int8 onnx-int8 openvino-int8-mixed openvino-fp32 onnx-fp32; do
  b="$WORK/bundles/$n"
  if [[ -f "$b/edgekd.json" ]] && ! gate_failed "$b"; then CLS_BUNDLE="$b"; break; fi
done
[[ -n "$CLS_BUNDLE" ]] || CLS_BUNDLE="$WORK/bundles/onnx-fp32"
classify() {
  "${EDGEKD[@]}" classify "$CLS_BUNDLE" "$WORK/data/demo" --top-k 3 --json --threads 2 > "$WORK/classify.jsonl.tmp" \
    && mv "$WORK/classify.jsonl.tmp" "$WORK/classify.jsonl" && echo "$CLS_BUNDLE" > "$WORK/classify.bundle" \
    && head -n 3 "$WORK/classify.jsonl"
}
stage classify "[[ -s '$WORK/classify.jsonl' && \"\$(cat '$WORK/classify.bundle' 2>/dev/null)\" == '$CLS_BUNDLE' ]]" \
  -- classify
stage classify-table "[[ -s '$RESULTS/transcript/classify-table.txt' && '$RESULTS/transcript/classify-table.txt' -nt '$WORK/classify.jsonl' ]]" \
  -- "${EDGEKD[@]}" classify "$CLS_BUNDLE" "$WORK/data/demo" --top-k 3 --threads 2
stage info-bundle "[[ -s '$RESULTS/transcript/info-bundle.txt' && '$RESULTS/transcript/info-bundle.txt' -nt '$CLS_BUNDLE/edgekd.json' ]]" \
  -- "${EDGEKD[@]}" info "$CLS_BUNDLE"

# --- 11. summary ---------------------------------------------------------------------------------------------
"$PY" "$REPO/benchmarks/cifar10_summary.py" --work "$WORK" --out "$RESULTS" --classify-bundle "$CLS_BUNDLE"
echo "results: $RESULTS/results.md"
