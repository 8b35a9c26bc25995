"""`edgekdclassify`: an in-place GStreamer video filter that classifies frames with an edgekd bundle.

    ... ! videoconvert ! edgekdclassify bundle=BUNDLE labels="person,forklift,pallet" threshold=0.2 ! ...

Video passes through untouched (unless `overlay=true` draws the answer on it). Every `interval`-th frame is classified
with `OpenVocabClassifier` (numpy runtime, no torch) and the answer leaves the element as

* an element message `edgekd-classification` on the bus: frame, pts, label, score, labels/scores/probs (top-k),
  latency-ms (frame arrival -> answer), classified and dropped counts; at EOS one `edgekd-stats` message;
* text drawn on the frame with `overlay=true`;
* GstAnalytics classification metadata on the classified buffer (GStreamer >= 1.24 and `block=true` only: in the
  default mode the answer arrives after its frame has left).

By default a worker thread classifies: a frame due while it is busy passes through unclassified and is counted in
`dropped` (the video never waits for the model). `block=true` classifies in the streaming thread instead, so every
due frame gets an answer and a slow model slows the pipeline (files, tests, offline runs).
`labels` may change while PLAYING: the new set applies from the next frame classified after the call returns.
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
from edgekd.gst import ELEMENT_NAME, analytics_available, import_gst
from edgekd.gst.frames import FORMATS, FrameLayout, draw_text, model_frame

Gst, GstBase, GstVideo = import_gst()
from gi.repository import GLib, GObject  # noqa: E402  (after gi.require_version in import_gst)

log = logging.getLogger(__name__)

MESSAGE_NAME = "edgekd-classification"
STATS_MESSAGE_NAME = "edgekd-stats"
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
    "allow-ungated": (bool, "Allow ungated", "Load a bundle whose parity gate failed or was skipped", False, _RW),
    "frames": (GObject.TYPE_UINT64, "Frames", "Frames seen", 0, GLib.MAXUINT64, 0, GObject.ParamFlags.READABLE),
    "classified": (GObject.TYPE_UINT64, "Classified", "Frames classified", 0, GLib.MAXUINT64, 0,
                   GObject.ParamFlags.READABLE),
    "dropped": (GObject.TYPE_UINT64, "Dropped", "Due frames not classified because the model was busy", 0,
                GLib.MAXUINT64, 0, GObject.ParamFlags.READABLE),
}


def _uint64(value: int) -> GObject.Value:
    return GObject.Value(GObject.TYPE_UINT64, int(value))


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
        self._props: dict[str, Any] = {name: spec[-2] for name, spec in PROPERTIES.items()}
        self._threshold_set = False
        self._config_lock = threading.Lock()  # serialises label/threshold changes against loading
        self._clf = None
        self._base_pack = None
        self._labels = None  # LabelSet snapshot read by the classifying thread
        self._layout: FrameLayout | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._failed = False
        self._overlay_text = ""
        self._analytics = analytics_available()
        self._reset_counters()
        self.set_in_place(True)
        self.set_passthrough(True)

    def _reset_counters(self) -> None:
        self._frames = self._classified = self._dropped = 0

    # --- properties -----------------------------------------------------------------------------------------------

    def do_get_property(self, prop: GObject.ParamSpec) -> Any:
        name = prop.name
        if name in ("frames", "classified", "dropped"):
            return getattr(self, f"_{name}")
        return self._props[name]

    def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
        name = prop.name
        self._props[name] = value
        if name == "threshold":
            self._threshold_set = True
        if name == "overlay":
            self._update_passthrough()
        if name in ("labels", "threshold") and self._clf is not None:
            try:
                self._apply_labels(resolve=name == "labels")
            except (EdgekdError, ValueError, OSError) as e:
                self._post(Gst.MessageType.WARNING, Gst.ResourceError.SETTINGS,
                           f"{name}={value!r} not applied, keeping the previous labels: {e}")

    def _update_passthrough(self) -> None:
        # meta is added to (and text drawn on) the buffer itself, which then must be writable
        self.set_passthrough(not (self._props["overlay"] or (self._analytics and self._props["block"])))

    # --- labels ---------------------------------------------------------------------------------------------------

    def _apply_labels(self, resolve: bool = True) -> None:
        """Resolve the `labels`/`threshold` properties into the classifier and publish the new LabelSet snapshot."""
        with self._config_lock:
            clf = self._clf
            if clf is None:  # stopped meanwhile: the properties apply at the next start
                return
            if resolve:
                value = self._props["labels"] or ""
                try:
                    clf.set_labels(self._resolve_labels(value))
                except EdgekdError as e:
                    raise EdgekdError(f"labels={value!r}: {e}") from e
            if self._threshold_set:
                t = float(self._props["threshold"])
                clf.set_thresholds(None if t <= THRESHOLD_OFF else t)
            self._labels = clf.label_set

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
        """READY -> PAUSED: load the bundle; a bad bundle or labels fail the state change with an element error."""
        from edgekd.labelpack import load_label_pack
        from edgekd.runtime.classifier import OpenVocabClassifier

        p = self._props
        self._reset_counters()
        self._failed, self._overlay_text = False, ""
        try:
            if not p["bundle"]:
                raise EdgekdError("the 'bundle' property is not set (an `edgekd export` output directory)")
            clf = OpenVocabClassifier.load(p["bundle"], backend=p["backend"] or "auto", threads=p["threads"] or None,
                                           text_encoder=p["text-encoder"] or None,
                                           allow_ungated=p["allow-ungated"])
            base = load_label_pack(clf.info.labels_path) if clf.info.labels_path is not None else None
            with self._config_lock:
                self._clf, self._base_pack = clf, base
            self._apply_labels()
        except (EdgekdError, ValueError, OSError) as e:
            code = Gst.ResourceError.SETTINGS if p["bundle"] and Path(p["bundle"]).exists() \
                else Gst.ResourceError.NOT_FOUND
            self._post(Gst.MessageType.ERROR, code, f"{ELEMENT_NAME}: cannot load bundle={p['bundle']!r}: {e}")
            self._clf = None
            return False
        if not clf.resize_in_graph:
            log.info("%s resizes frames in numpy; a whole-frame bundle (edgekd export --preprocess-in-graph full) "
                     "does it inside the model", clf.info.root)
        if not p["block"]:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=ELEMENT_NAME)
        self._update_passthrough()
        return True

    def do_stop(self) -> bool:
        self._drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._config_lock:
            self._clf = self._base_pack = self._labels = None
        return True

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        info = GstVideo.VideoInfo.new_from_caps(incaps)
        if info is None:
            return False
        cm = info.colorimetry
        self._layout = FrameLayout(GstVideo.VideoFormat.to_string(info.finfo.format), info.width, info.height,
                                   tuple(info.stride[: info.finfo.n_planes]), tuple(info.offset[: info.finfo.n_planes]),
                                   _MATRICES.get(cm.matrix, "bt601"),
                                   cm.range == getattr(GstVideo.VideoColorRange, "0_255"))
        return True

    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.EOS:
            self._drain()  # the last answers reach the bus before EOS does
            s = Gst.Structure.new_empty(STATS_MESSAGE_NAME)
            for key in ("frames", "classified", "dropped"):
                s.set_value(key, _uint64(getattr(self, f"_{key}")))
            self.post_message(Gst.Message.new_element(self, s))
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
        if self._failed:
            return Gst.FlowReturn.ERROR
        if n % self._props["interval"] == 0 and self._clf is not None:
            if self._props["block"]:
                preds = self._classify_buffer(buf, n, t0)
                if preds is None:
                    return Gst.FlowReturn.ERROR
                self._attach_meta(buf, preds)
            elif self._future is not None and not self._future.done():
                self._dropped += 1
            else:
                data = self._copy(buf)
                self._future = self._pool.submit(self._classify, data, n, buf.pts, t0)
        if self._props["overlay"] and self._overlay_text:
            self._draw(buf)
        return Gst.FlowReturn.OK

    @staticmethod
    def _copy(buf: Gst.Buffer) -> np.ndarray:
        """The frame's bytes, copied: the worker classifies them after the buffer has moved on."""
        return np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8)

    def _classify_buffer(self, buf: Gst.Buffer, n: int, t0: float) -> list | None:
        ok, mapinfo = buf.map(Gst.MapFlags.READ)
        if not ok:
            self._post(Gst.MessageType.ERROR, Gst.ResourceError.READ, "cannot map the video buffer for reading")
            return None
        try:
            return self._classify(np.frombuffer(mapinfo.data, np.uint8), n, buf.pts, t0)
        finally:
            buf.unmap(mapinfo)

    def _classify(self, data: np.ndarray, n: int, pts: int, t0: float) -> list | None:
        """Flat frame bytes -> top-k Predictions, posted as a message (None after posting an error)."""
        labels, clf, layout = self._labels, self._clf, self._layout
        try:
            frame, color = model_frame(data, layout)
            preds = labels.predict(clf.embed(frame, color)[None], int(self._props["top-k"]))[0]
        except (EdgekdError, ValueError, RuntimeError) as e:
            self._failed = True
            self._post(Gst.MessageType.ERROR, Gst.ResourceError.FAILED, f"{ELEMENT_NAME}: frame {n}: {e}")
            return None
        latency_ms = (time.perf_counter() - t0) * 1e3
        self._classified += 1
        self._overlay_text = "\n".join(f"{p.label} {p.score:.2f}" for p in preds)
        self.post_message(Gst.Message.new_element(self, self._result_structure(preds, n, pts, latency_ms)))
        return preds

    def _result_structure(self, preds: list, n: int, pts: int, latency_ms: float) -> Gst.Structure:
        s = Gst.Structure.new_empty(MESSAGE_NAME)
        s.set_value("frame", _uint64(n))
        s.set_value("pts", _uint64(pts))
        s.set_value("label", preds[0].label)
        s.set_value("score", float(preds[0].score))
        s.set_value("labels", Gst.ValueArray([p.label for p in preds]))
        s.set_value("scores", Gst.ValueArray([float(p.score) for p in preds]))
        s.set_value("probs", Gst.ValueArray([float(p.prob) for p in preds]))
        s.set_value("latency-ms", float(latency_ms))
        s.set_value("classified", _uint64(self._classified))
        s.set_value("dropped", _uint64(self._dropped))
        return s

    def _draw(self, buf: Gst.Buffer) -> None:
        ok, mapinfo = buf.map(Gst.MapFlags.READ | Gst.MapFlags.WRITE)
        if not ok:
            log.warning("%s: buffer not writable, overlay skipped", ELEMENT_NAME)
            return
        try:
            draw_text(np.frombuffer(mapinfo.data, np.uint8), self._layout, self._overlay_text)
        finally:
            buf.unmap(mapinfo)

    def _attach_meta(self, buf: Gst.Buffer, preds: list) -> None:
        """GstAnalytics classification meta (GStreamer >= 1.24): confidence = softmax prob, class = label quark."""
        if not self._analytics:
            return
        if not buf.is_writable():  # e.g. a python reference to the buffer: adding meta would be refused
            log.warning("%s: buffer not writable, GstAnalytics meta left out", ELEMENT_NAME)
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
