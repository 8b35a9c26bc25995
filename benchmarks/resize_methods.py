"""Per-frame crop-resize candidates for the camera path: one BGR camera frame -> the student's RGB uint8 input.

    python benchmarks/resize_methods.py [--sizes 224 128] [--iters 200] [--out benchmarks/results/resize_methods]

Every candidate starts from a decoded uint8 BGR frame (640x480, 1280x720, 1920x1080: what a camera app holds) and
ends with the eval view (the centre crop of the model's aspect ratio) as RGB uint8 [S, S, 3], so conversions count.
Rows marked `edgekd` are the resize methods a student can be trained with (edgekd.resize, through
Preprocess.render: the runtime's own path); the others are measured for comparison only. Candidates run round-robin
(one call of each per round, same CPU conditions), after a warm-up; min and median over the rounds. Also reported:
the mean absolute difference (grey levels) from Pillow bicubic on a textured frame, a rough measure of how far a
method's pixels are from what the teacher sees. Writes OUT.json and OUT.md with the CPU and library versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import PIL
from PIL import Image

from edgekd.bench.env import load_average, usable_cores
from edgekd.cpu import cpu_facts
from edgekd.cpu import describe as describe_cpu
from edgekd.preprocess import Preprocess
from edgekd.resize import box_decimate, linear_fixed

FRAMES = {"640x480": (480, 640), "1280x720": (720, 1280), "1920x1080": (1080, 1920)}
Candidate = Callable[[np.ndarray, int], np.ndarray]  # BGR frame [H, W, 3], size -> RGB [size, size, 3]


def _crop(frame: np.ndarray) -> np.ndarray:
    """The square centre crop (the eval view of a square model input), whole pixels."""
    h, w = frame.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return frame[y0:y0 + s, x0:x0 + s]


def _pil(frame: np.ndarray) -> Image.Image:
    return Image.frombuffer("RGB", frame.shape[1::-1], np.ascontiguousarray(frame), "raw", "BGR", 0, 1)


def _pillow(filt: int, reduce: bool = False) -> Candidate:
    def run(frame: np.ndarray, size: int) -> np.ndarray:
        img = _pil(_crop(frame))
        k = img.width // size
        if reduce and k > 1:
            img = img.reduce(k)
        return np.asarray(img.resize((size, size), filt))
    return run


def _cv2(interp: int) -> Candidate:
    return lambda frame, size: cv2.resize(_crop(frame), (size, size), interpolation=interp)[..., ::-1].copy()


def _cv2_pyr_linear(frame: np.ndarray, size: int) -> np.ndarray:
    a = _crop(frame)
    while a.shape[0] // 2 >= size:
        a = cv2.pyrDown(a)
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)[..., ::-1].copy()


def _numpy_box_cv2_linear(frame: np.ndarray, size: int) -> np.ndarray:
    a = _crop(frame)
    k = max(1, a.shape[0] // size)
    if k > 1:
        a = box_decimate(a[: a.shape[0] // k * k, : a.shape[1] // k * k], k, k)
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)[..., ::-1].copy()


def _numpy_box2_linear(frame: np.ndarray, size: int) -> np.ndarray:
    a = _crop(frame)
    a = box_decimate(a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2], 2, 2)
    return linear_fixed(a, (size, size))[..., ::-1].copy()


def _edgekd(method: str, interpolation: str = "bicubic") -> Candidate:
    pps: dict[int, Preprocess] = {}

    def run(frame: np.ndarray, size: int) -> np.ndarray:
        pp = pps.setdefault(size, Preprocess(size=size, interpolation=interpolation, resize_method=method))
        return pp.render(frame, color="bgr")
    return run


# name -> (candidate, trainable in edgekd, note)
CANDIDATES: dict[str, tuple[Candidate, bool, str]] = {
    "pillow bicubic": (_edgekd("pillow", "bicubic"), True, "today's default; the CLIP teachers' own filter"),
    "pillow bilinear": (_edgekd("pillow", "bilinear"), True, "antialiased"),
    "pillow box": (_edgekd("pillow", "box"), True, "antialiased"),
    "pillow reduce(k) + bicubic": (_pillow(Image.Resampling.BICUBIC, reduce=True), False, ""),
    "pillow reduce(k) + bilinear": (_pillow(Image.Resampling.BILINEAR, reduce=True), False, ""),
    "cv2 INTER_AREA": (_cv2(cv2.INTER_AREA), False, "non-integer factor: OpenCV's slow general path"),
    "cv2 INTER_LINEAR": (_cv2(cv2.INTER_LINEAR), False, "no antialiasing (aliases beyond 2x); reference only"),
    "cv2 pyrDown + INTER_LINEAR": (_cv2_pyr_linear, False, "Gaussian 5x5 per halving"),
    "cv2-area-linear": (_edgekd("cv2-area-linear"), True, "INTER_AREA 2x halvings, then INTER_LINEAR"),
    "numpy box(k) + cv2 INTER_LINEAR": (_numpy_box_cv2_linear, False, ""),
    "numpy box(2) + numpy linear": (_numpy_box2_linear, False, "2x2 only (aliases beyond 4x)"),
    "numpy-area-linear": (_edgekd("numpy-area-linear"), True,
                          "numpy-only fallback of cv2-area-linear (same pixels when shrinking)"),
}


def textured_frame(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A BGR frame with edges and fine texture at several scales (smooth noise + a zone plate), so that resizing
    differences show; uniform noise would make every filter look equally wrong."""
    rng = np.random.default_rng(seed)
    h, w = shape
    coarse = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_CUBIC).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    zone = 127.5 * (1 + np.cos(((xx - w / 2) ** 2 + (yy - h / 2) ** 2) * (np.pi / (2.5 * max(h, w)))))
    return np.clip(0.6 * coarse + 0.4 * zone[..., None], 0, 255).astype(np.uint8)


