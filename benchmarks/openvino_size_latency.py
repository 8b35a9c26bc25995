"""OpenVINO fp32 / fp16 / INT8 (NNCF) size and batch-1 latency next to torch eager, random-weight students.

    .venv/bin/python benchmarks/openvino_size_latency.py --threads 2 --out benchmarks/results/openvino_size_latency

Each student is exported to ONNX (edgekd.export.onnx.export_onnx), converted with the openvino target, and timed
with edgekd.runtime.backends (OpenVINO pinned to f32 inference precision, PERFORMANCE_HINT=LATENCY). INT8
calibration uses real CIFAR-10 test images when /tmp/edgekd-data is unpacked, otherwise smooth synthetic images.
Latency: warm-up, then perf_counter per call; p50/p90 over --iters calls.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.cpu import cpu_facts
from edgekd.cpu import describe as describe_cpu
from edgekd.export.onnx import export_onnx
from edgekd.export.targets import ExportRequest, get_target
from edgekd.runtime.backends import create_backend
from edgekd.students.model import create_student, reparameterize

CIFAR = Path("/tmp/edgekd-data/cifar10-images/test")


def calibration_inputs(student, n: int, seed: int = 0) -> np.ndarray:
    """[n,3,H,W] normalised inputs: CIFAR-10 test JPEGs through the student's preprocessing, or synthetic."""
    pp = student.cfg.get_preprocess()
    files = sorted(CIFAR.glob("*/*.jpg"))
    if files:
        from PIL import Image

        rng = np.random.default_rng(seed)
        pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
        return np.stack([pp(Image.open(files[i]).convert("RGB")) for i in pick]).astype(np.float32)
    rng = np.random.default_rng(seed)
    h, w = pp.size
    x = rng.normal(0, 1, (n, 3, h // 16, w // 16)).astype(np.float32)
    return np.repeat(np.repeat(x, 16, axis=2), 16, axis=3)


def time_call(fn, x, warmup: int, iters: int) -> dict[str, float]:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1e3)
    t = np.array(times)
    return {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)), "mean": float(t.mean()),
            "n": len(t)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv4_conv_small", "efficientvit_b0"])
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/openvino_size_latency"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for arch in args.models:
        torch.manual_seed(0)
        student = reparameterize(create_student(arch, args.embed_dim, args.img_size)).eval()
        calib = calibration_inputs(student, args.calib + 16)
        calib, val = calib[:args.calib], calib[args.calib:]
        x = val[:1].copy()
        with torch.no_grad():
            xt = torch.from_numpy(x)
            rows.append({"model": arch, "backend": "torch-eager", "precision": "fp32", "size_mb": sum(
                p.numel() * 4 for p in student.parameters()) / 1e6, **time_call(student, xt, args.warmup, args.iters)})
            ref = student(torch.from_numpy(val)).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(student, Path(tmp) / "model.onnx", (1, 3, args.img_size, args.img_size))
            for precision in ("fp32", "fp16", "int8"):
                out = Path(tmp) / precision
                out.mkdir()
                req = ExportRequest(student=student, preprocess=student.cfg.get_preprocess(), out_dir=out,
                                    precision=precision, onnx_path=onnx_path, calib=calib, val=val)
                t0 = time.perf_counter()
                result = get_target("openvino").build(req)
                build_s = time.perf_counter() - t0
                backend = create_backend(out / result.files["model"], backend="openvino", threads=args.threads)
                emb = backend.run(val)["embedding"]
                cos = np.sum(emb * ref, 1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
                size = (out / "model.bin").stat().st_size + (out / "model.xml").stat().st_size
                rows.append({"model": arch, "backend": "openvino", "precision": precision, "size_mb": size / 1e6,
                             "build_s": round(build_s, 1), "cosine_mean": float(cos.mean()),
                             "cosine_min": float(cos.min()),
                             **time_call(backend.run, x, args.warmup, args.iters)})
                print(json.dumps(rows[-1]), flush=True)
    import openvino

    env = {"cpu": describe_cpu(cpu_facts()), "cpu_facts": cpu_facts(), "threads": args.threads,
           "torch": torch.__version__,
           "openvino": openvino.__version__, "img_size": args.img_size, "batch": 1,
           "calibration": "cifar10 test" if CIFAR.is_dir() else "synthetic", "weights": "random init"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    lines = ["| model | backend | precision | size MB | p50 ms | p90 ms | cosine vs torch (mean/min) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cos = f"{r['cosine_mean']:.5f} / {r['cosine_min']:.5f}" if "cosine_mean" in r else "-"
        lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['size_mb']:.2f} | {r['p50']:.2f} | "
                     f"{r['p90']:.2f} | {cos} |")
    md = f"Environment: {json.dumps(env)}\n\n" + "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
