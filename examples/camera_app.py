"""Live open-vocabulary classification of a camera, video file or RTSP stream with an exported student (no torch).

    python examples/camera_app.py BUNDLE_DIR --source 0                          # webcam 0, window with overlay
    python examples/camera_app.py BUNDLE_DIR --source clip.mp4 --headless        # JSON lines on stdout
    python examples/camera_app.py BUNDLE_DIR --source rtsp://cam/stream --every 3 --labels a.npz --labels b.npz
    # Jetson: a TensorRT bundle (edgekd export --target tensorrt) and a CSI camera through GStreamer
    python examples/camera_app.py TRT_BUNDLE --backend tensorrt --gst \
        "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx ! \
         videoconvert ! video/x-raw,format=BGR ! appsink drop=1"

Fastest on a CPU: a bundle exported with `edgekd export RUN --preprocess-in-graph full` takes the BGR frame as it is
and crops, resizes and reorders it inside the ONNX graph (docs/runtime.md, Performance).

Keys (window mode): n / p = next / previous label pack, 1-9 = label pack number, q or Esc = quit.
Label packs: --labels PACK (repeatable; default the bundle's own); --label "a red car" (repeatable) adds a pack
embedded on device when the bundle carries a text encoder (or --text-encoder DIR).
Needs `pip install 'edgekd[runtime,camera]'` (opencv-python-headless is enough for --headless).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from edgekd import EdgekdError
from edgekd._optional import require
from edgekd.runtime.classifier import OpenVocabClassifier


@dataclass
class PackSwitcher:
    """Label packs the user can cycle through at run time; `handle_key` maps a key code to a switch."""

    clf: OpenVocabClassifier
    packs: list[tuple[str, Any]]  # (name, LabelPack | path | list of strings)
    index: int = 0
    loaded: dict[int, Any] = field(default_factory=dict)

    def activate(self, i: int) -> bool:
        if not 0 <= i < len(self.packs) or (i == self.index and i in self.loaded):
            return False
        if i not in self.loaded:  # embed/load once, then swapping is free
            self.clf.set_labels(self.packs[i][1])
            self.loaded[i] = self.clf.label_set.pack
        else:
            self.clf.set_labels(self.loaded[i])
        self.index = i
        return True

    def handle_key(self, key: int) -> bool:
        """n/p: next/previous pack, 1-9: pack number. Returns True when the pack changed."""
        if key in (ord("n"), ord("N")):
            return self.activate((self.index + 1) % len(self.packs))
        if key in (ord("p"), ord("P")):
            return self.activate((self.index - 1) % len(self.packs))
        if ord("1") <= key <= ord("9"):
            return self.activate(key - ord("1"))
        return False

    @property
    def name(self) -> str:
        return self.packs[self.index][0]


def open_capture(cv2: Any, source: str | None, gst: str | None) -> Any:
    """Webcam index ('0'), a video file, an RTSP/HTTP URL, or a GStreamer pipeline -> opened cv2.VideoCapture."""
    if gst:
        cap = cv2.VideoCapture(gst, cv2.CAP_GSTREAMER)
    elif source is not None and source.isdigit():
        cap = cv2.VideoCapture(int(source))
    else:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG) if source and "://" in source else cv2.VideoCapture(source)
    if not cap.isOpened():
        raise EdgekdError(f"cannot open video source {gst or source!r} (camera index, video file, rtsp:// URL or "
                          "--gst pipeline)")
    return cap


def draw_overlay(cv2: Any, frame: Any, preds: list, fps: float, pack_name: str) -> None:
    """Top-k labels with probabilities, FPS and the active label pack, drawn in place on the BGR frame."""
    lines = [f"{fps:5.1f} FPS  [{pack_name}]"] + [f"{p.label}: {p.prob:.2f} ({p.score:+.2f})" for p in preds]
    scale = max(0.5, frame.shape[1] / 1280)
    for i, text in enumerate(lines):
        y = int((28 + 26 * i) * scale)
        cv2.putText(frame, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(frame, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255), 1, cv2.LINE_AA)


def run(args: argparse.Namespace, out: Any = sys.stdout) -> dict[str, Any]:
    """The capture loop. Returns a summary {frames, classified, fps, model_ms_mean}."""
    cv2 = require("cv2", extra="camera", purpose="the camera example")
    if args.every < 1:
        raise EdgekdError("--every must be >= 1")
    clf = OpenVocabClassifier.load(args.bundle, backend=args.backend, threads=args.threads,
                                   text_encoder=args.text_encoder, allow_ungated=args.allow_ungated)
    packs: list[tuple[str, Any]] = [(p, p) for p in args.labels]
    if args.label:
        packs.append(("custom", list(args.label)))
    if not packs:
        if clf.info.labels_path is None:
            raise EdgekdError(f"{args.bundle} has no labels.npz: pass --labels PACK or --label TEXT")
        packs = [("bundle", clf.info.labels_path)]
    switcher = PackSwitcher(clf, packs, index=-1)
    switcher.activate(0)
    cap = open_capture(cv2, args.source, args.gst)
    live = args.gst is not None or (args.source or "").isdigit() or "://" in (args.source or "")
    frames = classified = failures = 0
    preds: list = []
    fps, infer_s, t_prev = 0.0, 0.0, time.perf_counter()
    try:
        while args.max_frames is None or frames < args.max_frames:
            ok, frame = cap.read()
            if not ok:
                if live and failures < args.reconnect:  # network streams drop: reopen a few times
                    failures += 1
                    cap.release()
                    time.sleep(min(2.0 ** failures, 10))
                    cap = open_capture(cv2, args.source, args.gst)
                    continue
                break
            failures = 0
            if frames % args.every == 0:
                t0 = time.perf_counter()
                preds = clf.classify(frame, top_k=args.top_k, color="bgr")  # OpenCV frames are BGR
                infer_s += time.perf_counter() - t0
                classified += 1
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - t_prev, 1e-6) if frames else 1.0 / max(now - t_prev, 1e-6)
            t_prev = now
            if args.headless:
                if frames % args.every == 0:
                    out.write(json.dumps({"frame": frames, "time_s": round(now, 3), "fps": round(fps, 2),
                                          "labels": switcher.name,
                                          "predictions": [p.to_dict() for p in preds]}) + "\n")
                    out.flush()
            else:
                draw_overlay(cv2, frame, preds, fps, switcher.name)
                cv2.imshow("edgekd", frame)
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27):
                    break
                if switcher.handle_key(key):
                    preds = clf.classify(frame, top_k=args.top_k, color="bgr")
            frames += 1
    finally:
        cap.release()
        if not args.headless:
            cv2.destroyAllWindows()
    return {"frames": frames, "classified": classified, "fps": round(fps, 2),
            "model_ms_mean": round(1000 * infer_s / max(classified, 1), 3)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("bundle", help="export bundle directory (edgekd export)")
    ap.add_argument("--source", default="0", help="camera index, video file or rtsp:// URL")
    ap.add_argument("--gst", default=None, help="GStreamer pipeline ending in appsink (Jetson CSI cameras)")
    ap.add_argument("--labels", action="append", default=[], help="label pack .npz (repeatable; keys switch)")
    ap.add_argument("--label", action="append", default=[], help="label string (repeatable; needs a text encoder)")
    ap.add_argument("--text-encoder", default=None, help="edgekd export-text directory")
    ap.add_argument("--every", type=int, default=1, help="classify every Nth frame")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--backend", default="auto", help="auto | onnxruntime | openvino | tensorrt | ort-cuda | ort-trt")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--allow-ungated", action="store_true", help="use a bundle whose parity gate failed or was skipped")
    ap.add_argument("--headless", action="store_true", help="no window: JSON lines on stdout")
    ap.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    ap.add_argument("--reconnect", type=int, default=5, help="reopen attempts for dropped live streams")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except EdgekdError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
