"""`edgekdclassify` inside GStreamer: cost per frame by format, size, backend and resize method, memory over a long
run, and what a label change costs the threads of the video.

    python benchmarks/gst_element.py [--arch mobilenetv4_conv_small] [--img-size 224] [--threads 2] [--frames 300]
        [--sizes 640x480,1280x720] [--formats RGB,BGR,NV12,I420] [--backends onnxruntime,openvino]
        [--resize pillow,cv2-area-linear] [--rss-frames 10000] [--text-encoders none,fp32,int8] [--changes 10]
        [--teacher ViT-B-32] [--jpeg] [--out benchmarks/results/gstreamer/gst_element]

Bundles: fp32 ONNX of a random-weight student (latency does not depend on the weights; exported without a gate and
loaded with allow-ungated) taking model-size pixels, one per resize method, run on onnxruntime and on OpenVINO, with
1000 random labels (an ImageNet-sized label set) and top-5. Each measurement runs in a fresh process that imports
only the runtime and gi (no torch):

* matrix: `videotestsrc pattern=snow num-buffers=N ! FORMAT,WxH ! edgekdclassify block=true ! fakesink`; the element's
  cost per frame is the time the streaming thread spends in it (identity handoffs just before and after it), and
  `classify()` is OpenVocabClassifier.classify() on RGB frames of the same size in the same process, half timed
  before and half after the pipeline. The first 10% of frames are warm-up.
* memory: one pipeline of `--rss-frames` RGB 640x480 frames (block=true), RSS sampled every 500 frames, with the
  bundle alone and with each text encoder (`edgekd export-text --precision ...` of `--teacher`, random weights),
  the labels changed to new texts every rss-frames/10 frames.
* label changes: a live 30 fps source (default worker mode), the labels changed `--changes` times to texts the
  text encoder embeds: the app thread's set_property time, the streaming thread's time in the element on every
  frame (the frames that swap a set in against the others) and the request-to-frame time.
* `--jpeg`: decoding a 640x480 JPEG (quality 90) in full vs at reduced size (Pillow `draft`, OpenCV
  `IMREAD_REDUCED_COLOR_2`), each followed by the model-input render, and how far the pixels move.

Writes OUT.json and OUT.md; the README block is generated from OUT.json (benchmarks/readme_tables.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import runtime_child  # benchmarks/runtime_child.py, beside this script
from random_student import make_random_run

WARM_FRACTION = 0.1


# --- inside a runtime-only process ---------------------------------------------------------------------------------

def _gst():
    from edgekd.gst import import_gst, register

    Gst = import_gst()[0]
    register()
    return Gst


def _play(Gst, pipe, on_message=None, timeout_s: float = 120.0) -> float:
    """Run `pipe` to EOS; -> wall seconds. ERROR raises."""
    bus = pipe.get_bus()
    t0 = time.perf_counter()
    pipe.set_state(Gst.State.PLAYING)
    try:
        while True:
            msg = bus.timed_pop(int(timeout_s * Gst.SECOND))
            if msg is None:
                raise RuntimeError(f"no message for {timeout_s:.0f} s")
            if msg.type == Gst.MessageType.ERROR:
                raise RuntimeError(msg.parse_error()[0].message)
            if msg.type == Gst.MessageType.EOS:
                return time.perf_counter() - t0
            if msg.type == Gst.MessageType.ELEMENT and on_message is not None:
                on_message(msg.get_structure())
    finally:
        pipe.set_state(Gst.State.NULL)


def _element_times(pipe) -> list[float]:
    """Seconds the streaming thread spends inside the element per frame, from identity handoffs named pre/post."""
    arrived: list[float] = []
    spent: list[float] = []
    for name, fn in (("pre", lambda *_: arrived.append(time.perf_counter())),
                     ("post", lambda *_: spent.append(time.perf_counter() - arrived[len(spent)]))):
        tap = pipe.get_by_name(name)
        tap.set_property("signal-handoffs", True)
        tap.connect("handoff", fn)
    return spent


def measure_matrix(bundle: str, backend: str, fmt: str, size: tuple[int, int], frames: int, threads: int) -> dict:
    from edgekd.bench.timer import latency_stats
    from edgekd.runtime.classifier import OpenVocabClassifier

    Gst = _gst()
    w, h = size
    warm = max(1, int(frames * WARM_FRACTION))
    clf = OpenVocabClassifier.load(bundle, backend=backend, threads=threads, allow_ungated=True)
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    times = _time_classify(clf, rgb, frames // 2, warm)
    pipe = Gst.parse_launch(
        f"videotestsrc num-buffers={frames} pattern=snow ! video/x-raw,format={fmt},width={w},height={h},"
        f"framerate=30/1 ! identity name=pre ! edgekdclassify bundle={bundle} backend={backend} threads={threads} "
        "allow-ungated=true top-k=5 block=true ! identity name=post ! fakesink sync=false")
    spent = _element_times(pipe)
    wall = _play(Gst, pipe)
    times += _time_classify(clf, rgb, frames - frames // 2, warm)
    element, classify = latency_stats(spent[warm:]), latency_stats(times)
    return {"backend": backend, "format": fmt, "size": f"{w}x{h}", "element_ms": element, "classify_rgb_ms": classify,
            "vs_classify_p50": element["p50"] / classify["p50"], "fps": frames / wall,
            "loadavg_1m": os.getloadavg()[0]}


def _time_classify(clf, frame: np.ndarray, n: int, warm: int) -> list[float]:
    times = []
    for i in range(n + warm):
        t0 = time.perf_counter()
        clf.classify(frame, top_k=5)
        if i >= warm:
            times.append(time.perf_counter() - t0)
    return times


def measure_memory(bundle: str, text_encoder: str | None, frames: int, threads: int) -> dict:
    import psutil

    Gst = _gst()
    proc = psutil.Process()
    te = f" text-encoder={text_encoder}" if text_encoder else ""
    pipe = Gst.parse_launch(
        f"videotestsrc num-buffers={frames} pattern=snow ! video/x-raw,format=RGB,width=640,height=480,"
        f"framerate=30/1 ! identity name=tap ! edgekdclassify name=c bundle={bundle}{te} threads={threads} "
        "allow-ungated=true top-k=5 block=true ! fakesink sync=false")
    el, samples, changes, seen = pipe.get_by_name("c"), [], max(1, frames // 10), [0]

    def on_frame(_tap, _buf) -> None:
        n = seen[0]
        seen[0] += 1
        if n % 500 == 0:
            samples.append((n, proc.memory_info().rss / 2**20))
        if text_encoder and n % changes == 0 and n:
            el.set_property("labels", f"a thing number {n}, another thing {n}, a forklift")

    tap = pipe.get_by_name("tap")
    tap.set_property("signal-handoffs", True)
    tap.connect("handoff", on_frame)
    wall = _play(Gst, pipe, timeout_s=600)
    samples.append((frames, proc.memory_info().rss / 2**20))
    rss = [mb for _, mb in samples]
    return {"text_encoder": text_encoder and Path(text_encoder).name, "frames": frames, "samples": samples,
            "rss_start_mb": rss[1] if len(rss) > 1 else rss[0], "rss_end_mb": rss[-1], "rss_max_mb": max(rss),
            "wall_s": wall, "label_changes": (frames - 1) // changes if text_encoder else 0}


def measure_label_changes(bundle: str, text_encoder: str, changes: int, threads: int) -> dict:
    from edgekd.bench.timer import latency_stats

    Gst = _gst()
    frames = 30 * (changes + 2)
    pipe = Gst.parse_launch(
        f"videotestsrc is-live=true num-buffers={frames} pattern=snow ! video/x-raw,format=RGB,width=640,height=480,"
        f"framerate=30/1 ! identity name=pre ! edgekdclassify name=c bundle={bundle} text-encoder={text_encoder} "
        f"threads={threads} allow-ungated=true top-k=5 ! identity name=post ! fakesink sync=true")
    el = pipe.get_by_name("c")
    spent = _element_times(pipe)
    swaps, set_s = [], []

    def on_message(s) -> None:
        if s.get_name() == "edgekd-labels":
            swaps.append({k: s.get_value(k) for k in ("frame", "build-ms", "request-to-frame-ms")})

    def change_labels() -> None:  # the app's thread: one change per second of video
        for i in range(changes):
            time.sleep(1.0)
            t0 = time.perf_counter()
            el.set_property("labels", f"a photo of object {i}, a person, a forklift carrying a pallet, box {i}")
            set_s.append(time.perf_counter() - t0)

    import threading

    app = threading.Thread(target=change_labels)
    app.start()
    _play(Gst, pipe, on_message, timeout_s=120)
    app.join()
    swap_frames = {s["frame"] for s in swaps}
    normal = [t for i, t in enumerate(spent) if i not in swap_frames and i > 30]
    at_swap = [spent[f] for f in swap_frames if f < len(spent)]
    return {"text_encoder": Path(text_encoder).name, "changes": changes, "applied": len(swaps),
            "set_property_ms": latency_stats(set_s), "element_ms_normal": latency_stats(normal),
            "element_ms_at_swap": latency_stats(at_swap),
            "build_ms": latency_stats([s["build-ms"] / 1e3 for s in swaps]),
            "request_to_frame_ms": latency_stats([s["request-to-frame-ms"] / 1e3 for s in swaps]),
            "frame_interval_ms": 1e3 / 30}


# --- JPEG decode -------------------------------------------------------------------------------------------------

def measure_jpeg(img_size: int, repeats: int = 60) -> list[dict]:
    """JPEG files (quality 90; pure noise, and a smooth photo-like scene) at 640x480, 1280x720 and 1920x1080, decoded
    and rendered to the model's input: in full (what training does) vs the runtime's reduced-scale decode (libjpeg's
    DCT scaling while the crop stays >= 2x the model: OpenVocabClassifier(reduced_jpeg=True)) vs OpenCV's
    IMREAD_REDUCED_COLOR_2; time and how far the rendered pixels move from the full decode."""
    import cv2
    from PIL import Image

    from edgekd.bench.timer import latency_stats
    from edgekd.data.images import load_rgb
    from edgekd.preprocess import Preprocess

    pp = Preprocess(size=(img_size, img_size))
    side = 2 * img_size  # = OpenVocabClassifier._jpeg_at_least()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-jpeg-") as tmp:
        for h, w in ((480, 640), (720, 1280), (1080, 1920)):
            rng = np.random.default_rng(h)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            scenes = {"noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                      "smooth": np.clip(np.stack([xx * 255 / w, yy * 255 / h, 128 + 60 * np.sin(xx / 40) *
                                                  np.cos(yy / 30)], -1) + rng.normal(0, 6, (h, w, 3)), 0,
                                        255).astype(np.uint8)}
            for name, arr in scenes.items():
                path = Path(tmp) / f"{name}-{w}x{h}.jpg"
                Image.fromarray(arr).save(path, quality=90)
                ways = {"full": lambda p=path: pp.render(load_rgb(p)),
                        "reduced (runtime)": lambda p=path: pp.render(load_rgb(p, at_least=(side, side))),
                        "opencv reduced 2": lambda p=path: pp.render(
                            cv2.imread(str(p), cv2.IMREAD_REDUCED_COLOR_2), color="bgr")}
                ref = ways["full"]()
                for way, fn in ways.items():
                    times = []
                    for i in range(repeats + 5):
                        t0 = time.perf_counter()
                        out = fn()
                        if i >= 5:
                            times.append(time.perf_counter() - t0)
                    diff = np.abs(out.astype(int) - ref.astype(int))
                    rows.append({"size": f"{w}x{h}", "scene": name, "way": way, "ms": latency_stats(times),
                                 "mean_abs_diff": float(diff.mean()), "max_abs_diff": int(diff.max())})
    full = {(r["size"], r["scene"]): r["ms"]["p50"] for r in rows if r["way"] == "full"}
    for r in rows:
        r["vs_full"] = r["ms"]["p50"] / full[(r["size"], r["scene"])]
    return rows


# --- the parent ------------------------------------------------------------------------------------------------

def build_bundles(arch: str, img_size: int, work: Path, methods: list[str]) -> dict[str, Path]:
    from edgekd.export.pipeline import export_bundle
    from edgekd.preprocess import Preprocess

    bundles = {}
    for method in methods:
        pp = Preprocess(size=(img_size, img_size), resize_method=method)
        run = make_random_run(work / f"run-{method}", arch, img_size, pp)
        bundles[method] = export_bundle(run, "onnx", "fp32", work / f"bundle-{method}", gate=False, overwrite=True)
    return bundles


def build_text_encoders(teacher: str, precisions: list[str], work: Path) -> dict[str, Path]:
    from click.testing import CliRunner

    from edgekd.cli import cli

    out = {}
    for precision in precisions:
        path = work / f"text-{precision}"
        args = ["export-text", "--teacher", teacher, "--random-teacher", "--out", str(path)]
        if precision != "fp32":
            args += ["--precision", precision]
        res = CliRunner().invoke(cli, args)
        if res.exit_code != 0:
            raise SystemExit(f"edgekd {' '.join(args)} failed:\n{res.output}")
        out[precision] = path
    return out


def in_child(fn: str, **kwargs) -> Any:
    """Run measure_*(**kwargs) of this file in a fresh process (runtime + gi only; it must not import torch)."""
    return runtime_child.in_child(__file__, fn, **kwargs)


def environment() -> dict:
    from edgekd._optional import installed_version
    from edgekd.bench.env import collect_environment
    from edgekd.cpu import cpu_facts

    return {"cpu_facts": cpu_facts(), "cores": os.cpu_count(), "gstreamer": _gst().version_string(),
            "onnxruntime": installed_version("onnxruntime"), "openvino": installed_version("openvino"),
            "debian": Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").is_file()
            else None, "full": collect_environment()}


def run_matrix(args, bundles: dict[str, Path]) -> list[dict]:
    rows = []
    for method, bundle in bundles.items():
        for backend in args.backends.split(","):
            for size in args.sizes.split(","):
                for fmt in args.formats.split(","):
                    w, h = (int(v) for v in size.split("x"))
                    row = in_child("measure_matrix", bundle=str(bundle), backend=backend, fmt=fmt, size=(w, h),
                                   frames=args.frames, threads=args.threads)
                    rows.append({"resize": method, **row})
                    print(f"{method} {backend} {size} {fmt}: element p50 {row['element_ms']['p50']:.2f} ms, "
                          f"classify() RGB p50 {row['classify_rgb_ms']['p50']:.2f} ms", flush=True)
    for r in rows:  # each format against RGB of the same bundle, backend and size, in this run
        rgb = next(x for x in rows if x["format"] == "RGB" and all(x[k] == r[k] for k in ("resize", "backend", "size")))
        r["vs_rgb_p50"] = r["element_ms"]["p50"] / rgb["element_ms"]["p50"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenetv4_conv_small")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--sizes", default="640x480,1280x720")
    ap.add_argument("--formats", default="RGB,BGR,NV12,I420")
    ap.add_argument("--backends", default="onnxruntime,openvino")
    ap.add_argument("--resize", default="pillow,cv2-area-linear")
    ap.add_argument("--rss-frames", type=int, default=10000)
    ap.add_argument("--text-encoders", default="none,fp32,int8")
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--teacher", default="ViT-B-32")
    ap.add_argument("--jpeg", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gstreamer/gst_element"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        runtime_child.run_job(globals(), args.child)
        return
    res: dict = {"arch": args.arch, "img_size": args.img_size, "threads": args.threads, "frames": args.frames}
    with tempfile.TemporaryDirectory(prefix="edgekd-gst-bench-") as tmp:
        work = Path(tmp)
        bundles = build_bundles(args.arch, args.img_size, work, args.resize.split(","))
        res["rows"] = run_matrix(args, bundles)
        precisions = [p for p in args.text_encoders.split(",") if p and p != "none"]
        encoders = build_text_encoders(args.teacher, precisions, work) if precisions else {}
        first = str(next(iter(bundles.values())))
        res["teacher"] = args.teacher
        res["memory"] = []
        if args.rss_frames:
            for name in args.text_encoders.split(","):
                te = str(encoders[name]) if name in encoders else None
                res["memory"].append({"precision": name, **in_child("measure_memory", bundle=first, text_encoder=te,
                                                                     frames=args.rss_frames, threads=args.threads)})
                print(f"memory {name}: {res['memory'][-1]['rss_start_mb']:.0f} -> "
                      f"{res['memory'][-1]['rss_end_mb']:.0f} MB", flush=True)
        res["label_changes"] = [
            {"precision": name, **in_child("measure_label_changes", bundle=first, text_encoder=str(path),
                                           changes=args.changes, threads=args.threads)}
            for name, path in encoders.items()] if args.changes else []
        if args.jpeg:
            res["jpeg"] = measure_jpeg(args.img_size)
    res["environment"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, args.out)
    print(args.out.with_suffix(".md").read_text())


# --- report ------------------------------------------------------------------------------------------------------

def write_report(res: dict, out: Path) -> None:
    from edgekd._io import atomic_write_json, atomic_write_text
    from edgekd.cpu import describe

    atomic_write_json(out.with_suffix(".json"), res)
    env = res["environment"]
    lines = [f"# edgekdclassify: {res['arch']} @ {res['img_size']} px fp32, {res['threads']} threads", "",
             f"CPU: {describe(env['cpu_facts'])} ({env['cores']} cores); GStreamer {env['gstreamer']}, onnxruntime "
             f"{env['onnxruntime']}, OpenVINO {env['openvino']}; Debian {env['debian']}. 1000 labels, top-5; "
             f"{res['frames']} frames per run (first {WARM_FRACTION:.0%} warm-up). Written by "
             "`benchmarks/gst_element.py`.", "",
             "element = time GStreamer's streaming thread spends in edgekdclassify per frame (block=true: colour "
             "conversion, render, inference, scoring, message); classify() = OpenVocabClassifier.classify() on an "
             "RGB frame of the same size in the same process; vs RGB = element p50 / the RGB row's element p50 "
             "(same bundle, backend and size, this run).", "",
             "| resize | backend | frame | format | element ms p50 / p90 (min) | vs RGB | classify() RGB ms p50 | "
             "element / classify() | fps | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        e = r["element_ms"]
        lines.append(f"| {r['resize']} | {r['backend']} | {r['size']} | {r['format']} | {e['p50']:.2f} / "
                     f"{e['p90']:.2f} ({e['min']:.2f}) | {r['vs_rgb_p50']:.2f}x | {r['classify_rgb_ms']['p50']:.2f} | "
                     f"{r['vs_classify_p50']:.2f}x | {r['fps']:.0f} | {r['loadavg_1m']:.2f} |")
    if res.get("memory"):
        lines += ["", f"## Memory over {res['memory'][0]['frames']:,} frames (RGB 640x480, block=true)", "",
                  f"Text encoders: `edgekd export-text --teacher {res['teacher']} --random-teacher --precision P`; "
                  "with one, the labels change to new texts every tenth of the run.", "",
                  "| text encoder | RSS after 500 frames | RSS at the end | max | label changes |",
                  "|---|---|---|---|---|"]
        for m in res["memory"]:
            lines.append(f"| {m['precision']} | {m['rss_start_mb']:.0f} MB | {m['rss_end_mb']:.0f} MB | "
                         f"{m['rss_max_mb']:.0f} MB | {m['label_changes']} |")
    if res.get("label_changes"):
        lines += ["", "## Label changes while playing (live 30 fps RGB 640x480, default worker mode)", "",
                  "set_property = the app thread's call; element = the streaming thread's time in the element per "
                  "frame (normal frames vs the frames that swap a new set in); build = the text encoder on the "
                  "element's label thread; request -> frame = set_property until the first frame using the set.", "",
                  "| text encoder | changes applied | set_property ms max | element ms p50 normal / max at swap | "
                  "build ms p50 | request -> frame ms p50 / max | frame interval |", "|---|---|---|---|---|---|---|"]
        for c in res["label_changes"]:
            lines.append(f"| {c['precision']} | {c['applied']} of {c['changes']} | {c['set_property_ms']['max']:.3f} | "
                         f"{c['element_ms_normal']['p50']:.3f} / {c['element_ms_at_swap']['max']:.3f} | "
                         f"{c['build_ms']['p50']:.0f} | {c['request_to_frame_ms']['p50']:.0f} / "
                         f"{c['request_to_frame_ms']['max']:.0f} | {c['frame_interval_ms']:.1f} ms |")
    if res.get("jpeg"):
        lines += ["", f"## JPEG files (q90): decode + render to {res['img_size']} px (Pillow bicubic)", "",
                  "reduced (runtime) = libjpeg's DCT scaling while the crop stays at least twice the model's size "
                  "(OpenVocabClassifier's default for files); pixels = the rendered input against the full decode.",
                  "", "| file | scene | decode | ms p50 | vs full | pixels: mean / max |", "|---|---|---|---|---|---|"]
        for j in res["jpeg"]:
            lines.append(f"| {j['size']} | {j['scene']} | {j['way']} | {j['ms']['p50']:.2f} | {j['vs_full']:.2f}x | "
                         f"{j['mean_abs_diff']:.2f} / {j['max_abs_diff']} |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
