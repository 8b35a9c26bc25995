"""Regions of interest: crops per second with batched region inference (`classify_regions`, one model call for all
the regions of a frame) against one call per region, and the RSS of GStreamer elements sharing one model instance.

    python benchmarks/regions.py [--arch mobilenetv4_conv_small] [--img-size 224] [--threads 2]
                                 [--regions 1 4 16 64] [--backend onnxruntime openvino] [--iters 30]
                                 [--resize-method pillow cv2-area-linear]
                                 [--out benchmarks/results/regions/regions]

A random-weight student (latency does not depend on the weights) is exported fp32 for each backend with a dynamic
batch, once per resize method (Pillow bicubic, the default; OpenCV area + linear). Each backend is measured in a
fresh runtime-only process, on one synthetic 1280x720 BGR frame with N boxes
(fixed seed, 48-360 px a side, anywhere in the frame), interleaved per iteration: `classify_regions(frame, boxes)`
(render every crop, one batched call, top-5 over 1,000 labels) and, for the same boxes, one `classify(crop)` per
box on a view of the frame (what an app without batching does: the same render of each crop, batch 1). The speed-up
is per-region time of one call each / per-region time batched, from p50s, same process and frames.

Memory: a GStreamer pipeline of 1 or 4 `edgekdclassify inference-region=roi-list` elements after `edgekdroi` (4
boxes), the 4 either sharing one `model-instance-id` or each loading its own model; process RSS after 60 frames, each
pipeline in a process of its own. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import runtime_child  # benchmarks/runtime_child.py, beside this script
from random_student import make_random_run

REPO = Path(__file__).resolve().parents[1]
FRAME = (720, 1280)
TARGETS = {"onnxruntime": "onnx", "openvino": "openvino"}


def boxes_for(n: int, seed: int = 0) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed + n)
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(48, 361, 2))
        x0, y0 = int(rng.integers(0, FRAME[1] - w)), int(rng.integers(0, FRAME[0] - h))
        out.append((x0, y0, x0 + w, y0 + h))
    return out


def measure_crops(bundle: str, threads: int, counts: list[int], iters: int, warmup: int) -> dict:
    """In a runtime-only process: p50/min ms per frame, batched and one call per region, for each region count."""
    from edgekd.runtime.classifier import OpenVocabClassifier

    clf = OpenVocabClassifier.load(bundle, threads=threads, allow_ungated=True)
    rng = np.random.default_rng(1)
    frame = np.ascontiguousarray(np.repeat(np.repeat(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8), 8, 0), 8, 1))
    rows = []
    for n in counts:
        boxes = boxes_for(n)
        batched, single = [], []
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            clf.classify_regions(frame, boxes, color="bgr")
            t1 = time.perf_counter()
            for x0, y0, x1, y1 in boxes:
                clf.classify(frame[y0:y1, x0:x1], color="bgr")
            t2 = time.perf_counter()
            if i >= warmup:
                batched.append((t1 - t0) * 1e3)
                single.append((t2 - t1) * 1e3)
        rows.append({"regions": n, "batched_ms": _stats(batched), "one_call_each_ms": _stats(single)})
    return {"backend": clf.backend.name, "rows": rows}


def measure_rss(bundle: str, elements: int, shared: bool, threads: int, frames: int = 60) -> dict:
    """In a runtime + GStreamer process: RSS after `frames` frames through `elements` chained region classifiers."""
    import psutil

    from edgekd.gst import import_gst, register

    Gst = import_gst()[0]
    assert register()
    rss_before = psutil.Process().memory_info().rss / 2**20
    roi = ";".join(",".join(map(str, b)) for b in boxes_for(4))
    chain = " ! ".join(f"edgekdclassify bundle={bundle} inference-region=roi-list block=true threads={threads} "
                       f"allow-ungated=true{' model-instance-id=bench' if shared else ''}" for _ in range(elements))
    pipe = Gst.parse_launch(f"videotestsrc num-buffers={frames} pattern=snow ! video/x-raw,format=BGR,width="
                            f"{FRAME[1]},height={FRAME[0]} ! edgekdroi roi=\"{roi}\" ! {chain} ! fakesink sync=false")
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    rss = psutil.Process().memory_info().rss / 2**20
    pipe.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        raise RuntimeError(f"pipeline failed: {msg.parse_error()[0].message if msg else 'timeout'}")
    return {"elements": elements, "shared": shared, "frames": frames, "rss_mb": rss, "rss_before_gst_mb": rss_before}


def _stats(ts: list[float]) -> dict:
    return {"p50": float(np.percentile(ts, 50)), "min": float(min(ts)), "n": len(ts)}


def in_child(fn: str, **kwargs) -> Any:
    """Run measure_*(**kwargs) of this file in a fresh process (runtime + gi only; it must not import torch)."""
    return runtime_child.in_child(__file__, fn, **kwargs)


def build_bundles(arch: str, img_size: int, backends: list[str], method: str, work: Path) -> dict[str, Path]:
    from edgekd.export.pipeline import export_bundle
    from edgekd.preprocess import Preprocess

    run = make_random_run(work / f"run-{method}", arch, img_size, Preprocess(size=(img_size, img_size),
                                                                               resize_method=method))
    return {b: export_bundle(run, TARGETS[b], "fp32", work / f"bundle-{method}-{b}", gate=False, overwrite=True)
            for b in backends}


def summarise(crops: dict[tuple[str, str], dict]) -> list[dict]:
    rows = []
    for (method, backend), res in crops.items():
        for r in res["rows"]:
            n, b, s = r["regions"], r["batched_ms"]["p50"], r["one_call_each_ms"]["p50"]
            rows.append({"resize_method": method, "backend": backend, "regions": n, "batched_ms": b,
                         "one_call_each_ms": s, "crops_per_s_batched": 1e3 * n / b,
                         "crops_per_s_one_each": 1e3 * n / s, "speedup": s / b})
    return rows


def environment() -> dict:
    from edgekd._optional import installed_version
    from edgekd.cpu import cpu_facts

    return {"cpu_facts": cpu_facts(), "cores": os.cpu_count(), "onnxruntime": installed_version("onnxruntime"),
            "openvino": installed_version("openvino"),
            "debian": Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").is_file()
            else None}


def write_report(res: dict, out: Path) -> None:
    from edgekd.cpu import describe

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out.with_suffix(".json"))
    a = res["args"]
    lines = [f"# Region inference: {a['arch']} @ {a['img_size']} px fp32, {a['threads']} threads, 1280x720 BGR frame",
             "", f"CPU: {describe(res['env']['cpu_facts'])} ({res['env']['cores']} cores); "
             f"onnxruntime {res['env']['onnxruntime']}, OpenVINO {res['env']['openvino']}; {a['iters']} interleaved "
             "iterations per count, p50s. Speed-up = per-region time of one call per region / batched, same run.", "",
             "| resize | backend | regions | batched ms / frame | one call each ms / frame | crops/s batched | "
             "crops/s one each | speed-up |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['resize_method']} | {r['backend']} | {r['regions']} | {r['batched_ms']:.2f} | "
              f"{r['one_call_each_ms']:.2f} | {r['crops_per_s_batched']:.0f} | {r['crops_per_s_one_each']:.0f} | "
              f"{r['speedup']:.2f}x |"
              for r in res["crops"]]
    lines += ["", f"## RSS of region-classifying GStreamer elements ({a['resize_method'][0]} resize, "
              "onnxruntime, 60 frames, 4 regions each; one process per row)", "",
              "| elements | model | RSS MB |", "|---|---|---|"]
    lines += [f"| {m['elements']} | {'one shared (model-instance-id)' if m['shared'] else 'one each'} | "
              f"{m['rss_mb']:.0f} |" for m in res["rss"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return runtime_child.run_job(globals(), sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenetv4_conv_small")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--regions", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--backend", nargs="+", default=["onnxruntime", "openvino"], choices=sorted(TARGETS))
    ap.add_argument("--resize-method", nargs="+", default=["pillow", "cv2-area-linear"])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/regions/regions")
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="edgekd-regions-") as work:
        crops, ort = {}, None
        for method in args.resize_method:
            bundles = build_bundles(args.arch, args.img_size, args.backend, method, Path(work))
            ort = ort or str(bundles.get("onnxruntime") or next(iter(bundles.values())))
            for backend, bundle in bundles.items():
                crops[method, backend] = in_child("measure_crops", bundle=str(bundle), threads=args.threads,
                                                  counts=args.regions, iters=args.iters, warmup=args.warmup)
                print(method, backend, json.dumps(crops[method, backend]["rows"]), flush=True)
        rss = [in_child("measure_rss", bundle=ort, elements=n, shared=shared, threads=args.threads)
               for n, shared in ((1, False), (4, True), (4, False))]
    res = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "env": environment(),
           "crops": summarise(crops), "rss": rss, "wall_s": time.time() - t0}
    write_report(res, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
