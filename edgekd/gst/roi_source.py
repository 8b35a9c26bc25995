"""`edgekdroi`: attaches regions of interest to frames without a detector: fixed boxes or boxes per frame from a
JSON file, as GstVideoRegionOfInterestMeta that `edgekdclassify inference-region=roi-list` (or any ROI-aware
element) reads.

    ... ! edgekdroi roi="0,0,320,240:loading bay;320,0,640,240:door" ! edgekdclassify inference-region=roi-list ...
    ... ! edgekdroi file=regions.json ! ...

`roi`: 'x0,y0,x1,y1[:label]' in frame pixels, regions separated by ';'. `file`: a JSON list of regions
({"box": [x0, y0, x1, y1], "label": ..., "id": ...}) for every frame, or {"frames": [[...], [...]]} for frame 0, 1, ...
(edgekd.gst.regions). Each region's label becomes its `roi_type`, its position its meta id, and its object id (fixed
regions: their position) an `object_id` param, so a downstream classifier's `reclassify-interval` treats each zone as
one tracked object.
"""

from __future__ import annotations

from typing import Any

from edgekd import EdgekdError
from edgekd.gst.bindings import float_for_gstreamer, import_gst
from edgekd.gst.regions import Region, RoiSchedule, parse_roi
from edgekd.gst.roi_meta import OBJECT_ID_PARAM

Gst, GstBase, GstVideo = import_gst()
from gi.repository import GObject  # noqa: E402  (after gi.require_version in import_gst)

ROI_ELEMENT_NAME = "edgekdroi"
_RW = GObject.ParamFlags.READWRITE
CAPS = Gst.Caps.from_string("video/x-raw")


class EdgekdRoi(GstBase.BaseTransform):
    """Regions of interest from a property or a JSON file; see the module docstring."""

    __gtype_name__ = "EdgekdRoi"
    __gstmetadata__ = ("edgekd region source", "Filter/Video", "Attaches fixed or per-frame regions of interest "
                       "(GstVideoRegionOfInterestMeta) from a property or a JSON file", "edgekd")
    __gsttemplates__ = (Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, CAPS),
                        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS))
    __gproperties__ = {
        "roi": (str, "Regions", "'x0,y0,x1,y1[:label]' in pixels, ';' between regions (every frame)", "", _RW),
        "file": (str, "Region file", "JSON regions: a list for every frame, or {\"frames\": [...]} per frame", "",
                 _RW),
    }

    def __init__(self) -> None:
        super().__init__()
        float_for_gstreamer(self)
        self._props: dict[str, Any] = {"roi": "", "file": ""}
        self._fixed: list[Region] = []
        self._schedule: RoiSchedule | None = None
        self._n = 0
        self.set_in_place(True)

    def do_get_property(self, prop: GObject.ParamSpec) -> Any:
        return self._props[prop.name]

    def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
        self._props[prop.name] = value or ""

    def do_start(self) -> bool:
        self._n = 0
        try:
            if self._props["roi"] and self._props["file"]:
                raise EdgekdError("set either 'roi' or 'file', not both")
            self._fixed = parse_roi(self._props["roi"])
            self._schedule = RoiSchedule(self._props["file"]) if self._props["file"] else None
        except EdgekdError as e:
            self.message_full(Gst.MessageType.ERROR, Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS,
                              f"{ROI_ELEMENT_NAME}: {e}", None, __file__, ROI_ELEMENT_NAME, 0)
            return False
        return True

    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        regions = self._schedule.regions(self._n) if self._schedule is not None else self._fixed
        self._n += 1
        for i, r in enumerate(regions):
            x0, y0 = max(0, round(r.box[0])), max(0, round(r.box[1]))
            w, h = max(0, round(r.box[2]) - x0), max(0, round(r.box[3]) - y0)
            meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, r.label or "region", x0, y0, w, h)
            meta.id = i
            if r.object_id is not None:
                s = Gst.Structure.new_empty(OBJECT_ID_PARAM)
                s.set_value("id", int(r.object_id))
                meta.add_param(s)
        return Gst.FlowReturn.OK


GObject.type_register(EdgekdRoi)
