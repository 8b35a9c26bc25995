"""`inference-region=roi-list` for edgekdclassify: each frame's regions of interest classified in one batch, the
answers attached to their GstVideoRegionOfInterestMeta and listed on the bus.

Per frame: the buffer's regions (edgekd.gst.roi_meta) whose detector label passes `object-class`; a tracked region
(object id) answered less than `reclassify-interval` frames ago keeps that answer, attached again; the rest are
classified together (edgekd.gst.regions.embed_frame_regions). Each answer becomes an `edgekd-classification` param
of its region (label, score, prob, labels/scores/probs of the top-k, the frame it was scored on) and one entry of the
`regions` list of the frame's `edgekd-classification` bus message (index in the frame's region list, meta id, object
id, detector label as `object-class`, box as x0, y0, x1, y1, and the answer).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from edgekd.gst.answers import caption, set_answer, uint64
from edgekd.gst.bindings import import_gst
from edgekd.gst.frames import FrameLayout, draw_text
from edgekd.gst.regions import TrackCache, embed_frame_regions, parse_classes, select
from edgekd.gst.roi_meta import Roi, add_param, read_rois

Gst = import_gst()[0]

PARAM_NAME = "edgekd-classification"


class RegionPass:
    """Region state of one element: the track cache and the boxes and answers the overlay draws."""

    def __init__(self, reclassify_interval: int):
        self.tracks = TrackCache(reclassify_interval)
        self._lock = threading.Lock()  # the worker thread remembers answers while the streaming thread plans
        self._overlay: list[tuple[tuple[int, int, int, int], str]] = []

    def plan(self, buf: Any, n: int, classes: str, interval: int) -> tuple[list[Roi], list[tuple[Roi, Any]]]:
        """Frame n's regions -> (to classify now, [(region, cached answer)]); the cached answers are attached."""
        rois = select(read_rois(buf), parse_classes(classes))
        with self._lock:
            self.tracks.interval = max(1, int(interval))
            due, cached = self.tracks.plan(rois, n)
        for roi, (answer, scored_on) in cached:
            if answer:
                add_param(roi, answer_structure(answer, scored_on))
        return due, cached

    def classify(self, clf: Any, labels: Any, data: np.ndarray, layout: FrameLayout, rois: list[Roi], n: int,
                 top_k: int) -> list[list | None]:
        """The regions' answers (None for a region with no pixel in the frame), remembered for tracked regions."""
        emb, kept = embed_frame_regions(clf, data, layout, [r.box for r in rois])
        answers: list[list | None] = [None] * len(rois)
        for i, preds in zip(kept, labels.predict(emb, top_k) if kept else []):
            answers[i] = preds
        with self._lock:
            for roi, preds in zip(rois, answers):  # a tracked box outside the frame waits its interval too
                self.tracks.remember(roi, (preds, n), n)
            self._overlay = [(r.box, caption(a[:1])) for r, a in zip(rois, answers) if a]
        return answers

    def attach(self, rois: list[Roi], answers: list[list | None], n: int) -> None:
        for roi, preds in zip(rois, answers):
            if preds:
                add_param(roi, answer_structure(preds, n))

    def draw(self, data: np.ndarray, layout: FrameLayout, cached: list[tuple[Roi, Any]]) -> None:
        with self._lock:
            items = list(self._overlay)
        items += [(r.box, caption(preds[:1])) for r, (preds, _) in cached if preds]
        for box, text in items:
            draw_text(data, layout, text, at=(box[0], box[1]))


def answer_structure(preds: list, scored_on: int) -> Any:
    """A region's answer as the `edgekd-classification` Gst.Structure (ROI param and bus entry)."""
    s = Gst.Structure.new_empty(PARAM_NAME)
    set_answer(s, preds, with_prob=True)
    s.set_value("frame", uint64(scored_on))
    return s


def regions_value(rois: list[Roi], answers: list[list | None]) -> Any:
    """The bus message's `regions` list: one structure per classified region (its answer's fields, plus where it
    is: index in the frame's region list, meta id, object id (-1: none), object-class, box x0, y0, x1, y1)."""
    entries = []
    for roi, preds in zip(rois, answers):
        s = Gst.Structure.new_empty(PARAM_NAME)
        if preds:
            set_answer(s, preds, with_prob=True)
        s.set_value("index", roi.index)
        s.set_value("id", roi.id)
        s.set_value("object-id", -1 if roi.object_id is None else roi.object_id)
        s.set_value("object-class", roi.label)
        s.set_value("box", Gst.ValueArray([int(v) for v in roi.box]))
        s.set_value("inside", preds is not None)
        entries.append(s)
    return Gst.ValueArray(entries)
