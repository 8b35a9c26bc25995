#!/usr/bin/env bash
# Classify an RTSP stream: examples/gstreamer/rtsp.sh rtsp://camera/stream BUNDLE ["person,forklift,pallet"]
# rtspsrc is in gstreamer1.0-plugins-good; H.264/H.265 decoding needs gstreamer1.0-libav (JetPack: nvv4l2decoder).
# interval=5 classifies every 5th frame; the video keeps its full rate.
set -euo pipefail
URL=${1:?usage: rtsp.sh URL BUNDLE [LABELS]} BUNDLE=${2:?usage: rtsp.sh URL BUNDLE [LABELS]} LABELS=${3:-}
eval "$(edgekd gst-path --env)"
labels=()  # empty: the bundle's labels.npz
[ -n "$LABELS" ] && labels=(labels="$LABELS")
exec gst-launch-1.0 -m rtspsrc location="$URL" latency=200 ! decodebin ! videoconvert ! \
    edgekdclassify bundle="$BUNDLE" "${labels[@]}" interval="${INTERVAL:-5}" threshold="${THRESHOLD:-0.2}" \
    overlay=true ! videoconvert ! "${SINK:-autovideosink}"
