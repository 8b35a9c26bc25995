"""GstVideoRegionOfInterestMeta of a buffer, read and annotated through libgstvideo (ctypes).

PyGObject cannot list a buffer's metas (gst_buffer_iterate_meta is not introspectable, `foreach_meta` does not pass
the meta to Python, and `buffer_get_video_region_of_interest_meta_id` finds one id while detectors leave ids at 0),
so this module walks them with gst_buffer_iterate_meta_filtered and reads the struct, whose layout is GStreamer's
public ABI since 1.14 (gst/video/gstvideometa.h):

    struct GstVideoRegionOfInterestMeta { GstMeta meta; GQuark roi_type; gint id; gint parent_id;
                                          guint x, y, w, h; GList *params; };

A region's detector label is its `roi_type`; a tracker's object id is the int field `id` of its `object_id` param
(DL Streamer's convention: get_object_id/set_object_id in its gst/common/gva_utils.cpp; edgekdroi writes it too).
Results are added as a GstStructure param (gst_video_region_of_interest_meta_add_param), which downstream elements
read with get_param(name).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

OBJECT_ID_PARAM = "object_id"  # DL Streamer's tracker param: field "id"


class _GList(ctypes.Structure):
    pass


_GList._fields_ = [("data", ctypes.c_void_p), ("next", ctypes.POINTER(_GList)), ("prev", ctypes.POINTER(_GList))]


class _RoiMeta(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint), ("info", ctypes.c_void_p), ("roi_type", ctypes.c_uint32),
                ("id", ctypes.c_int), ("parent_id", ctypes.c_int), ("x", ctypes.c_uint), ("y", ctypes.c_uint),
                ("w", ctypes.c_uint), ("h", ctypes.c_uint), ("params", ctypes.POINTER(_GList))]


@dataclass(frozen=True)
class Roi:
    """One region of a frame: box in pixels (x, y, w, h), detector label, the meta's id, a tracker's object id."""

    pointer: int  # the GstVideoRegionOfInterestMeta, valid while its buffer is
    index: int  # position among the buffer's regions
    label: str
    id: int
    parent_id: int
    x: int
    y: int
    w: int
    h: int
    object_id: int | None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in frame pixels."""
        return self.x, self.y, self.x + self.w, self.y + self.h


@lru_cache(maxsize=1)
def _libs() -> tuple[Any, Any, Any]:
    gst = ctypes.CDLL("libgstreamer-1.0.so.0")
    video = ctypes.CDLL("libgstvideo-1.0.so.0")
    glib = ctypes.CDLL("libglib-2.0.so.0")
    gst.gst_buffer_iterate_meta_filtered.restype = ctypes.c_void_p
    gst.gst_buffer_iterate_meta_filtered.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
    gst.gst_structure_get_name.restype = ctypes.c_char_p
    gst.gst_structure_get_name.argtypes = [ctypes.c_void_p]
    gst.gst_structure_get_int.restype = ctypes.c_int
    gst.gst_structure_get_int.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    gst.gst_structure_from_string.restype = ctypes.c_void_p
    gst.gst_structure_from_string.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    video.gst_video_region_of_interest_meta_api_get_type.restype = ctypes.c_size_t
    video.gst_video_region_of_interest_meta_add_param.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    video.gst_video_region_of_interest_meta_get_param.restype = ctypes.c_void_p
    video.gst_video_region_of_interest_meta_get_param.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    gst.gst_structure_to_string.restype = ctypes.c_void_p
    gst.gst_structure_to_string.argtypes = [ctypes.c_void_p]
    glib.g_free.argtypes = [ctypes.c_void_p]
    glib.g_quark_to_string.restype = ctypes.c_char_p
    glib.g_quark_to_string.argtypes = [ctypes.c_uint32]
    return gst, video, glib


def buffer_pointer(buf: Any) -> int:
    """The GstBuffer* of a PyGObject Gst.Buffer (PyGObject's boxed hash is the C pointer, as pyds relies on)."""
    return hash(buf)


def read_rois(buf: Any) -> list[Roi]:
    """The buffer's GstVideoRegionOfInterestMeta regions, in the order they were added."""
    gst, video, glib = _libs()
    api = video.gst_video_region_of_interest_meta_api_get_type()
    state = ctypes.c_void_p(None)
    out = []
    while True:
        ptr = gst.gst_buffer_iterate_meta_filtered(buffer_pointer(buf), ctypes.byref(state), api)
        if not ptr:
            return out
        m = _RoiMeta.from_address(ptr)
        label = glib.g_quark_to_string(m.roi_type) if m.roi_type else b""
        out.append(Roi(ptr, len(out), (label or b"").decode(errors="replace"), m.id, m.parent_id, m.x, m.y, m.w, m.h,
                       _object_id(gst, m.params)))


def _object_id(gst: Any, params: Any) -> int | None:
    node = params
    while node:
        structure = node.contents.data
        if structure and gst.gst_structure_get_name(structure) == OBJECT_ID_PARAM.encode():
            value = ctypes.c_int()
            if gst.gst_structure_get_int(structure, b"id", ctypes.byref(value)):
                return value.value
        node = node.contents.next
    return None


def add_param(roi: Roi, structure: Any) -> None:
    """Attach a copy of the Gst.Structure `structure` to the region's params (the meta owns the copy)."""
    gst, video, _ = _libs()
    copy = gst.gst_structure_from_string(structure.to_string().encode(), None)
    if not copy:
        raise ValueError(f"cannot copy structure {structure.get_name()!r} onto the region meta")
    video.gst_video_region_of_interest_meta_add_param(roi.pointer, copy)


def param_string(roi: Roi, name: str) -> str | None:
    """The region's param `name` serialised (Gst.Structure.from_string reads it back), or None without one."""
    gst, video, glib = _libs()
    structure = video.gst_video_region_of_interest_meta_get_param(roi.pointer, name.encode())
    if not structure:
        return None
    text = gst.gst_structure_to_string(structure)
    try:
        return ctypes.string_at(text).decode()
    finally:
        glib.g_free(text)
