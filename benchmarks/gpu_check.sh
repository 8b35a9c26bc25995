#!/usr/bin/env bash
# The one command to run on a CUDA host: at most 8 minutes, nothing fetched from outside.
#
#   bash benchmarks/gpu_check.sh [run options of benchmarks/gpu_check.py, e.g. --steps 200]
#
# Without a usable CUDA GPU it says so in one line and exits 0. With one it installs edgekd from this checkout
# (pip install -e '.[torch,onnx]' --no-index: what the host lacks comes from the wheels in .gpucheck/wheels), then
# runs benchmarks/gpu_check.py run: the gpu-marked tests, a ViT-B-32 cache of 2,000 CIFAR-10 images, distillation
# of mobilenetv4_conv_small at 224, ORT CUDA EP / TensorRT parity; results in benchmarks/results/gpu/. Exit status 1
# when any stage failed (every stage is still run and recorded).
#
# Hosts that cannot reach a package index get .gpucheck/ (ignored by git) carried along; make it on a host that can:
#
#   bash benchmarks/gpu_check.sh --prepare    # wheels for CPython 3.12 x86-64 + 2,000/300 images from ../shared/assets
#
# Environment: PYTHON (default python3: the interpreter that has torch), EDGEKD_ASSETS, EDGEKD_GPU_CHECK_DATA.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=.gpucheck
# the pure-Python packages that CUDA images with torch most often lack (open_clip and its text-tokeniser deps) and a
# timm recent enough for open_clip 3.x; pinned to what the test suite runs with
WHEELS="open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 timm==1.0.31"

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$CARRY/wheels"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$CARRY/wheels" $WHEELS || exit 1
    "$PY" benchmarks/gpu_check.py prepare || exit 1
    du -sh "$CARRY"
    exit 0
fi

"$PY" benchmarks/gpu_check.py detect
rc=$?
if [ $rc -eq 10 ]; then exit 0; fi  # no GPU: detect printed the one line
if [ $rc -ne 0 ]; then echo "gpu_check: cannot tell whether this host has a GPU ($PY exited $rc)"; exit $rc; fi

work=${TMPDIR:-/tmp}/edgekd-gpu-check
mkdir -p "$work"
install_log=$work/install.log
status=ok
if ! "$PY" -m pip install --no-index --find-links "$CARRY/wheels" --no-build-isolation -e '.[torch,onnx]' \
        >"$install_log" 2>&1; then
    # not writable, or a requirement missing from the wheels: use the checkout and the wheels from a private folder
    status=fallback
    site=$work/site
    rm -rf "$site"
    if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --target "$site" "$CARRY"/wheels/*.whl >>"$install_log" 2>&1 \
            || status=failed
    fi
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "gpu_check: install $status after $SECONDS s (log: $install_log)"
"$PY" - <<'EOF'
import importlib
for m in ("torch", "timm", "open_clip", "safetensors", "onnx", "onnxruntime", "onnxscript", "pynvml", "edgekd"):
    try:
        v = getattr(importlib.import_module(m), "__version__", "?")
        print(f"  {m} {v}")
    except Exception as e:  # a report line, not a failure: the stages record what breaks
        print(f"  {m}: NOT importable ({type(e).__name__}: {e})")
EOF

budget=$((460 - SECONDS))  # 8 minutes in all, with a margin for writing the results
"$PY" benchmarks/gpu_check.py run --budget "$budget" --install-status "$status" --install-log "$install_log" "$@"
