"""An app around `edgekdclassify`: read its answers from the bus and change the labels while the video plays.

    python examples/gstreamer/labels_app.py BUNDLE [--source "v4l2src ! videoconvert"] [--labels "person,forklift"]

Type a new comma-separated label list (or a label pack .npz) and Enter: it applies from the next classified frame.
Runs in-process (edgekd.gst.register()), so GStreamer's python plugin loader is not needed; the element's messages
are `edgekd-classification` structures (frame, pts, label, score, labels, scores, probs, latency-ms, dropped).
"""

from __future__ import annotations

import argparse
import sys
import threading

from edgekd.gst import import_gst, register


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--source", default="videotestsrc is-live=true pattern=ball ! videoconvert",
                    help="gst-launch description of the video source (default: a live test pattern)")
    ap.add_argument("--labels", default="", help="initial labels (default: the bundle's labels.npz)")
    ap.add_argument("--sink", default="fakesink", help="e.g. 'videoconvert ! autovideosink' to watch the overlay")
    args = ap.parse_args()
    Gst, _, _ = import_gst()
    register()
    pipe = Gst.parse_launch(f"{args.source} ! edgekdclassify name=clf overlay=true ! {args.sink}")
    clf = pipe.get_by_name("clf")
    clf.set_property("bundle", args.bundle)
    if args.labels:
        clf.set_property("labels", args.labels)
    threading.Thread(target=read_labels, args=(clf,), daemon=True).start()
    pipe.set_state(Gst.State.PLAYING)
    try:
        watch(Gst, pipe.get_bus())
    finally:
        pipe.set_state(Gst.State.NULL)


def read_labels(clf) -> None:
    """stdin lines -> the `labels` property (refused label sets come back as WARNING messages on the bus)."""
    for line in sys.stdin:
        if line.strip():
            clf.set_property("labels", line.strip())


def watch(Gst, bus) -> None:
    while True:
        msg = bus.timed_pop(Gst.CLOCK_TIME_NONE)
        if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "edgekd-classification":
            s = msg.get_structure()
            answers = ", ".join(f"{label} {score:.2f}" for label, score in zip(s.get_value("labels"),
                                                                               s.get_value("scores")))
            print(f"frame {s.get_value('frame')}: {answers}  ({s.get_value('latency-ms'):.1f} ms, "
                  f"{s.get_value('dropped')} dropped)", flush=True)
        elif msg.type == Gst.MessageType.WARNING:
            print(f"warning: {msg.parse_warning()[0].message}", file=sys.stderr)
        elif msg.type == Gst.MessageType.ERROR:
            sys.exit(f"error: {msg.parse_error()[0].message}")
        elif msg.type == Gst.MessageType.EOS:
            return


if __name__ == "__main__":
    main()
