"""Model size and batch-1 latency of torch eager vs fp32 ONNX vs INT8 ONNX (onnxruntime, CPU) for edge students.

    .venv/bin/python benchmarks/export_size_latency.py --arch mobilenetv4_conv_small --arch efficientvit_b0 \
        --calib /tmp/edgekd-data/cifar10-images/train --threads 2 --out benchmarks/results/export_size_latency

Random-weight students (create_student + save_student) are exported through the real `export_bundle` pipeline, so
the numbers include everything the bundle contains (in-graph L2 norm). INT8 variants: the default (QDQ, per-channel,
U8S8) plus the alternatives given with --variant NAME:key=value,... Writes results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.cpu import cpu_facts
from edgekd.cpu import describe as describe_cpu


def time_fn(fn, warmup: int = 10, iters: int = 50, min_s: float = 2.0) -> dict[str, float]:
    """Warm up, then time at least `iters` calls and `min_s` seconds with perf_counter; ms percentiles."""
    for _ in range(warmup):
        fn()
    times = []
    t_end = time.perf_counter() + min_s
    while len(times) < iters or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    q = np.percentile(times, [50, 90, 99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "mean": statistics.fmean(times),
            "n": len(times)}


def op_profile(path: Path, x: np.ndarray, threads: int) -> dict[str, float]:
    """Share of onnxruntime kernel time per op type (from its profiler)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.intra_op_num_threads = threads
    opts.profile_file_prefix = str(path.parent / "ort_profile")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(20):
        sess.run(None, {name: x})
    prof = Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink()
    per: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            per[op] = per.get(op, 0.0) + e["dur"]
    total = sum(per.values()) or 1.0
    return {k: round(v / total, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:8]}


def _option_value(text: str) -> bool | str | list[str]:
    """--variant values: true/false, a|b|c lists (e.g. op_types=Conv|MatMul|Gemm), else the string."""
    if text in ("true", "false"):
        return text == "true"
    return text.split("|") if "|" in text else text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", default=None)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--calib", type=Path, required=True, help="calibration image folder")
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", action="append", default=[],
                    help="extra INT8 variant NAME:key=value,... (e.g. qop:quant_format=qoperator, "
                         "convonly:op_types=Conv|MatMul|Gemm)")
    ap.add_argument("--profile", action="store_true", help="record onnxruntime per-op time shares")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/export_size_latency"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-export-bench"), help="runs + bundles (large)")
    args = ap.parse_args()

    from edgekd.export.bundle import load_bundle_manifest
    from edgekd.export.pipeline import GateFailedError, backend_versions, export_bundle
    from edgekd.runtime.backends import create_backend
    from edgekd.students.io import save_student
    from edgekd.students.model import create_student

    torch.set_num_threads(args.threads)
    variants = {"int8": {}}
    for v in args.variant:
        name, _, kv = v.partition(":")
        variants[name] = {k: _option_value(v) for k, v in (p.split("=", 1) for p in kv.split(",") if p)}
    rows = []
    work = args.work
    for arch in args.arch or ["mobilenetv4_conv_small", "efficientvit_b0"]:
        torch.manual_seed(0)
        student = create_student(arch, args.embed_dim, args.img_size).eval()
        run = work / arch / "run"
        save_student(run, student)
        x = torch.randn(1, 3, args.img_size, args.img_size)
        with torch.no_grad():
            lat = time_fn(lambda s=student, x=x: s(x))
        rows.append({"model": arch, "variant": "torch eager", "precision": "fp32",
                     "backend": f"torch {torch.__version__}",
                     "size_mb": round(sum(p.numel() * p.element_size() for p in student.parameters()) / 1e6, 2),
                     "latency_ms": lat, "cosine_mean": 1.0})
        for name, opts in [("fp32", None), *variants.items()]:
            prec = "fp32" if opts is None else "int8"
            out = work / arch / name
            t0 = time.perf_counter()
            try:
                export_bundle(run, "onnx", prec, out, calib_dir=args.calib, calib_images=args.calib_images,
                              val_images=32, threads=args.threads, **(opts or {}))
            except GateFailedError:
                pass  # random-weight students: record the parity numbers either way
            build_s = time.perf_counter() - t0
            m = load_bundle_manifest(out)
            model = out / m["files"]["model"]
            be = create_backend(model, "onnxruntime", threads=args.threads)
            xi = x.numpy()
            row = {"model": arch, "variant": name, "precision": prec, "backend": "onnxruntime "
                   + (m["versions"]["onnxruntime"] or ""), "size_mb": round(model.stat().st_size / 1e6, 2),
                   "latency_ms": time_fn(lambda b=be, xi=xi: b.run(xi)), "build_s": round(build_s, 1),
                   "cosine_mean": m["parity"]["metrics"]["cosine_mean"],
                   "top1_agreement": m["parity"]["metrics"].get("top1_agreement"), "options": opts}
            if args.profile:
                row["op_time_share"] = op_profile(model, xi, args.threads)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("model", "variant", "size_mb", "cosine_mean")}),
                  f"p50 {row['latency_ms']['p50']:.2f} ms", flush=True)
    env = {"cpu": describe_cpu(cpu_facts()), "cpu_facts": cpu_facts(), "threads": args.threads,
           "versions": backend_versions(), "img_size": args.img_size, "batch": 1}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    lines = [f"# Export size and latency (batch 1, {args.threads} threads, {args.img_size} px)", "",
             "| model | variant | backend | size MB | p50 ms | p90 ms | cosine vs torch |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['backend']} | {r['size_mb']:.2f} | "
                     f"{r['latency_ms']['p50']:.2f} | {r['latency_ms']['p90']:.2f} | {r['cosine_mean']:.4f} |")
    profiled = [r for r in rows if r.get("op_time_share")]
    if profiled:
        lines += ["", "Share of onnxruntime kernel time per op type (its profiler, 20 runs; top 8):", "",
                  "| model | variant | op types |", "|---|---|---|"]
        lines += [f"| {r['model']} | {r['variant']} | "
                  + ", ".join(f"{op} {100 * v:.1f}%" for op, v in r["op_time_share"].items()) + " |" for r in profiled]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
