"""Regions of interest for the GStreamer elements, gi-free: which regions a frame classifies, their batched
embeddings from raw frame bytes, the answers kept for tracked objects, and the boxes of the `edgekdroi` source.

    due, cached = tracks.plan(regions, frame_number)       # tracked regions re-scored every `reclassify-interval`
    emb, kept = embed_frame_regions(clf, data, layout, [r.box for r in due])

A region is a box (x0, y0, x1, y1 in frame pixels), a detector label and, where a tracker gave one, an object id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd.gst.frames import PACKED, FrameLayout, model_frame, render_model_input

FULL_FRAME, ROI_LIST = "full-frame", "roi-list"
INFERENCE_REGIONS = (FULL_FRAME, ROI_LIST)


@dataclass(frozen=True)
class Region:
    """A box to classify: (x0, y0, x1, y1) in frame pixels, the detector's label, a tracker's object id."""

    box: tuple[float, float, float, float]
    label: str = ""
    object_id: int | None = None


def parse_classes(text: str) -> frozenset[str] | None:
    """`object-class` value 'person, car' -> {'person', 'car'}; '' -> None (every region)."""
    names = frozenset(n.strip() for n in (text or "").split(",") if n.strip())
    return names or None


def select(regions: Sequence[Any], classes: frozenset[str] | None) -> list[Any]:
    """The regions whose detector label is one of `classes` (all of them when None)."""
    return list(regions) if classes is None else [r for r in regions if r.label in classes]


class TrackCache:
    """The last answer of each tracked object, so that it is re-scored only every `interval` frames.

    Regions without an object id are classified on every frame they are due. An object not seen for `forget_after`
    frames is forgotten (memory stays bounded on long streams)."""

    def __init__(self, interval: int = 1, forget_after: int = 300):
        self.interval = max(1, int(interval))
        self.forget_after = forget_after
        self._answers: dict[int, tuple[int, Any]] = {}  # object id -> (frame scored, answer)
        self._seen: dict[int, int] = {}

    def plan(self, regions: Sequence[Any], n: int) -> tuple[list[Any], list[tuple[Any, Any]]]:
        """Frame n's regions -> (regions to classify now, [(region, its cached answer)] for the others)."""
        due, cached = [], []
        for r in regions:
            oid = r.object_id
            if oid is not None:
                self._seen[oid] = n
            hit = self._answers.get(oid) if oid is not None else None
            if hit is not None and n - hit[0] < self.interval:
                cached.append((r, hit[1]))
            else:
                due.append(r)
        self._forget(n)
        return due, cached

    def remember(self, region: Any, answer: Any, n: int) -> None:
        if region.object_id is not None:
            self._answers[region.object_id] = (n, answer)

    def _forget(self, n: int) -> None:
        stale = [oid for oid, last in self._seen.items() if n - last > self.forget_after]
        for oid in stale:
            self._seen.pop(oid, None)
            self._answers.pop(oid, None)


def embed_frame_regions(clf: Any, data: np.ndarray, layout: FrameLayout,
                        boxes: Sequence[Sequence[float]]) -> tuple[np.ndarray, list[int]]:
    """Flat frame bytes + N boxes -> (unit embeddings [M, D], indices of the M boxes inside the frame), in one
    batched call where the model takes it: packed RGB/BGR through `classify_regions`' own path, NV12/I420 rendered
    per region in the planes (edgekd.gst.frames.render_model_input with the region's view)."""
    if layout.format in PACKED:
        frame, color = model_frame(data, layout)
        return clf.embed_regions(frame, boxes, color)
    views = [clf.preprocess.region_view(box, layout.width, layout.height) for box in boxes]
    kept = [i for i, view in enumerate(views) if view is not None]
    if not kept:
        return np.zeros((0, clf.embed_dim), np.float32), []
    pixels = np.stack([render_model_input(data, layout, clf.preprocess, views[i]) for i in kept])
    return clf.embed_inputs(clf.pixels_to_inputs(pixels), "rgb"), kept


# --- the region source (edgekdroi) ----------------------------------------------------------------------------------

def parse_roi(text: str) -> list[Region]:
    """`roi` property 'x0,y0,x1,y1[:label][;...]' -> fixed regions; object id = position in the list, so a
    classifier downstream can re-score each zone every `reclassify-interval` frames."""
    regions = []
    for i, item in enumerate(p.strip() for p in (text or "").split(";")):
        if not item:
            continue
        coords, _, label = item.partition(":")
        try:
            box = tuple(float(v) for v in coords.split(","))
        except ValueError:
            box = ()
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise EdgekdError(f"roi={text!r}: {item!r} is not 'x0,y0,x1,y1[:label]' with x1 > x0 and y1 > y0 "
                              "(pixels; regions separated by ';')")
        regions.append(Region(box, label.strip(), i))
    return regions


class RoiSchedule:
    """The regions of each frame from a JSON file: a list of regions for every frame, or {"frames": [list, ...]}
    for frame 0, 1, ... in order (none after the last). A region is {"box": [x0, y0, x1, y1], "label": str,
    "id": int} (label and id optional; a fixed list numbers its regions as `parse_roi` does)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise EdgekdError(f"file={str(path)!r}: cannot read regions ({e}); see edgekdroi's 'file' property") from e
        if isinstance(doc, dict) and isinstance(doc.get("frames"), list):
            self.fixed, self.frames = None, [self._regions(f, k) for k, f in enumerate(doc["frames"])]
        elif isinstance(doc, list):
            self.fixed, self.frames = self._regions(doc, None), []
        else:
            raise EdgekdError(f"file={str(path)!r}: expected a list of regions or {{\"frames\": [...]}}")

    def regions(self, n: int) -> list[Region]:
        if self.fixed is not None:
            return self.fixed
        return self.frames[n] if n < len(self.frames) else []

    def _regions(self, items: Any, frame: int | None) -> list[Region]:
        where = f"file={str(self.path)!r}" + (f", frame {frame}" if frame is not None else "")
        if not isinstance(items, list):
            raise EdgekdError(f"{where}: expected a list of regions")
        out = []
        for i, item in enumerate(items):
            box = item.get("box") if isinstance(item, dict) else None
            ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            if not ok or box[2] <= box[0] or box[3] <= box[1]:
                raise EdgekdError(f"{where}: region {i} needs \"box\": [x0, y0, x1, y1] with x1 > x0, y1 > y0")
            oid = item.get("id", i if frame is None else None)
            out.append(Region(tuple(float(v) for v in box), str(item.get("label", "")),
                              None if oid is None else int(oid)))
        return out
