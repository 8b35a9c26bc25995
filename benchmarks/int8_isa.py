"""INT8 (and fp32/fp16) export quality and speed under each oneDNN ISA level of this CPU, on trained students.

    python benchmarks/int8_isa.py [--data CIFAR10_DIR] [--work /tmp/edgekd-int8-isa] [--out benchmarks/results/int8_isa]

CIFAR-10 (from ../shared/assets, unpacked into --work, or --data pointing at cifar10-images/) -> labels and a
ViT-B-32 cache (random weights) of 1,000 training images x 2 views -> mobilenetv4_conv_small and efficientvit_b0
distilled 3 epochs at 224 px -> bundles: ONNX fp32/fp16/INT8 (onnxruntime), OpenVINO fp32/fp16/INT8; INT8 as
`edgekd export` makes it by default (full INT8, exported again with --auto-mixed when that fails the gate) and as
full INT8 (--no-auto-mixed; OpenVINO with NNCF's "performance" preset, the default, and "mixed"). Then, for every
ISA level of this CPU (ONEDNN_MAX_CPU_ISA, one process each), every bundle runs 500 held-out CIFAR-10 test images
(50 per class) and is compared with the PyTorch student as trained through the parity gate's own compare/judge:
embedding cosine mean/p1/worst, top-1 agreement (strict and tie-aware), accuracy drop, the gate's verdict, and
batch-1 latency at 2 threads (median of 300 runs).

onnxruntime takes no ISA cap (MLAS dispatches on CPUID); its rows are run under every cap anyway, and the table says
whether their outputs are bit-identical to the uncapped run (they should be). Every stage is resumable.
Writes OUT/results.json and OUT/results.md; docs/export.md quotes the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STUDENTS = ("mobilenetv4_conv_small", "efficientvit_b0")
BUNDLES = {  # name -> (target, precision, extra export options)
    "onnx-fp32": ("onnx", "fp32", []), "onnx-fp16": ("onnx", "fp16", []),
    "onnx-int8-full": ("onnx", "int8", ["--no-auto-mixed"]),
    "onnx-int8": ("onnx", "int8", []),  # the default: full INT8, --auto-mixed when that fails the gate
    "openvino-fp32": ("openvino", "fp32", []), "openvino-fp16": ("openvino", "fp16", []),
    "openvino-int8-full": ("openvino", "int8", ["--no-auto-mixed"]),
    "openvino-int8-mixed-full": ("openvino", "int8", ["--option", "preset=mixed", "--no-auto-mixed"]),
    "openvino-int8": ("openvino", "int8", []),
}
ISA_LEVELS = ("AVX2", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX")
TRAIN_PER_CLASS, CALIB_PER_CLASS, TEST_PER_CLASS = 100, 30, 50
EPOCHS, IMG_SIZE, THREADS = 3, 224, 2


def edgekd(*args: str) -> int:
    cmd = [sys.executable, "-m", "edgekd", *args]
    print("$ edgekd " + " ".join(args), flush=True)
    return subprocess.run(cmd, cwd=REPO, check=False).returncode


def cifar10(args: argparse.Namespace) -> Path:
    if args.data:
        return Path(args.data)
    out = subprocess.run([str(REPO.parent / "shared" / "assets" / "unpack-cifar10.sh"), str(args.work / "cifar10")],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return Path(out)


def subset(src: Path, dst: Path, start: int, per_class: int) -> Path:
    """Images [start, start + per_class) of each class of `src`, linked into dst/<class>/."""
    if dst.is_dir():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    for c in sorted(p for p in src.iterdir() if p.is_dir()):
        (tmp / c.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(c.iterdir())[start:start + per_class]:
            os.symlink(f.resolve(), tmp / c.name / f.name)
    tmp.rename(dst)
    return dst


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    data = cifar10(args)
    w = args.work
    sets = {"train": subset(data / "train", w / "train", 0, TRAIN_PER_CLASS),
            "calib": subset(data / "train", w / "calib", TRAIN_PER_CLASS, CALIB_PER_CLASS),
            "test": subset(data / "test", w / "test", 0, TEST_PER_CLASS)}
    teacher = ["--teacher", "ViT-B-32", "--random-teacher"]
    if not (w / "labels.npz").is_file():
        assert edgekd("labels", *teacher, "--data", str(sets["train"]), "--out", str(w / "labels.npz")) == 0
    manifest = w / "cache" / "manifest.json"
    if not manifest.is_file() or not json.loads(manifest.read_text()).get("complete"):
        assert edgekd("cache", *teacher, "--data", str(sets["train"]), "--views", "2", "--out", str(w / "cache"),
                      "--device", "cpu") == 0
    for student in STUDENTS:
        run = w / "runs" / student
        if not (run / "DONE").is_file():
            assert edgekd("distill", "--cache", str(w / "cache"), "--student", student, "--img-size", str(IMG_SIZE),
                          "--epochs", str(EPOCHS), "--out", str(run), "--device", "cpu", "--seed", "0") == 0
            (run / "DONE").touch()
        for name, (target, precision, extra) in BUNDLES.items():
            out = w / "bundles" / student / name
            if (out / "edgekd.json").is_file():
                continue
            rc = edgekd("export", str(run), "--target", target, "--precision", precision, "--calib",
                        str(sets["calib"]), "--val", str(sets["test"]), "--labels", str(w / "labels.npz"),
                        "--out", str(out), "--overwrite", "--threads", str(THREADS), *extra)
            assert rc in (0, 3), f"export {student} {name} failed ({rc})"  # 3: gate failed, bundle kept
    return sets


def render(student_run: Path, test: Path, out: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The test images as the student's float32 pixels [N,3,H,W] (its own eval preprocessing) + labels."""
    from edgekd.export.calibration import load_image_set
    from edgekd.students.io import load_student_config

    pp = load_student_config(student_run).get_preprocess()
    images = load_image_set(test, pp, None, "--val")
    pixels = pp.normalize(images.frames)
    np.save(out, pixels)
    return pixels, images.labels, images.classes