def run(sizes: list[int], iters: int, warmup: int) -> list[dict]:
    rows = []
    for fname, shape in FRAMES.items():
        frame = textured_frame(shape)
        for size in sizes:
            ref = CANDIDATES["pillow bicubic"][0](frame, size).astype(np.int16)
            times: dict[str, list[float]] = {name: [] for name in CANDIDATES}
            for i in range(warmup + iters):
                for name, (fn, _, _) in CANDIDATES.items():
                    t0 = time.perf_counter()
                    fn(frame, size)
                    dt = time.perf_counter() - t0
                    if i >= warmup:
                        times[name].append(dt)
            base = float(np.median(times["pillow bicubic"]))
            for name, (fn, trainable, note) in CANDIDATES.items():
                out = fn(frame, size)
                assert out.shape == (size, size, 3) and out.dtype == np.uint8, (name, out.shape)
                t = np.asarray(times[name]) * 1000
                rows.append({"frame": fname, "size": size, "method": name, "edgekd": trainable, "note": note,
                             "ms_min": round(float(t.min()), 4), "ms_p50": round(float(np.median(t)), 4),
                             "ms_p90": round(float(np.percentile(t, 90)), 4), "n": int(t.size),
                             "vs_bicubic_p50": round(float(np.median(t)) / 1000 / base, 3),
                             "mad_vs_bicubic": round(float(np.abs(out.astype(np.int16) - ref).mean()), 3)})
    return rows


def write_report(res: dict, out: Path) -> None:
    from edgekd._io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), res)
    env = res["environment"]
    lines = ["# Crop-resize of one camera frame to the student's input", "",
             f"CPU: {env['cpu']} ({env['cores']} usable cores, load average {env['loadavg_before']} before, "
             f"{env['loadavg_after']} after; shared machine), Python {env['python']}, numpy {env['numpy']}, Pillow "
             f"{env['pillow']}, OpenCV {env['opencv']} ({env['opencv_threads']} threads). {res['iters']} round-robin "
             "rounds after a warm-up; every candidate starts from a uint8 BGR frame and returns the square centre "
             "crop as RGB uint8.", "",
             "`edgekd` = a resize method a student can be trained with (`edgekd distill --resize-method`, timed "
             "through `Preprocess.render`, the runtime's path); the others are measured for comparison. "
             "x bicubic = median / median of Pillow bicubic in the same rounds. MAD = mean |difference| from "
             "Pillow bicubic in grey levels, on a textured frame.", ""]
    for fname in FRAMES:
        for size in res["sizes"]:
            lines += [f"## {fname} -> {size}x{size}", "", "| method | edgekd | ms p50 | ms min | ms p90 | x bicubic | "
                      "MAD | note |", "|---|---|---|---|---|---|---|---|"]
            for r in (r for r in res["rows"] if r["frame"] == fname and r["size"] == size):
                lines.append(f"| {r['method']} | {'yes' if r['edgekd'] else ''} | {r['ms_p50']:.3f} | "
                             f"{r['ms_min']:.3f} | {r['ms_p90']:.3f} | {r['vs_bicubic_p50']:.2f} | "
                             f"{r['mad_vs_bicubic']:.2f} | {r['note']} |")
            lines.append("")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/resize_methods"))
    args = ap.parse_args()
    load0 = load_average()
    rows = run(args.sizes, args.iters, args.warmup)
    env = {"cpu": describe_cpu(cpu_facts()), "cpu_facts": cpu_facts(), "cores": usable_cores(),
           "loadavg_before": load0, "loadavg_after": load_average(), "python": platform.python_version(),
           "numpy": np.__version__, "pillow": PIL.__version__, "opencv": cv2.__version__,
           "opencv_threads": cv2.getNumThreads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    res = {"sizes": args.sizes, "iters": args.iters, "environment": env, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
