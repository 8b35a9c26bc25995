"""`edgekdclassify`: an in-place GStreamer video filter that classifies frames with an edgekd bundle.

    ... ! edgekdclassify bundle=BUNDLE labels="person,forklift,pallet" threshold=0.2 ! ...

Video passes through untouched (unless `overlay=true` draws the answer on it). Every `interval`-th frame is classified
with `OpenVocabClassifier` (numpy runtime, no torch) and the answer leaves the element as

* an element message `edgekd-classification` on the bus: frame, pts, label, score, labels/scores/probs (top-k),
  latency-ms (frame arrival -> answer), classified and dropped counts; at EOS one `edgekd-stats` message;
* text drawn on the frame with `overlay=true`;
* GstAnalytics classification metadata on the classified buffer (GStreamer >= 1.24 and `block=true` only: in the
  default mode the answer arrives after its frame has left).

By default a worker thread classifies: a frame due while it is busy passes through unclassified and is counted in
`dropped` (the video never waits for the model). `block=true` classifies in the streaming thread instead, so every
due frame gets an answer and a slow model slows the pipeline (files, tests, offline runs). Frames that never reach
the element (a leaky queue upstream, a source that skips) are counted in `lost`, from gaps in the frame numbers or
timestamps.

`inference-region=roi-list` classifies each frame's regions of interest (GstVideoRegionOfInterestMeta from a detector
or `edgekdroi`) in one batch instead, attaches each answer to its region and lists them on the bus
(edgekd.gst.region_pass); `model-instance-id` shares one loaded model and label set between elements
(edgekd.gst.instances).

`labels` may change while PLAYING: the new set is built on a thread of the element's own (the text encoder runs
there) and swapped in at the next frame boundary after it is ready, announced by an `edgekd-labels` message; neither
the caller nor the streaming thread waits for it. Reading `labels` gives the set in use. A refused value (a WARNING
message) changes nothing. Logs go to the `edgekd` debug category (`GST_DEBUG=edgekd:5`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd.gst.answers import caption, set_answer, uint64
from edgekd.gst.bindings import ELEMENT_NAME, analytics_available, float_for_gstreamer, import_gst
from edgekd.gst.frames import FORMATS, PLANAR, FrameLayout, draw_text, model_frame, render_model_input
from edgekd.gst.label_swap import LabelRequest, LabelSwap, ReadyLabels
from edgekd.gst.log import install_gst_logging
from edgekd.gst.regions import FULL_FRAME, INFERENCE_REGIONS, ROI_LIST

Gst, GstBase, GstVideo = import_gst()
from gi.repository import GLib, GObject  # noqa: E402  (after gi.require_version in import_gst)

log = logging.getLogger(__name__)

MESSAGE_NAME = "edgekd-classification"
STATS_MESSAGE_NAME = "edgekd-stats"
LABELS_MESSAGE_NAME = "edgekd-labels"
COUNTERS = ("frames", "classified", "dropped", "lost")
THRESHOLD_OFF = -1.0  # a cosine is never below -1: the top answer is never "unknown"
_MAX = GLib.MAXINT
CAPS = Gst.Caps.from_string(f"video/x-raw, format=(string){{ {', '.join(FORMATS)} }}, width=(int)[1, {_MAX}], "
                            f"height=(int)[1, {_MAX}], framerate=(fraction)[0/1, {_MAX}/1]")
_RW = GObject.ParamFlags.READWRITE
_RW_PLAYING = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING
_MATRICES = {GstVideo.VideoColorMatrix.BT601: "bt601", GstVideo.VideoColorMatrix.BT709: "bt709",
             GstVideo.VideoColorMatrix.BT2020: "bt2020", GstVideo.VideoColorMatrix.SMPTE240M: "smpte240m"}


# name -> GObject param spec tuple (PyGObject consumes __gproperties__ at class creation)
PROPERTIES: dict[str, tuple] = {
    "bundle": (str, "Bundle", "Export bundle directory (edgekd export ... --out DIR)", None, _RW),
    "labels": (str, "Labels", "Comma-separated labels, or a label pack .npz; labels not in the bundle's pack are "
               "embedded by its text encoder. Empty: the bundle's labels.npz. Changeable while playing",
               "", _RW_PLAYING),
    "text-encoder": (str, "Text encoder", "edgekd export-text directory (default: the bundle's own)", None, _RW),
    "top-k": (int, "Top k", "Answers per classified frame", 1, 1000, 3, _RW_PLAYING),
    "threshold": (float, "Threshold", "Cosine score below which the top answer is 'unknown' (-1: off; unset: "
                  "the label pack's own thresholds)", -1.0, 1.0, THRESHOLD_OFF, _RW_PLAYING),
    "interval": (int, "Interval", "Classify every N-th frame", 1, _MAX, 1, _RW_PLAYING),
    "backend": (str, "Backend", "Inference backend: auto (by file type), onnxruntime, openvino, tensorrt",
                "auto", _RW),
    "threads": (int, "Threads", "Inference threads (0: the backend's default)", 0, 1024, 0, _RW),
    "overlay": (bool, "Overlay", "Draw the latest answer on the frames", False, _RW_PLAYING),
    "block": (bool, "Block", "Classify in the streaming thread (every due frame, video waits); default: a worker "
              "thread, due frames that arrive while it is busy are dropped from classification", False, _RW),
    "inference-region": (str, "Inference region", "full-frame: classify whole frames; roi-list: classify each "
                         "frame's regions of interest (GstVideoRegionOfInterestMeta, e.g. from a detector or "
                         "edgekdroi) and attach the answers to them", FULL_FRAME, _RW),
    "object-class": (str, "Object class", "roi-list: classify only regions whose detector label is one of these "
                     "(comma-separated; empty: all)", "", _RW_PLAYING),
    "reclassify-interval": (int, "Reclassify interval", "roi-list: re-score a tracked region (an object id from a "
                            "tracker) every N frames; its last answer is attached in between", 1, _MAX, 1,
                            _RW_PLAYING),
    "model-instance-id": (str, "Model instance id", "Elements with the same id share one loaded model and one label "
                          "set (a label change through any of them is seen by all); empty: a model of its own", "",
                          _RW),
    "allow-ungated": (bool, "Allow ungated", "Load a bundle whose parity gate failed or was skipped", False, _RW),
    "frames": (GObject.TYPE_UINT64, "Frames", "Frames seen", 0, GLib.MAXUINT64, 0, GObject.ParamFlags.READABLE),
    "classified": (GObject.TYPE_UINT64, "Classified", "Frames classified", 0, GLib.MAXUINT64, 0,
                   GObject.ParamFlags.READABLE),
    "dropped": (GObject.TYPE_UINT64, "Dropped", "Due frames not classified because the model was busy", 0,
                GLib.MAXUINT64, 0, GObject.ParamFlags.READABLE),
    "lost": (GObject.TYPE_UINT64, "Lost", "Frames missing before the element (gaps in frame numbers or timestamps, "
             "e.g. dropped by a leaky queue upstream)", 0, GLib.MAXUINT64, 0, GObject.ParamFlags.READABLE),
}
# the runtime's errors name Python arguments; the element's name its properties
PROPERTY_TERMS = (("pass allow_ungated=True / --allow-ungated", "set allow-ungated=true"),
                  ("pass allow_ungated=True to use it anyway", "set allow-ungated=true to use it anyway"),
                  ("load it with resize_fallback=True", "install OpenCV in GStreamer's python"),
                  ("load it with backend='onnxruntime' (or 'ort-cuda')", "set backend=onnxruntime (or ort-cuda)"),
                  ("and pass text_encoder=DIR (or put it in the bundle)",
                   "and set text-encoder=DIR (or put it in the bundle as BUNDLE/text)"),
                  ("(text_encoder=DIR)", "(the text-encoder property)"))


def property_terms(message: str) -> str:
    """A runtime error message with its Python argument names replaced by the element's property names."""
    for python, prop in PROPERTY_TERMS:
        message = message.replace(python, prop)
    return message


