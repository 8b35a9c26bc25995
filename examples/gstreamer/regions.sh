#!/usr/bin/env bash
# Classify fixed zones of a camera or a video, no detector needed:
#   examples/gstreamer/regions.sh BUNDLE [VIDEO] ["person,forklift,pallet"]
# Without VIDEO a test pattern stands in for the camera (FRAMES=60 of them). ROI sets the zones as
# "x0,y0,x1,y1:name;..." in pixels of the 640x480 frames (default: "the loading bay" on the left, "the door" on the
# right); each zone is re-scored every REINTERVAL frames (default 5) and keeps its answer in between. The answers
# are printed as bus messages (-m, one `regions` list per classified frame), attached to each zone's ROI meta as an
# `edgekd-classification` param, and drawn on the video. SINK=fakesink for headless runs.
set -euo pipefail
BUNDLE=${1:?usage: regions.sh BUNDLE [VIDEO] [LABELS]} VIDEO=${2:-} LABELS=${3:-}
ROI=${ROI:-"0,60,320,420:the loading bay;320,60,640,420:the door"}
eval "$(edgekd gst-path --env)"
labels=()  # empty: the bundle's labels.npz
[ -n "$LABELS" ] && labels=(labels="$LABELS")
if [ -n "$VIDEO" ]; then
    src=(filesrc location="$VIDEO" ! decodebin)
else
    src=(videotestsrc num-buffers="${FRAMES:-60}" pattern=ball)
fi
exec gst-launch-1.0 -m "${src[@]}" ! videoconvert ! videoscale ! video/x-raw,width=640,height=480 ! \
    edgekdroi roi="$ROI" ! \
    edgekdclassify bundle="$BUNDLE" "${labels[@]}" inference-region=roi-list reclassify-interval="${REINTERVAL:-5}" \
        overlay=true block=true ! \
    videoconvert ! "${SINK:-autovideosink}"
