"""`edgekdclassify` per-frame latency and throughput inside a GStreamer pipeline, against OpenVocabClassifier alone.

    python benchmarks/gst_element.py [--arch mobilenetv4_conv_small] [--img-size 224] [--threads 2] [--frames 300]
                                     [--size 640x480] [--formats RGB,NV12] [--modes full,numpy]
                                     [--out benchmarks/results/gstreamer/gst_element]

Builds fp32 ONNX bundles of a random-weight student (latency does not depend on the weights; exported without a
gate, loaded with allow-ungated) with 1000 random labels: `full` resizes whole frames in the graph (the element's
preferred kind), `numpy` takes float pixels prepared with Pillow. Each measurement runs in a fresh subprocess that
imports only the runtime and gi (no torch):

* block: `videotestsrc pattern=snow num-buffers=N ! FORMAT,WxH ! edgekdclassify block=true ! fakesink sync=false`;
  per-frame latency = the messages' latency-ms (frame arrival in the element -> answer, incl. colour conversion),
  throughput = N / wall time from PLAYING to EOS;
* classify(): OpenVocabClassifier.classify() on one RGB frame of the same size, the same threads (the element's
  overhead is element p50 / classify() p50 - 1);
* live: the same source at 30 fps (is-live, fakesink sync=true) with the default worker thread: frames due while the
  model is busy are dropped from classification, never from the video.

The first 10% of the frames are warm-up and left out of the latency figures. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(bundle: str, fmt: str, size: tuple[int, int], frames: int, threads: int) -> dict:
    """Inside a runtime-only process: block-mode pipeline, classify() alone, live pipeline with drops."""
    from edgekd.bench.timer import latency_stats
    from edgekd.gst import import_gst, register
    from edgekd.runtime.classifier import OpenVocabClassifier

    Gst = import_gst()[0]
    register()
    w, h = size
    caps = f"video/x-raw,format={fmt},width={w},height={h},framerate=30/1"
    el = f"edgekdclassify bundle={bundle} threads={threads} allow-ungated=true top-k=5"
    warm = max(1, frames // 10)
    clf = OpenVocabClassifier.load(bundle, threads=threads, allow_ungated=True)
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    times = _time_classify(clf, frame, frames // 2, warm)  # half before, half after the pipeline: same conditions
    lat, wall, _ = _pipeline(Gst, f"videotestsrc num-buffers={frames} pattern=snow ! {caps} ! {el} block=true ! "
                                  "fakesink sync=false")
    times += _time_classify(clf, frame, frames - frames // 2, warm)
    live_frames = min(frames, 150)
    _, live_wall, live = _pipeline(Gst, f"videotestsrc is-live=true num-buffers={live_frames} pattern=snow ! {caps} ! "
                                        f"{el} ! fakesink sync=true")
    element = latency_stats(np.asarray(lat[warm:]) / 1e3)
    classify = latency_stats(times)
    return {"format": fmt, "element_ms": element, "classify_ms": classify,
            "overhead_p50": element["p50"] / classify["p50"] - 1, "overhead_min": element["min"] / classify["min"] - 1,
            "block_fps": frames / wall,
            "live": {"fps": 30, "frames": live["frames"], "classified": live["classified"], "dropped": live["dropped"],
                     "wall_s": live_wall},
            "loadavg_1m": os.getloadavg()[0]}


def _time_classify(clf, frame: np.ndarray, n: int, warm: int) -> list[float]:
    times = []
    for i in range(n + warm):
        t0 = time.perf_counter()
        clf.classify(frame, top_k=5)
        if i >= warm:
            times.append(time.perf_counter() - t0)
    return times


def _pipeline(Gst, desc: str) -> tuple[list[float], float, dict]:
    pipe = Gst.parse_launch(desc)
    bus = pipe.get_bus()
    lat: list[float] = []
    stats: dict = {}
    t0 = time.perf_counter()
    pipe.set_state(Gst.State.PLAYING)
    try:
        while True:
            msg = bus.timed_pop(60 * Gst.SECOND)
            if msg is None:
                raise RuntimeError(f"no message for 60 s from: {desc}")
            if msg.type == Gst.MessageType.ERROR:
                raise RuntimeError(msg.parse_error()[0].message)
            if msg.type == Gst.MessageType.EOS:
                break
            if msg.type == Gst.MessageType.ELEMENT:
                s = msg.get_structure()
                if s.get_name() == "edgekd-classification":
                    lat.append(s.get_value("latency-ms"))
                elif s.get_name() == "edgekd-stats":
                    stats = {k: s.get_value(k) for k in ("frames", "classified", "dropped")}
    finally:
        pipe.set_state(Gst.State.NULL)
    return lat, time.perf_counter() - t0, stats


def build_bundles(arch: str, img_size: int, work: Path, modes: list[str]) -> dict[str, Path]:
    import torch

    from edgekd.export.pipeline import export_bundle
    from edgekd.labelpack import LabelPack
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    run = work / "run"
    save_student(run, create_student(arch, 512, img_size=img_size), extra={"random_init": True})
    rng = np.random.default_rng(0)  # 1000 random classes: the label scoring cost of an ImageNet-sized label set
    LabelPack([f"class {i}" for i in range(1000)], rng.normal(size=(1000, 512)).astype(np.float32),
              meta={"logit_scale": 100.0}).save(run / "labels.npz")
    in_graph = {"full": "full", "numpy": False}
    return {m: export_bundle(run, "onnx", "fp32", work / f"bundle_{m}", gate=False, preprocess_in_graph=in_graph[m],
                             overwrite=True) for m in modes}


def write_report(res: dict, out: Path) -> None:
    from edgekd._io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), res)
    env = res["environment"]
    lines = [f"# edgekdclassify: {res['arch']} @ {res['img_size']} fp32 ONNX, {res['size']} frames, "
             f"{res['threads']} threads", "",
             f"CPU: {env['cpu']} ({env['cores']} cores); {env['gstreamer']}, onnxruntime "
             f"{env['onnxruntime']}; 1000 labels, top-5; {res['frames']} frames per run (first 10% warm-up).",
             "element = latency-ms of the bus messages in block mode (frame arrival -> answer, incl. colour "
             "conversion); classify() = OpenVocabClassifier.classify() on an RGB frame of the same size; "
             "live = 30 fps live source, default worker thread (dropped = due frames not classified, the video "
             "keeps every frame); load = 1-minute load average after the run.", "",
             "Overhead = element / classify() - 1 from medians (p50) and from minima (min: the cost on an idle CPU); "
             "classify() is timed half before and half after the element's run.", "",
             "| bundle | format | element ms p50 / p90 / p99 (min) | classify() ms p50 (min) | overhead p50 / min | "
             "block fps | live: classified / dropped of frames | load |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        e, c, live = r["element_ms"], r["classify_ms"], r["live"]
        lines.append(f"| {r['mode']} | {r['format']} | {e['p50']:.2f} / {e['p90']:.2f} / {e['p99']:.2f} "
                     f"({e['min']:.2f}) | {c['p50']:.2f} ({c['min']:.2f}) | {100 * r['overhead_p50']:.1f}% / "
                     f"{100 * r['overhead_min']:.1f}% | {r['block_fps']:.1f} | "
                     f"{live['classified']} / {live['dropped']} of {live['frames']} | {r['loadavg_1m']:.2f} |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def environment() -> dict:
    from edgekd._optional import installed_version
    from edgekd.bench.env import collect_environment
    from edgekd.cpu import cpu_facts
    from edgekd.cpu import describe as describe_cpu
    from edgekd.gst import import_gst

    full = collect_environment()
    return {"cpu": describe_cpu(cpu_facts()), "cores": os.cpu_count(), "gstreamer": import_gst()[0].version_string(),
            "onnxruntime": installed_version("onnxruntime"), "full": full}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenetv4_conv_small")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--formats", default="RGB,NV12")
    ap.add_argument("--modes", default="full,numpy")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gstreamer/gst_element"))
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: JSON arguments of one measurement
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(**json.loads(args.measure))))
        return
    size = tuple(int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-gst-bench-") as tmp:
        bundles = build_bundles(args.arch, args.img_size, Path(tmp), args.modes.split(","))
        for mode, bundle in bundles.items():
            for fmt in args.formats.split(","):
                job = {"bundle": str(bundle), "fmt": fmt, "size": size, "frames": args.frames, "threads": args.threads}
                out = subprocess.run([sys.executable, __file__, "--measure", json.dumps(job)], capture_output=True,
                                     text=True, check=False)
                if out.returncode != 0:
                    raise SystemExit(f"measurement {mode}/{fmt} failed:\n{out.stderr[-3000:]}")
                rows.append({"mode": mode, **json.loads(out.stdout.strip().splitlines()[-1])})
                print(f"{mode} {fmt}: element p50 {rows[-1]['element_ms']['p50']:.2f} ms, classify() p50 "
                      f"{rows[-1]['classify_ms']['p50']:.2f} ms", flush=True)
    res = {"arch": args.arch, "img_size": args.img_size, "threads": args.threads, "frames": args.frames,
           "size": args.size, "rows": rows, "environment": environment()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
