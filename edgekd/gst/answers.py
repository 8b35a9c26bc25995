"""The fields an answer takes in edgekd's GStreamer structures, one way for whole frames and regions: the
`edgekd-classification` bus message of a frame, and the param of the same name on each region's ROI meta."""

from __future__ import annotations

from typing import Any

from edgekd.gst.bindings import import_gst

Gst = import_gst()[0]
from gi.repository import GObject  # noqa: E402  (after gi.require_version in import_gst)


def uint64(value: int) -> GObject.Value:
    """A guint64 field value (frame numbers, timestamps, counters)."""
    return GObject.Value(GObject.TYPE_UINT64, int(value))


def set_answer(s: Any, preds: list, with_prob: bool = False) -> None:
    """Top-k `preds` (best first) into structure `s`: label, score, [prob,] labels, scores, probs."""
    s.set_value("label", preds[0].label)
    s.set_value("score", float(preds[0].score))
    if with_prob:
        s.set_value("prob", float(preds[0].prob))
    s.set_value("labels", Gst.ValueArray([p.label for p in preds]))
    s.set_value("scores", Gst.ValueArray([float(p.score) for p in preds]))
    s.set_value("probs", Gst.ValueArray([float(p.prob) for p in preds]))


def caption(preds: list) -> str:
    """The overlay text of `preds`: one 'label score' line each."""
    return "\n".join(f"{p.label} {p.score:.2f}" for p in preds)
