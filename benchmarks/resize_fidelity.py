"""Resize fidelity: the same student distilled with each resize method, compared on held-out images.

ViT-B-32 teacher (random weights, seeded: no model hub here) cached once on CIFAR-10 training images (its own Pillow
bicubic at 224, as always); then, per resize method and seed, `edgekd distill --resize-method M` trains the same
student (mobilenetv4_conv_small at 128 by default) from that cache, and `edgekd eval` measures retrieval@1/@5 and
centred cosine (cosine after subtracting the teacher's mean embedding) against the teacher on held-out test images,
each student rendering them with its own method. The fast method's run is then exported (ONNX INT8) with the parity
gate on the original held-out frames, rendered by the runtime's path (`Preprocess.render` with the bundle's method).

    ../shared/assets/unpack-cifar10.sh /tmp/edgekd-data
    python benchmarks/resize_fidelity.py --data /tmp/edgekd-data/cifar10-images [--methods pillow cv2-area-linear]

CIFAR-10 images are 32x32, so at 128 px every method enlarges (bicubic vs linear interpolation, no decimation);
`--upscale 480` first enlarges the images to 480x480 (Pillow bicubic, saved as PNG) so that teacher and student
shrink them, which exercises the decimation step on smooth, camera-sized frames.
Reuses the stages of benchmarks/fidelity_study.py (subsets, cache, eval). Resumable: each finished run/eval is kept
in --work. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _fidelity_study():
    spec = importlib.util.spec_from_file_location("fidelity_study", REPO / "benchmarks" / "fidelity_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fs = _fidelity_study()


def upscaled(src: Path, size: int, out: Path) -> Path:
    """An ImageFolder copy of `src` with every image enlarged to size x size (Pillow bicubic, PNG)."""
    if (out / ".done").is_file():
        return out
    from PIL import Image

    for f in sorted(src.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            dst = out / f.relative_to(src).with_suffix(".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(f) as im:
                im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(dst)
    (out / ".done").touch()
    return out


def train_and_eval(args: argparse.Namespace, method: str, seed: int, cache: Path, held: Path, held_cache: Path
                   ) -> dict[str, Any]:
    work = Path(args.work)
    run = work / "runs" / f"{method}-s{seed}"
    t0 = time.perf_counter()
    if not (run / "DONE").is_file():
        fs.edgekd("distill", "--cache", str(cache), "--student", args.student, "--out", str(run), "--img-size",
                  str(args.img_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                  "--workers", str(args.workers), "--device", "cpu", "--seed", str(seed), "--no-progress",
                  "--resize-method", method, *(["--resume"] if run.exists() else []), log=work / "logs.txt")
        (run / "DONE").write_text(f"{time.perf_counter() - t0:.1f}")
    fid = fs.evaluate(args, run, held, held_cache, work / "evals" / f"{method}-s{seed}.json", work)
    return {"method": method, "seed": seed, "train_seconds": float((run / "DONE").read_text()), **fid, "run": str(run)}


def export_gate(args: argparse.Namespace, run: Path, held: Path, calib: Path) -> dict[str, Any]:
    """ONNX INT8 export of `run` with the parity gate on the original held-out images -> the gate's verdict."""
    out = run / "export-onnx-int8"
    if not (out / "edgekd.json").is_file():
        import subprocess

        cmd = [sys.executable, "-m", "edgekd", "export", str(run), "--target", "onnx", "--precision", "int8",
               "--calib", str(calib), "--val", str(held), "--out", str(out)]
        with open(Path(args.work) / "logs.txt", "a") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc not in (0, 3):  # 3 = the gate failed (kept and reported)
            raise RuntimeError(f"export of {run} failed (exit {rc}); see {args.work}/logs.txt")
    meta = json.loads((out / "edgekd.json").read_text())
    return {"bundle": str(out), "resize_method": meta["preprocess"].get("resize_method", "pillow"),
            "gate": meta.get("parity", meta.get("gate"))}