def run_one(model: str, backend: str, pixels: str, out: str) -> None:
    """Child: embeddings of `pixels` and batch-1 latency, under this process's ONEDNN_MAX_CPU_ISA."""
    from edgekd.cpu import cpu_facts
    from edgekd.runtime.backends import create_backend
    from edgekd.runtime.isolated import run_model

    be = create_backend(model, backend=backend, threads=THREADS)
    x = np.load(pixels)
    emb = run_model(be, x)["embedding"]
    one = np.ascontiguousarray(x[:1])
    for _ in range(30):
        be.run(one)
    laps = []
    for _ in range(300):
        t0 = time.perf_counter()
        be.run(one)
        laps.append(time.perf_counter() - t0)
    np.savez(out, embedding=emb, p50_ms=np.median(laps) * 1e3, isa=str(cpu_facts()["onednn_isa"]))


def evaluate(args: argparse.Namespace, sets: dict[str, Path]) -> dict:
    import torch

    from edgekd.cpu import cpu_facts, describe
    from edgekd.export.parity import GateCriteria, compare, judge, torch_embeddings
    from edgekd.labelpack import load_label_pack
    from edgekd.runtime.isolated import signal_name
    from edgekd.students.io import load_student

    torch.set_num_threads(THREADS)
    host = cpu_facts(env={})
    levels = [lvl for lvl in ISA_LEVELS if lvl in host["onednn_isa_levels"]]
    pack = load_label_pack(args.work / "labels.npz")
    rows = []
    for student in STUDENTS:
        run = args.work / "runs" / student
        pixels_path = args.work / f"pixels-{student}.npy"
        pixels, labels, classes = render(run, sets["test"], pixels_path)
        labels = np.array([pack.class_names.index(classes[i]) for i in labels])
        ref = torch_embeddings(load_student(run).eval(), pixels)
        for name, (_, precision, _) in BUNDLES.items():
            bundle = args.work / "bundles" / student / name
            meta = json.loads((bundle / "edgekd.json").read_text())
            model = bundle / meta["files"]["model"]
            backend = meta["backend"]
            uncapped = None
            for level in reversed(levels):  # the host's own level first: the bit-identity reference
                out = args.work / "evals" / f"{student}-{name}-{level}.npz"
                out.parent.mkdir(parents=True, exist_ok=True)
                env = {**os.environ, "ONEDNN_MAX_CPU_ISA": level}
                proc = subprocess.run([sys.executable, __file__, "run-one", str(model), backend, str(pixels_path),
                                       str(out)], env=env, capture_output=True, text=True, check=False)
                row = {"student": student, "bundle": name, "backend": backend, "precision": precision,
                       "preset": (meta.get("target_metadata", {}).get("openvino", {}).get("quantization") or {}).get(
                           "preset"), "isa": level, "export_gate": meta["parity"].get("passed")}
                if proc.returncode != 0:
                    row["status"] = signal_name(proc.returncode) if proc.returncode < 0 else f"exit {proc.returncode}"
                    row["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
                    rows.append(row)
                    print(row, flush=True)
                    continue
                with np.load(out) as r:
                    emb, p50 = r["embedding"], float(r["p50_ms"])
                crit = GateCriteria.default(precision)
                m = compare(ref, emb, pack, labels, tie_margin=crit.tie_margin)
                passed, reasons, _ = judge(m, crit)
                if uncapped is None:
                    uncapped = emb
                row.update(status="ok", p50_ms=round(p50, 4), gate_passed=passed, reasons=reasons,
                           identical_to_host_isa=bool(np.array_equal(emb, uncapped)),
                           **{k: m[k] for k in ("images", "cosine_mean", "cosine_p01", "cosine_min",
                                                "top1_agreement", "top1_agreement_strict", "top1_agreement_ci95",
                                                "flips", "flips_within_tie_margin", "flip_boundary_distances",
                                                "accuracy_reference", "accuracy_drop")})
                rows.append(row)
                print({k: row.get(k) for k in ("student", "bundle", "isa", "cosine_mean", "cosine_min",
                                                "top1_agreement_strict", "gate_passed", "p50_ms")}, flush=True)
    return {"cpu": host, "cpu_described": describe(host), "levels": levels, "threads": THREADS,
            "img_size": IMG_SIZE, "epochs": EPOCHS, "train_images": TRAIN_PER_CLASS * 10,
            "calib_images": CALIB_PER_CLASS * 10, "test_images": TEST_PER_CLASS * 10,
            "versions": _versions(), "created": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}


def _versions() -> dict[str, str | None]:
    from edgekd._optional import installed_version

    return {p: installed_version(p) for p in ("onnxruntime", "openvino", "nncf", "torch", "timm")}


def markdown(doc: dict) -> str:
    lines = [f"# INT8 / fp16 / fp32 exports under each oneDNN ISA level ({doc['created']})", "",
             f"Host: {doc['cpu_described']}, {doc['threads']} threads; " + ", ".join(
                 f"{k} {v}" for k, v in doc["versions"].items()) + ".",
             f"Students distilled {doc['epochs']} epochs at {doc['img_size']} px from a random-weight ViT-B-32 on "
             f"{doc['train_images']} CIFAR-10 images; calibration {doc['calib_images']} other training images; "
             f"every row: {doc['test_images']} CIFAR-10 test images against the PyTorch student as trained, judged by "
             "the parity gate's own criteria. Written by `python benchmarks/int8_isa.py`.", "",
             "ISA = `ONEDNN_MAX_CPU_ISA` of the process (onnxruntime ignores it: `same bits` says whether its output "
             "equals the uncapped run). Latency: batch 1, median of 300 runs; `x fp32` = the same backend's fp32 "
             "bundle under the same ISA in this run.", ""]
    head = ["student", "bundle", "ISA", "cos mean", "cos p1", "cos worst", "top-1 agree (strict)", "acc drop",
            "gate", "p50 ms", "x fp32", "same bits"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fp32 = {(r["student"], r["backend"], r["isa"]): r.get("p50_ms") for r in doc["rows"]
            if r["precision"] == "fp32" and r.get("status") == "ok"}
    for r in doc["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['student']} | {r['bundle']} | {r['isa']} | {r['status']} |" + " |" * (len(head) - 4))
            continue
        base = fp32.get((r["student"], r["backend"], r["isa"]))
        speed = f"{base / r['p50_ms']:.2f}" if base else "-"
        lines.append(f"| {r['student']} | {r['bundle']} | {r['isa']} | {r['cosine_mean']:.5f} | "
                     f"{r['cosine_p01']:.5f} | {r['cosine_min']:.5f} | {r['top1_agreement']:.1%} "
                     f"({r['top1_agreement_strict']:.1%}) | {r['accuracy_drop']:+.1f} | "
                     f"{'pass' if r['gate_passed'] else 'FAIL'} | {r['p50_ms']:.3f} | {speed} | "
                     f"{'yes' if r['identical_to_host_isa'] else 'no'} |")
    lines += ["", "## Per-image cosine of every row, by precision (what the gate's floors are set from)", "",
              "| precision | rows | lowest mean | lowest p1 | lowest worst image |", "|---|---|---|---|---|"]
    for precision in ("fp32", "fp16", "int8"):
        ok = [r for r in doc["rows"] if r["precision"] == precision and r.get("status") == "ok"]
        if ok:
            lines.append(f"| {precision} | {len(ok)} | {min(r['cosine_mean'] for r in ok):.5f} | "
                         f"{min(r['cosine_p01'] for r in ok):.5f} | {min(r['cosine_min'] for r in ok):.5f} |")
    dists = sorted(d for r in doc["rows"] if r["precision"] == "int8" and r.get("status") == "ok"
                   for d in r["flip_boundary_distances"])
    if dists:
        q = np.percentile(dists, [50, 90, 99])
        lines += ["", f"INT8 flips ({len(dists)} over all rows): distance of the reference embedding to the two "
                  f"classes' decision boundary, median {q[0]:.4f}, p90 {q[1]:.4f}, p99 {q[2]:.4f}, max "
                  f"{dists[-1]:.4f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="cifar10-images/ (train/, test/); default: unpack ../shared/assets into --work")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("EDGEKD_WORK", "/tmp/edgekd-int8-isa")))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_isa")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sets = prepare(args)
    doc = evaluate(args, sets)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(doc, indent=1))
    (args.out / "results.md").write_text(markdown(doc))
    print(f"wrote {args.out / 'results.md'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run-one":
        run_one(*sys.argv[2:6])
    else:
        main()
