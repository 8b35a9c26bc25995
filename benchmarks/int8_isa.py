"""INT8 (and fp32/fp16) export quality and speed under each oneDNN ISA level of this CPU, on trained students.

    python benchmarks/int8_isa.py [--data CIFAR10_DIR] [--work /tmp/edgekd-int8-isa] [--out benchmarks/results/int8_isa]
        [--students a,b,...] [--bundles a,b,...] [--teacher RN50] [--img-size 224] [--epochs 3] [--train-images 1000]
        [--stem results]

CIFAR-10 (from ../shared/assets, unpacked into --work, or --data pointing at cifar10-images/) -> labels and a
--teacher cache (random weights; ViT-B-32) of --train-images training images x 2 views -> every --students (default:
every preset and fastvit_t8, repvit_m0_9, lcnet_100) distilled --epochs at --img-size -> bundles: ONNX fp32/fp16/INT8
(onnxruntime), OpenVINO fp32/fp16/INT8; INT8 as `edgekd export` makes it by default (full INT8, exported again with
--auto-mixed when that fails the gate) and as full INT8 (--no-auto-mixed; OpenVINO with NNCF's "performance" preset,
the default, and "mixed"; and with overflow_fix=first_layer, NNCF's default, beside the export's own
overflow_fix=enable, to show what the saturation fix costs and buys). Then, for every ISA level of this CPU
(ONEDNN_MAX_CPU_ISA, one process each), every bundle runs 500 held-out CIFAR-10 test images (50 per class) and is
compared with the PyTorch student as trained through the parity gate's own compare/judge: embedding cosine
mean/p1/worst, top-1 agreement (strict and tie-aware), accuracy drop, the gate's verdict, and batch-1 latency at 2
threads (median of 300 runs), and its ratio to the same backend's fp32 bundle under the same ISA.

onnxruntime takes no ISA cap (MLAS dispatches on CPUID); its rows are run under every cap anyway, and the table says
whether their outputs are bit-identical to the uncapped run (they should be). Every stage is resumable.
A --work directory belongs to one setting (teacher, images, size, epochs): another is refused.
Writes OUT/STEM.json and OUT/STEM.md (--stem results: the presets; results_extra: timm students that are not presets);
benchmarks/readme_tables.py renders both into the int8-isa block of docs/export.md.
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
EXTRA_STUDENTS = ("fastvit_t8", "repvit_m0_9", "lcnet_100")  # timm students that are not presets
BUNDLES = {  # name -> (target, precision, extra export options)
    "onnx-fp32": ("onnx", "fp32", []), "onnx-fp16": ("onnx", "fp16", []),
    "onnx-int8-full": ("onnx", "int8", ["--no-auto-mixed"]),
    "onnx-int8": ("onnx", "int8", []),  # the default: full INT8, --auto-mixed when that fails the gate
    "openvino-fp32": ("openvino", "fp32", []), "openvino-fp16": ("openvino", "fp16", []),
    "openvino-int8-full": ("openvino", "int8", ["--no-auto-mixed"]),  # overflow_fix=enable (--gate-isa all)
    "openvino-int8-full-first-layer": ("openvino", "int8", ["--option", "overflow_fix=first_layer", "--no-auto-mixed"]),
    "openvino-int8-mixed-full": ("openvino", "int8", ["--option", "preset=mixed", "--no-auto-mixed"]),
    "openvino-int8": ("openvino", "int8", []),
}
CALIB_PER_CLASS, TEST_PER_CLASS, THREADS = 30, 50, 2


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
    train_per_class = args.train_images // 10
    sets = {"train": subset(data / "train", w / "train", 0, train_per_class),
            "calib": subset(data / "train", w / "calib", train_per_class, CALIB_PER_CLASS),
            "test": subset(data / "test", w / "test", 0, TEST_PER_CLASS)}
    teacher = ["--teacher", args.teacher, "--random-teacher"]
    if not (w / "labels.npz").is_file():
        assert edgekd("labels", *teacher, "--data", str(sets["train"]), "--out", str(w / "labels.npz")) == 0
    manifest = w / "cache" / "manifest.json"
    if not manifest.is_file() or not json.loads(manifest.read_text()).get("complete"):
        assert edgekd("cache", *teacher, "--data", str(sets["train"]), "--views", "2", "--out", str(w / "cache"),
                      "--device", "cpu") == 0
    for student in args.students:
        run = w / "runs" / student
        if not (run / "DONE").is_file():
            assert edgekd("distill", "--cache", str(w / "cache"), "--student", student, "--img-size",
                          str(args.img_size), "--epochs", str(args.epochs), "--out", str(run), "--device", "cpu",
                          "--seed", "0") == 0
            (run / "DONE").touch()
        for name in args.bundles:
            target, precision, extra = BUNDLES[name]
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
    levels = list(host["onednn_isa_levels"])  # every level this CPU can be capped to, lowest first
    pack = load_label_pack(args.work / "labels.npz")
    rows = []
    for student in args.students:
        run = args.work / "runs" / student
        pixels_path = args.work / f"pixels-{student}.npy"
        pixels, labels, classes = render(run, sets["test"], pixels_path)
        labels = np.array([pack.class_names.index(classes[i]) for i in labels])
        ref = torch_embeddings(load_student(run).eval(), pixels)
        for name in args.bundles:
            precision = BUNDLES[name][1]
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
                quant = meta.get("target_metadata", {}).get("openvino", {}).get("quantization") or {}
                row = {"student": student, "bundle": name, "backend": backend, "precision": precision,
                       "preset": quant.get("preset"), "overflow_fix": quant.get("overflow_fix"), "isa": level,
                       "export_gate": meta["parity"].get("passed")}
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
            "teacher": f"random-weight {args.teacher}", "img_size": args.img_size, "epochs": args.epochs,
            "train_images": args.train_images // 10 * 10,
            "calib_images": CALIB_PER_CLASS * 10, "test_images": TEST_PER_CLASS * 10,
            "versions": _versions(), "created": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}


def _versions() -> dict[str, str | None]:
    from edgekd._optional import installed_version

    return {p: installed_version(p) for p in ("onnxruntime", "openvino", "nncf", "torch", "timm")}


def markdown(doc: dict) -> str:
    lines = [f"# INT8 / fp16 / fp32 exports under each oneDNN ISA level ({doc['created']})", "",
             f"Host: {doc['cpu_described']}, {doc['threads']} threads; " + ", ".join(
                 f"{k} {v}" for k, v in doc["versions"].items()) + ".",
             f"Students distilled {doc['epochs']} epochs at {doc['img_size']} px from a "
             f"{doc.get('teacher', 'random-weight ViT-B-32')} on "
             f"{doc['train_images']} CIFAR-10 images; calibration {doc['calib_images']} other training images; "
             f"every row: {doc['test_images']} CIFAR-10 test images against the PyTorch student as trained, judged by "
             "the parity gate's own criteria. Written by `python benchmarks/int8_isa.py`.", "",
             "ISA = `ONEDNN_MAX_CPU_ISA` of the process (onnxruntime ignores it: `same bits` says whether its output "
             "equals the uncapped run). Latency: batch 1, median of 300 runs; `x fp32` = the same backend's fp32 "
             "bundle under the same ISA in this run (its p50 over this row's). `fix`: NNCF overflow_fix of OpenVINO "
             "INT8 (enable: 7-bit weights everywhere, saturation-safe without VNNI; first_layer: NNCF's default).", ""]
    head = ["student", "bundle", "fix", "ISA", "cos mean", "cos p1", "cos worst", "top-1 agree (strict)", "acc drop",
            "gate", "p50 ms", "x fp32", "same bits"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fp32 = {(r["student"], r["backend"], r["isa"]): r.get("p50_ms") for r in doc["rows"]
            if r["precision"] == "fp32" and r.get("status") == "ok"}
    for r in doc["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['student']} | {r['bundle']} | {r.get('overflow_fix') or ''} | {r['isa']} | "
                         f"{r['status']} |" + " |" * (len(head) - 5))
            continue
        base = fp32.get((r["student"], r["backend"], r["isa"]))
        speed = f"{base / r['p50_ms']:.2f}" if base else "-"
        lines.append(f"| {r['student']} | {r['bundle']} | {r.get('overflow_fix') or ''} | {r['isa']} | "
                     f"{r['cosine_mean']:.5f} | "
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
    ap.add_argument("--stem", default="results", help="OUT/STEM.json + .md (results_extra: the non-preset students)")
    ap.add_argument("--students", type=_names, help="comma-separated presets or timm names [default: every preset "
                    f"and {', '.join(EXTRA_STUDENTS)}]")
    ap.add_argument("--bundles", type=_names, default=list(BUNDLES), help=f"comma-separated of {', '.join(BUNDLES)}")
    ap.add_argument("--teacher", default="ViT-B-32", help="open_clip teacher name (random weights)")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-images", type=int, default=1000, help="CIFAR-10 training images (a tenth per class)")
    args = ap.parse_args()
    if args.students is None:
        from edgekd.students.registry import PRESETS

        args.students = [*PRESETS, *EXTRA_STUDENTS]
    unknown = sorted(set(args.bundles) - set(BUNDLES))
    if unknown:
        ap.error(f"--bundles {','.join(unknown)}: use names from {', '.join(BUNDLES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    check_work(args)
    t0 = time.perf_counter()
    sets = prepare(args)
    print(f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    doc = evaluate(args, sets)
    print(f"evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(doc, indent=1))
    (args.out / f"{args.stem}.md").write_text(markdown(doc))
    print(f"wrote {args.out / (args.stem + '.md')}")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def check_work(args: argparse.Namespace) -> None:
    """Refuse a --work directory made with another teacher, image count, size or epoch count (its stages resume)."""
    setting = {"teacher": args.teacher, "train_images": args.train_images // 10 * 10, "img_size": args.img_size,
               "epochs": args.epochs}
    path = args.work / "setting.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != setting:
            sys.exit(f"--work {args.work} was made with {old}, not {setting}: pass another --work or delete it")
    else:
        path.write_text(json.dumps(setting))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run-one":
        run_one(*sys.argv[2:6])
    else:
        main()