def write_report(res: dict[str, Any], out: Path) -> None:
    from edgekd._io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), res)
    s = res["setup"]
    lines = ["# Resize fidelity: one student, trained and evaluated with each resize method", "",
             f"CPU: {res['host']}. Teacher {s['teacher']} (random weights, seeded), cached on {s['images']} CIFAR-10 "
             f"training images x {s['views']} views ({s['frames']}); student {s['student']} at {s['img_size']} px, "
             f"{s['epochs']} epochs, batch {s['batch_size']}; held out: {s['held_out']} CIFAR-10 test images. "
             "Each student renders its training views and the held-out images with its own method "
             "(edgekd.preprocess.render_view); the teacher always sees Pillow bicubic at 224.", "",
             "| method | seed | retrieval@1 | retrieval@5 | centred cosine | cosine | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['method']} | {r['seed']} | {100 * r['retrieval_at_1']:.1f}% | "
                     f"{100 * r['retrieval_at_5']:.1f}% | {r['centred_cosine']:.4f} | {r['mean_cosine']:.4f} | "
                     f"{r['train_seconds']:.0f} |")
    lines += ["", "| method | runs | mean retrieval@1 | vs pillow (points) | mean centred cosine | vs pillow |",
              "|---|---|---|---|---|---|"]
    for m, a in res["summary"].items():
        lines.append(f"| {m} | {a['runs']} | {100 * a['retrieval_at_1']:.2f}% | {a['delta_r1_points']:+.2f} | "
                     f"{a['centred_cosine']:.4f} | {a['delta_centred_cosine']:+.4f} |")
    if res.get("gate"):
        g = res["gate"]
        gate, m = g["gate"] or {}, (g["gate"] or {}).get("metrics", {})
        lines += ["", f"Export of the {g['resize_method']} seed-0 run (ONNX INT8, parity gate on the original "
                  "held-out images, rendered by the runtime's resize): "
                  f"{'passed' if gate.get('passed') else 'FAILED'} on {m.get('images')} images, cosine mean "
                  f"{m.get('cosine_mean', float('nan')):.5f} / p1 {m.get('cosine_p01', float('nan')):.5f} / worst "
                  f"{m.get('cosine_min', float('nan')):.5f}, top-1 agreement "
                  f"{100 * m.get('top1_agreement', float('nan')):.1f}% ({gate.get('criteria')})."]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        out[m] = {"runs": len(rs), "retrieval_at_1": float(np.mean([r["retrieval_at_1"] for r in rs])),
                  "centred_cosine": float(np.mean([r["centred_cosine"] for r in rs]))}
    base = out.get("pillow")
    for a in out.values():
        a["delta_r1_points"] = 100 * (a["retrieval_at_1"] - base["retrieval_at_1"]) if base else float("nan")
        a["delta_centred_cosine"] = a["centred_cosine"] - base["centred_cosine"] if base else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="cifar10-images folder (train/ and test/)")
    ap.add_argument("--work", default=os.environ.get("EDGEKD_WORK", "/tmp/edgekd-resize-fidelity"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "resize_fidelity")
    ap.add_argument("--methods", nargs="+", default=["pillow", "cv2-area-linear"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--upscale", type=int, default=0, help="enlarge every image to this square size first")
    ap.add_argument("--student", default="mobilenetv4_conv_small")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--teacher", default="ViT-B-32")
    ap.add_argument("--gate", action="store_true", help="export the last method's seed-0 run with the parity gate")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--report", action="store_true", help="only rewrite OUT.md from OUT.json")
    args = ap.parse_args(argv)
    if args.report:
        write_report(json.loads(args.out.with_suffix(".json").read_text()), args.out)
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    train = fs.balanced_subset(data / "train", args.images, work / "data" / f"train-{args.images}")
    held = fs.balanced_subset(data / "test", args.held_out, work / "data" / f"test-{args.held_out}")
    tag = f"-up{args.upscale}" if args.upscale else ""
    if args.upscale:
        train = upscaled(train, args.upscale, work / "data" / f"train-{args.images}{tag}")
        held = upscaled(held, args.upscale, work / "data" / f"test-{args.held_out}{tag}")
    cache = work / "caches" / f"n{args.images}-k{args.views}{tag}"
    held_cache = work / "caches" / f"held-out-{args.held_out}{tag}"
    cache_s = fs.build_cache(args, train, args.views, cache, work)
    held_s = fs.build_cache(args, held, 1, held_cache, work)
    rows = []
    for seed in args.seeds:
        for m in args.methods:
            print(f"{m} seed {seed}", file=sys.stderr, flush=True)
            rows.append(train_and_eval(args, m, seed, cache, held, held_cache))
    res = {"host": fs.host_cpu(), "rows": rows, "summary": summarise(rows),
           "setup": {"teacher": args.teacher, "images": args.images, "views": args.views, "held_out": args.held_out,
                     "frames": f"{args.upscale}x{args.upscale} (CIFAR-10 enlarged)" if args.upscale else "32x32",
                     "student": args.student, "img_size": args.img_size, "epochs": args.epochs,
                     "batch_size": args.batch_size, "cache_seconds": cache_s, "held_cache_seconds": held_s}}
    if args.gate:
        fast = next(r for r in rows if r["method"] == args.methods[-1] and r["seed"] == args.seeds[0])
        res["gate"] = export_gate(args, Path(fast["run"]), held, train)
    out = args.out.with_name(args.out.name + tag)
    write_report(res, out)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
