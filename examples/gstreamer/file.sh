#!/usr/bin/env bash
# Classify a video file: examples/gstreamer/file.sh VIDEO BUNDLE ["person,forklift,pallet"]
# SINK=fakesink for headless runs; results are printed as bus messages (-m). Decoding uses decodebin: H.264/H.265
# files need gstreamer1.0-libav (or the hardware decoders of JetPack). Every frame is classified (block=true);
# BLOCK=false classifies in the element's worker thread instead, skipping frames while it is busy.
set -euo pipefail
VIDEO=${1:?usage: file.sh VIDEO BUNDLE [LABELS]} BUNDLE=${2:?usage: file.sh VIDEO BUNDLE [LABELS]} LABELS=${3:-}
eval "$(edgekd gst-path --env)"
labels=()  # empty: the bundle's labels.npz
[ -n "$LABELS" ] && labels=(labels="$LABELS")
exec gst-launch-1.0 -m filesrc location="$VIDEO" ! decodebin ! videoconvert ! \
    edgekdclassify bundle="$BUNDLE" "${labels[@]}" threshold="${THRESHOLD:--1}" overlay=true block="${BLOCK:-true}" ! \
    videoconvert ! "${SINK:-autovideosink}"