class EdgekdClassify(GstBase.BaseTransform):
    """Open-vocabulary classification of video frames; see the module docstring."""

    __gtype_name__ = "EdgekdClassify"
    __gstmetadata__ = ("edgekd open-vocabulary classifier", "Filter/Analyzer/Video",
                       "Classifies video frames against label texts with an edgekd student bundle (numpy runtime)",
                       "edgekd")
    __gsttemplates__ = (Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, CAPS),
                        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS))
    __gproperties__ = PROPERTIES

    def __init__(self) -> None:
        super().__init__()
        float_for_gstreamer(self)
        self._props: dict[str, Any] = {name: spec[-2] for name, spec in PROPERTIES.items()}
        self._threshold_set = False
        self._config_lock = threading.Lock()  # serialises property requests against start/stop
        self._clf = None
        self._base_pack = None
        self._labels = None  # LabelSet in use: replaced only at a frame boundary (or at start)
        self._swap: LabelSwap | None = None  # builds requested label sets off the caller's and streaming threads
        self._requested_labels = ""  # the newest `labels` value asked for (the property reads the one in use)
        self._built: tuple[str, Any] | None = None  # (labels value, its LabelSet before thresholds): reused
        self._layout: FrameLayout | None = None
        self._frame_duration = 0  # ns per frame from the caps' framerate (0: variable or unknown)
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._failed = False
        self._overlay_text = ""
        self._analytics = analytics_available()
        self._regions = None  # RegionPass while started with inference-region=roi-list
        self._instance = None  # SharedInstance with a model-instance-id
        self._label_generation = 0  # of the shared label set this element uses
        self._reset_counters()
        self.set_in_place(True)
        self.set_passthrough(True)

    def _reset_counters(self) -> None:
        self._frames = self._classified = self._dropped = self._lost = 0
        self._last_frame: tuple[int, int] | None = None  # (offset, pts) of the previous buffer

    # --- properties -----------------------------------------------------------------------------------------------

    def do_get_property(self, prop: GObject.ParamSpec) -> Any:
        name = prop.name
        if name in COUNTERS:
            return getattr(self, f"_{name}")
        return self._props[name]

    def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
        name = prop.name
        if name == "labels":
            value = value or ""
            with self._config_lock:
                self._requested_labels = value
                if self._swap is None:  # not started: checked when the bundle loads
                    self._props["labels"] = value
            self._request_labels()
            return
        self._props[name] = value
        if name == "threshold":
            self._threshold_set = True
            self._request_labels()
        if name == "overlay":
            self._update_passthrough()

    def _update_passthrough(self) -> None:
        # meta is added to (and text drawn on) the buffer itself, which then must be writable
        self.set_passthrough(not (self._props["overlay"] or (self._analytics and self._props["block"])
                                  or self._props["inference-region"] == ROI_LIST))

    # --- labels ---------------------------------------------------------------------------------------------------

    def _label_request(self) -> LabelRequest:
        t = float(self._props["threshold"])
        return LabelRequest(self._requested_labels, None if t <= THRESHOLD_OFF else t, self._threshold_set)

    def _request_labels(self) -> None:
        """While running: queue the current `labels`/`threshold` for the label thread (returns at once)."""
        with self._config_lock:
            if self._swap is not None:
                self._swap.request(self._label_request())

    def _build_labels(self, request: LabelRequest) -> Any:
        """LabelRequest -> LabelSet (on the label thread, or at start). EdgekdError naming the property if refused."""
        value = request.labels
        if self._built is not None and self._built[0] == value:
            labels = self._built[1]
        else:
            try:
                labels = self._clf.make_label_set(self._resolve_labels(value))
            except EdgekdError as e:
                raise EdgekdError(f"labels={value!r}: {property_terms(str(e))}") from e
            self._built = (value, labels)
        return labels.with_thresholds(request.threshold) if request.threshold_set else labels

    def _refused(self, request: LabelRequest, error: Exception) -> None:
        with self._config_lock:
            if self._requested_labels == request.labels:  # later threshold changes build on the set in use
                self._requested_labels = self._props["labels"]
        self._post(Gst.MessageType.WARNING, Gst.ResourceError.SETTINGS,
                   f"{ELEMENT_NAME}: {error}; not applied, the labels in use stay ({self._props['labels']!r})")

    def _apply_ready(self, ready: ReadyLabels, n: int) -> None:
        """At a frame boundary: the new set is used from frame `n` on (by every element of a shared instance)."""
        self._labels = ready.labels
        self._props["labels"] = ready.request.labels
        if self._instance is not None:
            self._label_generation = self._instance.publish(ready.labels, ready.request.labels)
        waited_ms = (time.perf_counter() - ready.requested_at) * 1e3
        s = Gst.Structure.new_empty(LABELS_MESSAGE_NAME)
        s.set_value("frame", uint64(n))
        s.set_value("labels", ready.request.labels)
        s.set_value("classes", len(ready.labels.class_names))
        s.set_value("build-ms", float(ready.build_ms))
        s.set_value("request-to-frame-ms", float(waited_ms))
        self.post_message(Gst.Message.new_element(self, s))
        log.info("labels %r in use from frame %d (%d classes, built in %.1f ms)", ready.request.labels, n,
                 len(ready.labels.class_names), ready.build_ms, extra={"gst_object": self})

    def _resolve_labels(self, value: str) -> Any:
        """'' -> the bundle's pack; a .npz/file -> that pack; 'a, b' -> a subset of the bundle's pack when it has all
        of them, else the names (embedded by the text encoder)."""
        value = value.strip()
        info = self._clf.info
        if not value:
            if info.labels_path is None:
                raise EdgekdError(f"{info.root} has no labels.npz; set the 'labels' property (comma list or a .npz)")
            return info.labels_path
        if value.endswith(".npz") or Path(value).is_file():
            return value
        names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
        if not names:
            raise EdgekdError("no label names in it; give comma-separated labels or a label pack .npz")
        if self._base_pack is not None and all(n in self._base_pack.class_names for n in names):
            return self._base_pack.subset(names)
        return names

    # --- lifecycle ------------------------------------------------------------------------------------------------

    def do_start(self) -> bool:
        """READY -> PAUSED: load the bundle and its labels; a bad bundle or labels fail the state change with an
        element error naming the property."""
        p = self._props
        self._reset_counters()
        self._failed, self._overlay_text, self._built = False, "", None
        try:
            if p["inference-region"] not in INFERENCE_REGIONS:
                raise EdgekdError(f"inference-region={p['inference-region']!r} is not one of "
                                  f"{', '.join(INFERENCE_REGIONS)}")
            self._load()
        except (EdgekdError, ValueError, OSError) as e:
            code = Gst.ResourceError.SETTINGS if p["bundle"] and Path(p["bundle"]).exists() \
                else Gst.ResourceError.NOT_FOUND
            self._post(Gst.MessageType.ERROR, code, f"{ELEMENT_NAME}: cannot load bundle={p['bundle']!r}: "
                                                    f"{property_terms(str(e))}")
            self._clf = None
            self._release_instance()  # a failed start is not stopped
            return False
        clf = self._clf
        mode = "block=true: every due frame in the streaming thread" if p["block"] else \
            "worker thread: due frames are dropped while it is busy"
        log.info("bundle %s on %s with %d labels (labels=%r), %s", clf.info.root, clf.backend.name,
                 len(self._labels.class_names), p["labels"], mode, extra={"gst_object": self})
        if not clf.resize_in_graph:
            log.info("%s resizes frames in numpy; a whole-frame bundle (edgekd export --preprocess-in-graph full) "
                     "does it inside the model", clf.info.root, extra={"gst_object": self})
        if not p["block"]:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=ELEMENT_NAME)
        if p["inference-region"] == ROI_LIST:
            from edgekd.gst.region_pass import RegionPass

            self._regions = RegionPass(p["reclassify-interval"])
        self._update_passthrough()
        return True

    def _load(self) -> None:
        from edgekd.labelpack import load_label_pack
        from edgekd.runtime.classifier import OpenVocabClassifier

        p = self._props
        if not p["bundle"]:
            raise EdgekdError("the 'bundle' property is not set (an `edgekd export` output directory)")

        def load() -> OpenVocabClassifier:
            return OpenVocabClassifier.load(p["bundle"], backend=p["backend"] or "auto",
                                            threads=p["threads"] or None, text_encoder=p["text-encoder"] or None,
                                            allow_ungated=p["allow-ungated"])

        if p["model-instance-id"]:
            from edgekd.gst.instances import acquire

            key = (str(Path(p["bundle"]).resolve()), p["backend"] or "auto", p["threads"], p["text-encoder"] or "",
                   p["allow-ungated"])
            self._instance = acquire(p["model-instance-id"], key, load)
            clf = self._instance.clf
        else:
            clf = load()
        with self._config_lock:
            self._clf = clf
            self._base_pack = load_label_pack(clf.info.labels_path) if clf.info.labels_path is not None else None
            self._requested_labels = p["labels"]
            self._labels = self._start_labels()
            self._swap = LabelSwap(self._build_labels, self._refused, name=f"{ELEMENT_NAME}-labels")

    def _start_labels(self) -> Any:
        """The label set at start: the shared one when another element of the instance already uses one and this
        element's `labels` is empty or the same, else its own (shared with the instance's other elements)."""
        shared, value, generation = self._instance.current() if self._instance is not None else (None, "", 0)
        if shared is not None and self._requested_labels in ("", value):
            self._props["labels"] = self._requested_labels = value
            self._label_generation = generation
            return shared
        labels = self._build_labels(self._label_request())
        if self._instance is not None:
            self._label_generation = self._instance.publish(labels, self._requested_labels)
        return labels

    def do_stop(self) -> bool:
        self._drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._config_lock:
            swap, self._swap = self._swap, None
        if swap is not None:
            swap.close()
        with self._config_lock:
            self._clf = self._base_pack = self._labels = self._built = self._regions = None
        self._release_instance()
        return True

    def _release_instance(self) -> None:
        with self._config_lock:
            instance, self._instance = self._instance, None
        if instance is not None:
            from edgekd.gst.instances import release

            release(self._props["model-instance-id"], instance)

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        info = GstVideo.VideoInfo.new_from_caps(incaps)
        if info is None:
            return False
        cm = info.colorimetry
        self._layout = FrameLayout(GstVideo.VideoFormat.to_string(info.finfo.format), info.width, info.height,
                                   tuple(info.stride[: info.finfo.n_planes]), tuple(info.offset[: info.finfo.n_planes]),
                                   _MATRICES.get(cm.matrix, "bt601"),
                                   cm.range == getattr(GstVideo.VideoColorRange, "0_255"))
        self._frame_duration = Gst.util_uint64_scale(Gst.SECOND, info.fps_d, info.fps_n) if info.fps_n > 0 else 0
        return True

    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.EOS:
            self._drain()  # the last answers reach the bus before EOS does
            s = Gst.Structure.new_empty(STATS_MESSAGE_NAME)
            for key in COUNTERS:
                s.set_value(key, uint64(getattr(self, f"_{key}")))
            self.post_message(Gst.Message.new_element(self, s))
        elif event.type in (Gst.EventType.FLUSH_STOP, Gst.EventType.SEGMENT):
            self._last_frame = None  # a seek or a new segment: no gap to count across it
        return GstBase.BaseTransform.do_sink_event(self, event)

    def _drain(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            future.result()

    # --- per frame ------------------------------------------------------------------------------------------------

    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        t0 = time.perf_counter()
        n = self._frames
        self._frames += 1
        self._count_lost(buf)
        if self._failed:
            return Gst.FlowReturn.ERROR
        ready = self._swap.take() if self._swap is not None else None
        if ready is not None:
            self._apply_ready(ready, n)
        elif self._instance is not None:
            self._adopt_shared_labels()
        if self._regions is not None:
            return self._transform_regions(buf, n, t0)
        if n % self._props["interval"] == 0 and self._clf is not None:
            labels = self._labels  # this frame's set, whichever thread classifies it
            if self._props["block"]:
                preds = self._classify_buffer(buf, self._classify, n, buf.pts, t0, labels)
                if preds is None:
                    return Gst.FlowReturn.ERROR
                self._attach_meta(buf, preds)
            elif self._future is not None and not self._future.done():
                self._dropped += 1
            else:
                data = self._copy(buf)
                self._future = self._pool.submit(self._classify, data, n, buf.pts, t0, labels)
        if self._props["overlay"] and self._overlay_text:
            self._draw(buf)
        return Gst.FlowReturn.OK

    def _adopt_shared_labels(self) -> None:
        """Another element of the shared instance changed the labels: use its set from this frame on."""
        labels, value, generation = self._instance.current()
        if generation != self._label_generation and labels is not None:
            self._labels, self._props["labels"], self._label_generation = labels, value, generation
            with self._config_lock:
                self._requested_labels = value

    def _transform_regions(self, buf: Gst.Buffer, n: int, t0: float) -> Gst.FlowReturn:
        """inference-region=roi-list: classify this frame's due regions (edgekd.gst.region_pass)."""
        p, regions = self._props, self._regions
        due, cached = regions.plan(buf, n, p["object-class"], p["reclassify-interval"])
        if due and n % p["interval"] == 0 and self._clf is not None:
            labels = self._labels
            if p["block"]:
                answers = self._classify_buffer(buf, self._classify_regions, due, n, buf.pts, t0, labels)
                if answers is None:
                    return Gst.FlowReturn.ERROR
                regions.attach(due, answers, n)
            elif self._future is not None and not self._future.done():
                self._dropped += 1
            else:
                self._future = self._pool.submit(self._classify_regions, self._copy(buf), due, n, buf.pts, t0,
                                                 labels)
        if p["overlay"]:
            self._draw(buf, lambda data: regions.draw(data, self._layout, cached))
        return Gst.FlowReturn.OK

    def _classify_regions(self, data: np.ndarray, rois: list, n: int, pts: int, t0: float,
                          labels: Any) -> list | None:
        """Flat frame bytes + due regions -> their answers, posted as one message (None after posting an error)."""
        from edgekd.gst.region_pass import regions_value

        try:
            answers = self._regions.classify(self._clf, labels, data, self._layout, rois, n, int(self._props["top-k"]))
        except (EdgekdError, ValueError, RuntimeError) as e:
            self._failed = True
            self._post(Gst.MessageType.ERROR, Gst.ResourceError.FAILED, f"{ELEMENT_NAME}: frame {n}: {e}")
            return None
        self._classified += 1
        self._post_result(n, pts, t0, lambda s: s.set_value("regions", regions_value(rois, answers)))
        return answers

    def _count_lost(self, buf: Gst.Buffer) -> None:
        """Count frames missing before this one: by frame number where the source numbers its frames (offset_end =
        offset + 1, as v4l2src and videotestsrc do), else by timestamp gaps at the caps' constant frame rate."""
        offset, pts = buf.offset, buf.pts
        numbered = offset != Gst.BUFFER_OFFSET_NONE and buf.offset_end == offset + 1
        last, self._last_frame = self._last_frame, (offset if numbered else -1, pts)
        if last is None:
            return
        if numbered and last[0] >= 0:
            self._lost += max(0, offset - last[0] - 1)
        elif self._frame_duration and pts != Gst.CLOCK_TIME_NONE and last[1] != Gst.CLOCK_TIME_NONE and pts > last[1]:
            self._lost += max(0, round((pts - last[1]) / self._frame_duration) - 1)

    @staticmethod
    def _copy(buf: Gst.Buffer) -> np.ndarray:
        """The frame's bytes, copied: the worker classifies them after the buffer has moved on."""
        return np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8)

    def _classify_buffer(self, buf: Gst.Buffer, classify: Any, *args: Any) -> list | None:
        """classify(the buffer's bytes mapped for reading, *args) in the streaming thread (None after an error)."""
        ok, mapinfo = buf.map(Gst.MapFlags.READ)
        if not ok:
            self._post(Gst.MessageType.ERROR, Gst.ResourceError.READ, "cannot map the video buffer for reading")
            return None
        try:
            return classify(np.frombuffer(mapinfo.data, np.uint8), *args)
        finally:
            buf.unmap(mapinfo)

    def _classify(self, data: np.ndarray, n: int, pts: int, t0: float, labels: Any) -> list | None:
        """Flat frame bytes -> top-k Predictions over `labels`, posted as a message (None after posting an error)."""
        clf, layout = self._clf, self._layout
        try:
            if layout.format in PLANAR:  # YUV: rendered to the model's size in the planes, converted there
                frame, color = render_model_input(data, layout, clf.preprocess), "rgb"
            else:  # packed RGB/BGR: a view, rendered (or resized in the graph) by the classifier
                frame, color = model_frame(data, layout)
            preds = labels.predict(clf.embed(frame, color)[None], int(self._props["top-k"]))[0]
        except (EdgekdError, ValueError, RuntimeError) as e:
            self._failed = True
            self._post(Gst.MessageType.ERROR, Gst.ResourceError.FAILED, f"{ELEMENT_NAME}: frame {n}: {e}")
            return None
        self._classified += 1
        self._overlay_text = caption(preds)
        self._post_result(n, pts, t0, lambda s: set_answer(s, preds))
        return preds

    def _post_result(self, n: int, pts: int, t0: float, fill: Any) -> None:
        """Post frame n's `edgekd-classification` message: frame, pts, what `fill(structure)` sets (the answer or
        the regions), latency-ms (t0, the frame's arrival -> now), classified, dropped."""
        s = Gst.Structure.new_empty(MESSAGE_NAME)
        s.set_value("frame", uint64(n))
        s.set_value("pts", uint64(pts))
        fill(s)
        s.set_value("latency-ms", float((time.perf_counter() - t0) * 1e3))
        s.set_value("classified", uint64(self._classified))
        s.set_value("dropped", uint64(self._dropped))
        self.post_message(Gst.Message.new_element(self, s))

    def _draw(self, buf: Gst.Buffer, paint: Any = None) -> None:
        """paint(the buffer's bytes mapped for writing); default: the latest answer in the top-left corner."""
        ok, mapinfo = buf.map(Gst.MapFlags.READ | Gst.MapFlags.WRITE)
        if not ok:
            log.warning("%s: buffer not writable, overlay skipped", ELEMENT_NAME, extra={"gst_object": self})
            return
        try:
            data = np.frombuffer(mapinfo.data, np.uint8)
            if paint is None:
                draw_text(data, self._layout, self._overlay_text)
            else:
                paint(data)
        finally:
            buf.unmap(mapinfo)

    def _attach_meta(self, buf: Gst.Buffer, preds: list) -> None:
        """GstAnalytics classification meta (GStreamer >= 1.24): confidence = softmax prob, class = label quark."""
        if not self._analytics:
            return
        if not buf.is_writable():  # e.g. a python reference to the buffer: adding meta would be refused
            log.warning("%s: buffer not writable, GstAnalytics meta left out", ELEMENT_NAME,
                        extra={"gst_object": self})
            self._analytics = False
            return
        from gi.repository import GstAnalytics

        meta = GstAnalytics.buffer_add_analytics_relation_meta(buf)
        if meta is None:
            return
        meta.add_cls_mtd([float(p.prob) for p in preds], [GLib.quark_from_string(p.label) for p in preds])

    def _post(self, kind: Gst.MessageType, code: Any, text: str) -> None:
        """An ERROR/WARNING message with `text` (GST_ELEMENT_ERROR without a Python traceback)."""
        self.message_full(kind, Gst.ResourceError.quark(), code, text, None, __file__, "edgekdclassify", 0)


GObject.type_register(EdgekdClassify)
install_gst_logging()
