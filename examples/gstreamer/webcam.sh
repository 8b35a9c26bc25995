#!/usr/bin/env bash
# Classify a V4L2 camera live: examples/gstreamer/webcam.sh BUNDLE ["person,forklift,pallet"] [/dev/video0]
# The element classifies in a worker thread: when the model is slower than the camera, frames pass through
# unclassified (counted in the messages' `dropped`) instead of the picture stalling.
set -euo pipefail
BUNDLE=${1:?usage: webcam.sh BUNDLE [LABELS] [DEVICE]} LABELS=${2:-} DEVICE=${3:-/dev/video0}
eval "$(edgekd gst-path --env)"
labels=()  # empty: the bundle's labels.npz
[ -n "$LABELS" ] && labels=(labels="$LABELS")
exec gst-launch-1.0 -m v4l2src device="$DEVICE" ! videoconvert ! \
    edgekdclassify bundle="$BUNDLE" "${labels[@]}" threshold="${THRESHOLD:-0.2}" overlay=true ! \
    videoconvert ! "${SINK:-autovideosink}"
