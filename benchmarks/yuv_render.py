"""The model's input from a camera frame: packed RGB vs NV12 / I420 rendered in the planes vs the whole-frame way.

    python benchmarks/yuv_render.py [--frames 640x480,1280x720] [--sizes 128,224]
        [--methods pillow,cv2-area-linear] [--iters 450] [--cold-iters 150] [--blocks 3]
        [--out benchmarks/results/yuv_render]

Per frame size, model size and resize method, one picture as packed RGB, NV12 and I420 frames (a pool of 4 buffers
of each, cycled as a GStreamer buffer pool is), each rendered to the eval view (centre crop) as RGB uint8 [S, S, 3]:

* rgb: `edgekd.gst.frames.render_model_input` of the packed frame (= `Preprocess.render` of the frame view);
* nv12, i420: `render_model_input` on the planar buffer (cropped and resized in the planes, converted at the
  model's size);
* nv12 whole: the previous way, `Preprocess.render(model_frame(nv12)[0])` (the whole frame converted to RGB first).

rgb, nv12 and i420 are timed in rounds of one call each, in a new random order every round (a fixed order favours or
penalises whichever call follows another), after a warm-up: `warm` with the frames in cache as a loop leaves them,
`cold` with the caches flushed (32 MB written) before every call, as a frame fresh from a camera or decoder is. nv12
whole is timed alone (warm): 5-10x heavier, it would evict the others' caches. x rgb = p50 / p50 of rgb in the same
rounds, taken in blocks on buffers of their own and reported as the median (range) over the blocks: on a small
shared machine a ratio moves by ~0.1-0.3 with the buffers' addresses and the neighbours' load. MAD / max = mean and
max |difference| from the whole-frame way, in grey levels. The picture is smooth colour noise plus a zone plate,
BT.601 limited range (OpenCV's RGB -> I420), planes without row padding (GStreamer's strides at these widths).
Writes OUT.json and OUT.md with the CPU and library versions.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import PIL

from edgekd.bench.env import load_average, usable_cores
from edgekd.cpu import cpu_facts
from edgekd.cpu import describe as describe_cpu
from edgekd.gst.frames import FrameLayout, model_frame, render_model_input
from edgekd.preprocess import Preprocess

WAYS = ("rgb", "nv12", "i420")
TARGET = 1.3  # planar renders at most this many times the packed RGB render
FLUSH_BYTES = 32 << 20  # more than this CPU's L2 and its share of L3
POOL = 4  # frames in flight, as in a GStreamer buffer pool: each call renders the next one


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 [h, w, 3] RGB, h and w even: smooth colour noise and a zone plate (edges and texture at all scales)."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_CUBIC).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    zone = 127.5 * (1 + np.cos(((xx - w / 2) ** 2 + (yy - h / 2) ** 2) * (np.pi / (2.5 * max(h, w)))))
    return np.clip(0.6 * coarse + 0.4 * zone[..., None], 0, 255).astype(np.uint8)


def buffers(rgb: np.ndarray) -> dict[str, tuple[np.ndarray, FrameLayout]]:
    """One picture as flat RGB, I420 and NV12 buffers with their layouts (no row padding)."""
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).ravel()
    n, c = h * w, h * w // 4
    nv12 = np.concatenate([i420[:n], np.stack([i420[n: n + c], i420[n + c:]], -1).ravel()])
    return {"rgb": (np.ascontiguousarray(rgb).ravel(), FrameLayout("RGB", w, h, (3 * w,), (0,))),
            "i420": (i420, FrameLayout("I420", w, h, (w, w // 2, w // 2), (0, n, n + c))),
            "nv12": (nv12, FrameLayout("NV12", w, h, (w, w), (0, n)))}


def ways(rgb: np.ndarray, pp: Preprocess, pool: int = POOL) -> dict[str, Callable[[], np.ndarray]]:
    """way name -> a call rendering the model's input from the next frame of a pool of `pool` buffers of that way
    (WAYS, then 'nv12 whole')."""
    pools = [buffers(rgb) for _ in range(pool)]
    turn = {name: itertools.cycle(range(pool)) for name in (*WAYS, "nv12 whole")}
    calls = {name: (lambda name=name: render_model_input(*pools[next(turn[name])][name], pp)) for name in WAYS}
    calls["nv12 whole"] = lambda: pp.render(model_frame(*pools[next(turn["nv12 whole"])]["nv12"])[0])
    return calls


def time_rounds(calls: dict[str, Callable[[], np.ndarray]], iters: int, warmup: int, cold: bool = False,
                seed: int = 0) -> dict[str, np.ndarray]:
    """name -> seconds per call [iters]: one call of each per round, in a new random order every round; `cold`
    flushes the caches before every call (not timed)."""
    rng = np.random.default_rng(seed)
    flush = np.zeros(FLUSH_BYTES if cold else 1, np.uint8)
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + iters):
        for name in rng.permutation(names):
            if cold:
                flush += 1
            t0 = time.perf_counter()
            calls[name]()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
    return {name: np.asarray(t) for name, t in times.items()}


def stats(blocks: list[dict[str, np.ndarray]], name: str) -> dict[str, float]:
    """Seconds per call of each way, per block of rounds -> `name`'s ms p50 / p90 / min over all blocks, and its
    p50 / rgb's p50 in each block: the median of those ratios and their range."""
    ms = np.concatenate([b[name] for b in blocks]) * 1e3
    ratios = [float(np.median(b[name]) / np.median(b["rgb"])) for b in blocks]
    return {"n": int(ms.size), "ms_p50": round(float(np.median(ms)), 4),
            "ms_p90": round(float(np.percentile(ms, 90)), 4), "ms_min": round(float(ms.min()), 4),
            "x_rgb_p50": round(float(np.median(ratios)), 3), "x_rgb_range": [round(min(ratios), 3),
                                                                              round(max(ratios), 3)]}


