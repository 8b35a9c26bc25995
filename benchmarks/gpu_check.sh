#!/usr/bin/env bash
# The one command to run on a CUDA host: at most 8 minutes in all (install + every stage), nothing fetched from outside.
#
#   bash benchmarks/gpu_check.sh [run options of benchmarks/gpu_check.py, e.g. --steps 200]
#   bash benchmarks/gpu_check.sh --prepare    # where PyPI is reachable: .gpucheck/ to carry to a host without it
#
# Without a usable CUDA GPU it says so in one line and exits 0. With one it installs edgekd from this checkout
# (pip install --no-index -e '.[torch,onnx]': what the host lacks comes from .gpucheck/wheels), then runs
# benchmarks/gpu_check.py run and writes benchmarks/results/gpu/results.{json,md}. Exit status 1 when a stage failed;
# every stage is still run and recorded, and a stage the host cannot run is recorded as "skipped: <reason>".
#
# On the GPU host lent to this project (one H100 or H200, CUDA 13, torch 2.11 on Python 3.12, no TensorRT, an
# onnxruntime without the CUDA EP, no package index, at most 64 MiB carried per call):
#   runs    environment; cudart: edgekd.runtime's cuda-python helpers on the real CUDA runtime without torch (device
#           info, cudaMalloc, async memcpy host->device->host with the bytes compared, a stream, CUDA-graph capture
#           and replay through TensorRTBackend's own code, with TensorRT's execute_async_v3 stood in for by one
#           device-to-device copy); torch eager p50 latency of mobilenetv4_conv_small at 224 (channels_last and not)
#           and of the ViT-B-32 image tower, random weights, fp32 and fp16, batch 1 and 128; the gpu-marked tests;
#           a ViT-B-32 cache of 2,000 CIFAR-10 images; the distillation data path alone; 300 steps of distillation
#           under bf16 autocast (AMP); ONNX export and its parity gate on onnxruntime's CPU EP
#   skips   ORT CUDA EP parity (onnxruntime-gpu, ~256 MB, cannot be carried), TensorRT engine build and parity (no
#           tensorrt), the 2-process --sync-bn test (one GPU): each runs where its stack is installed
#   never   Jetson specifics (DLA, tegrastats, JetPack's TensorRT): export/jetson/ and a Jetson are for those
# Time on an H100: ~30 s install + ~5 min of stages (STAGE_TIME in gpu_check.py). Each stage has its own timeout,
# the stages together GPU_CHECK_TOTAL_S (480) less the install, and the run stops hard 30 s after that.
# Carried: .gpucheck/ (~19 MiB: 7 wheels + 2,300 images; `--prepare` refuses over 50 MiB).
#
# Environment: PYTHON (default python3: the interpreter that has torch), EDGEKD_ASSETS, EDGEKD_GPU_CHECK_DATA,
# GPU_CHECK_TOTAL_S.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=.gpucheck
TOTAL=${GPU_CHECK_TOTAL_S:-480}

if [ "${1:-}" = "--prepare" ]; then
    shift
    exec "$PY" benchmarks/gpu_check.py prepare "$@"  # wheel list, download and size check live there
fi

"$PY" benchmarks/gpu_check.py detect
rc=$?
if [ $rc -eq 10 ]; then exit 0; fi  # no GPU: detect printed the one line
if [ $rc -ne 0 ]; then echo "gpu_check: cannot tell whether this host has a GPU ($PY exited $rc)"; exit $rc; fi

work=${TMPDIR:-/tmp}/edgekd-gpu-check
mkdir -p "$work"
install_log=$work/install.log
: >"$install_log"
status=ok
if ! timeout 150 "$PY" -m pip install --no-index --find-links "$CARRY/wheels" --no-build-isolation \
        -e '.[torch,onnx]' >>"$install_log" 2>&1; then
    # not writable, or a requirement missing from the wheels: use the checkout and the wheels from a private folder
    # (not cuda-python's: the host's own, when it has one, stays in charge; see below)
    status=fallback
    site=$work/site
    rm -rf "$site"
    wheels=$(find "$CARRY/wheels" -maxdepth 1 -name '*.whl' ! -name 'cuda_*' 2>/dev/null)
    if [ -n "$wheels" ]; then
        # shellcheck disable=SC2086
        timeout 90 "$PY" -m pip install -q --no-index --no-deps --target "$site" $wheels >>"$install_log" 2>&1 \
            || status=failed
    fi
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# cuda-python for the runtime's cudart helpers: the host's own if importable, else the carried wheels, beside
# the host's packages rather than over them (cupy and numba-cuda there pin their own)
if "$PY" -c "from cuda.bindings import runtime" >/dev/null 2>&1; then
    cuda_python=host
elif compgen -G "$CARRY/wheels/cuda_bindings-*.whl" >/dev/null && timeout 60 "$PY" -m pip install -q --no-index \
        --no-deps --target "$work/cuda-site" --upgrade "$CARRY"/wheels/cuda_bindings-*.whl \
        "$CARRY"/wheels/cuda_pathfinder-*.whl >>"$install_log" 2>&1; then
    cuda_python=carried
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$work/cuda-site"
else
    cuda_python="missing (the cudart stage is skipped)"
fi
echo "gpu_check: install $status, cuda-python $cuda_python, after $SECONDS s (log: $install_log)"
"$PY" - <<'EOF'
import importlib
for m in ("torch", "timm", "open_clip", "safetensors", "onnx", "onnxruntime", "onnxscript", "onnxconverter_common",
          "cuda.bindings", "pynvml", "tensorrt", "edgekd"):
    try:
        v = getattr(importlib.import_module(m), "__version__", "?")
        print(f"  {m} {v}")
    except Exception as e:  # a report line, not a failure: the stages record what breaks
        print(f"  {m}: NOT importable ({type(e).__name__}: {e})")
EOF

budget=$((TOTAL - SECONDS - 20))  # the stages' share; 20 s for starting Python and writing the results
if [ $budget -lt 0 ]; then budget=0; fi  # a slow install leaves none: each stage is recorded as not run
timeout -k 10 $((budget + 30)) "$PY" benchmarks/gpu_check.py run --budget "$budget" --install-status "$status" \
    --install-log "$install_log" "$@"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "gpu_check: FAILED: the run passed its hard stop of $((budget + 30)) s; stage logs in $work"
    exit 1
fi
exit $rc