def measure(frame: str, size: int, method: str, iters: int, cold_iters: int, warmup: int,
            blocks: int = 3) -> list[dict]:
    """Rows (one per way) for one frame size, model size and resize method: `blocks` blocks of rounds, each on
    frame buffers of its own (timings move with buffer addresses), iters / blocks warm and cold_iters / blocks cold
    rounds each."""
    w, h = (int(v) for v in frame.split("x"))
    pp = Preprocess(size=(size, size), resize_method=method)
    rgb = picture(h, w)
    warm, cold, whole = [], [], []
    for block in range(blocks):
        calls = ways(rgb, pp)
        if block == 0:
            outs = {name: fn() for name, fn in calls.items()}
        whole.append(time_rounds({"nv12 whole": calls.pop("nv12 whole")}, max(iters // 4 // blocks, 1), warmup))
        warm.append(time_rounds(calls, max(iters // blocks, 1), warmup, seed=block))
        cold.append(time_rounds(calls, max(cold_iters // blocks, 1), warmup // 4, cold=True, seed=block))
    for w_block, whole_block in zip(warm, whole):
        w_block.update(whole_block)
    ref = outs["nv12 whole"].astype(np.int16)
    rows = []
    for name, out in outs.items():
        assert out.shape == (size, size, 3) and out.dtype == np.uint8, (name, out.shape, out.dtype)
        diff = np.abs(out.astype(np.int16) - ref) if name in ("nv12", "i420") else None
        rows.append({"frame": frame, "size": size, "method": method, "way": name, "warm": stats(warm, name),
                     "cold": stats(cold, name) if name in cold[0] else None,
                     "mad_vs_whole": None if diff is None else round(float(diff.mean()), 3),
                     "max_vs_whole": None if diff is None else int(diff.max())})
    return rows


def environment(load0: list[float] | str) -> dict:
    facts = cpu_facts()
    return {"cpu": describe_cpu(facts), "cpu_facts": facts, "cores": usable_cores(), "loadavg_before": load0,
            "loadavg_after": load_average(), "python": platform.python_version(), "numpy": np.__version__,
            "pillow": PIL.__version__, "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads()}


def _cell(s: dict | None, key: str, fmt: str) -> str:
    return "" if s is None else format(s[key], fmt)


def _ratio(s: dict | None) -> str:
    """'1.12 (1.05-1.20)': the median of the blocks' ratios and their range."""
    return "" if s is None else f"{s['x_rgb_p50']:.2f} ({s['x_rgb_range'][0]:.2f}-{s['x_rgb_range'][1]:.2f})"


def write_report(res: dict, out: Path) -> None:
    from edgekd._io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), res)
    env = res["environment"]
    lines = ["# The model's input from NV12 / I420 frames vs packed RGB", "",
             f"CPU: {env['cpu']} ({env['cores']} usable cores, load average {env['loadavg_before']} before, "
             f"{env['loadavg_after']} after; shared machine), Python {env['python']}, numpy {env['numpy']}, Pillow "
             f"{env['pillow']}, OpenCV {env['opencv']} ({env['opencv_threads']} threads). One run: {res['iters']} "
             f"warm and {res['cold_iters']} cold rounds in {res['blocks']} blocks (each on frame buffers of its "
             "own) after a warm-up, one call of each way per round in random order; each way ends with the eval view "
             "as RGB uint8 [S, S, 3].", "",
             "rgb = `render_model_input` of a packed RGB frame (`Preprocess.render`); nv12 / i420 = "
             "`render_model_input` on the planar buffer (resized in the planes, converted at the model's size); "
             "nv12 whole = `Preprocess.render(model_frame(nv12)[0])`, the whole frame converted first (timed alone, "
             "warm). warm: frames in cache; cold: caches flushed before every call. x rgb = p50 / p50 of rgb in the "
             f"same block, median (range) over the blocks (target: nv12 and i420 <= {TARGET}x). MAD / max = "
             "|difference| from nv12 whole, in grey levels.", "",
             "| frame | size | method | way | warm ms p50 / p90 (min) | warm x rgb (range) | cold ms p50 | "
             "cold x rgb (range) | MAD | max |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        w, c = r["warm"], r["cold"]
        mad = "" if r["mad_vs_whole"] is None else f"{r['mad_vs_whole']:.2f}"
        mx = "" if r["max_vs_whole"] is None else str(r["max_vs_whole"])
        lines.append(f"| {r['frame']} | {r['size']} | {r['method']} | {r['way']} | {w['ms_p50']:.3f} / "
                     f"{w['ms_p90']:.3f} ({w['ms_min']:.3f}) | {_ratio(w)} | {_cell(c, 'ms_p50', '.3f')} | "
                     f"{_ratio(c)} | {mad} | {mx} |")
    planar = [(r, k) for r in res["rows"] if r["way"] in ("nv12", "i420") for k in ("warm", "cold")]
    worst, kind = max(planar, key=lambda p: p[0][p[1]]["x_rgb_p50"])
    x = worst[kind]["x_rgb_p50"]
    lines += ["", f"Slowest planar render against rgb: {worst['way']} {worst['frame']} -> {worst['size']} "
              f"{worst['method']} ({kind}) at {x:.2f}x ({'within' if x <= TARGET else 'over'} the {TARGET}x target).",
              ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="640x480,1280x720")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--methods", default="pillow,cv2-area-linear")
    ap.add_argument("--iters", type=int, default=450)
    ap.add_argument("--cold-iters", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/yuv_render"))
    args = ap.parse_args()
    load0 = load_average()
    rows = [r for method in args.methods.split(",") for frame in args.frames.split(",")
            for size in (int(s) for s in args.sizes.split(","))
            for r in measure(frame, size, method, args.iters, args.cold_iters, args.warmup, args.blocks)]
    res = {"iters": args.iters, "cold_iters": args.cold_iters, "warmup": args.warmup, "blocks": args.blocks,
           "target_x_rgb": TARGET,
           "flush_bytes": FLUSH_BYTES, "environment": environment(load0), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
