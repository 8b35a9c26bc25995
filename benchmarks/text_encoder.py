"""On-device text encoder per precision: file size, memory, label-embedding latency and the gate against fp32.

    python benchmarks/text_encoder.py [--teacher ViT-B-32] [--precisions fp32,fp16,int8] [--threads 2]
        [--out benchmarks/results/text_encoder]

`edgekd export-text --teacher T --random-teacher --precision P` for each P into a temp dir (random weights: size,
memory, latency and the towers' agreement are those of the real architecture). Then each text encoder runs in a
fresh process that imports only the runtime (no torch; asserted): RSS before loading, after `TextEncoder.load`
and after one encode (psutil), and `build_label_pack` latency with the runtime's default template for 1 label and
for 10 labels (edgekd.bench.timer: warm-up, then p50/p90 over >= 20 / 8 calls), onnxruntime at `--threads`.
The gate numbers are read from each text_encoder.json. Writes OUT.json and OUT.md.
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

LABELS_1 = ["forklift"]
LABELS_10 = ["person", "forklift", "pallet", "cardboard box", "a person wearing a hard hat", "bicycle", "smoke",
             "an open door", "delivery van", "traffic light"]


# --- inside a runtime-only process ---------------------------------------------------------------------------------

def measure(path: str, threads: int) -> dict:
    """RSS and build_label_pack latency of the text encoder in `path` (this process must not import torch)."""
    import psutil

    from edgekd.bench.timer import Timer
    from edgekd.runtime.text import TextEncoder

    proc = psutil.Process()
    rss_start = proc.memory_info().rss
    t0 = time.perf_counter()
    enc = TextEncoder.load(path, backend="onnxruntime", threads=threads)
    load_s = time.perf_counter() - t0
    rss_loaded = proc.memory_info().rss
    enc.build_label_pack(LABELS_1)
    rss_encoded = proc.memory_info().rss
    one = Timer(warmup_s=1.0, min_time_s=3.0, min_iters=20).measure(lambda: enc.build_label_pack(LABELS_1))
    ten = Timer(warmup_s=1.0, min_time_s=3.0, min_iters=8).measure(lambda: enc.build_label_pack(LABELS_10))
    return {"precision": enc.precision, "load_s": load_s, "rss_before_load_mb": rss_start / 2**20,
            "rss_after_load_mb": rss_loaded / 2**20, "rss_after_encode_mb": rss_encoded / 2**20,
            "rss_max_mb": max(rss_encoded, proc.memory_info().rss) / 2**20,
            "label_1_ms": one.stats_ms(), "labels_10_ms": ten.stats_ms(), "loadavg_1m": os.getloadavg()[0]}


def _child(job: str) -> None:
    value = measure(**json.loads(job))
    assert not any(m.split(".")[0] in ("torch", "open_clip") for m in sys.modules), "the runtime imported torch"
    print(json.dumps(value))


def in_child(path: Path, threads: int) -> dict:
    job = json.dumps({"path": str(path), "threads": threads})
    out = subprocess.run([sys.executable, __file__, "--child", job], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measuring {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the driver ----------------------------------------------------------------------------------------------------

def export_all(teacher_name: str, precisions: list[str], work: Path) -> dict[str, dict]:
    """Export each precision with the teacher loaded once -> {precision: {path, export_s, meta}}."""
    from edgekd.export.text import export_text_encoder
    from edgekd.teacher.clip import load_teacher

    teacher = load_teacher(teacher_name, random_init=True, device="cpu")
    out = {}
    for precision in precisions:
        t0 = time.perf_counter()
        meta = export_text_encoder(teacher, work / precision, precision=precision)
        out[precision] = {"path": work / precision, "export_s": time.perf_counter() - t0, "meta": meta}
        print(f"exported {precision} in {out[precision]['export_s']:.0f} s", flush=True)
    return out


def environment(threads: int) -> dict:
    from edgekd._optional import installed_version
    from edgekd.bench.env import collect_environment
    from edgekd.cpu import cpu_facts

    return {"cpu_facts": cpu_facts(), "cores": os.cpu_count(), "onnxruntime": installed_version("onnxruntime"),
            "full": collect_environment([threads])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="ViT-B-32")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/text_encoder"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-text-bench-") as tmp:
        exported = export_all(args.teacher, args.precisions.split(","), Path(tmp))
        for precision, e in exported.items():
            model = e["path"] / e["meta"]["files"]["model"]
            row = {"precision": precision, "size_mb": model.stat().st_size / 2**20, "export_s": e["export_s"],
                   "gate": e["meta"]["gate"], "compression": e["meta"].get("compression"),
                   **in_child(e["path"], args.threads)}
            rows.append(row)
            print(f"{precision}: {row['size_mb']:.1f} MB, RSS {row['rss_after_encode_mb']:.0f} MB, 1 label "
                  f"{row['label_1_ms']['p50']:.1f} ms, 10 labels {row['labels_10_ms']['p50']:.1f} ms", flush=True)
    res = {"teacher": args.teacher, "random_weights": True, "threads": args.threads, "labels_1": LABELS_1,
           "labels_10": LABELS_10, "rows": rows, "environment": environment(args.threads)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, args.out)
    print(args.out.with_suffix(".md").read_text())


# --- report --------------------------------------------------------------------------------------------------------

def write_report(res: dict, out: Path) -> None:
    from edgekd._io import atomic_write_json, atomic_write_text
    from edgekd.cpu import describe
    from edgekd.runtime.text import DEFAULT_TEMPLATES

    atomic_write_json(out.with_suffix(".json"), res)
    env = res["environment"]
    fp32 = next((r for r in res["rows"] if r["precision"] == "fp32"), None)
    lines = [f"# On-device text encoder: {res['teacher']} (random weights) by precision", "",
             f"CPU: {describe(env['cpu_facts'])} ({env['cores']} cores, shared); onnxruntime {env['onnxruntime']}, "
             f"{res['threads']} threads. Written by `benchmarks/text_encoder.py`; each row's runtime ran in its own "
             "process without torch.", "",
             "RSS: the whole process (Python, numpy, onnxruntime, the tokenizer and the tower) after "
             "`TextEncoder.load` and one encode; before loading it was "
             f"{min(r['rss_before_load_mb'] for r in res['rows']):.0f} MB. Latency: "
             f"`build_label_pack` with the runtime's default template ({DEFAULT_TEMPLATES[0]!r}), p50 / p90. "
             "MB = 2^20 bytes.", "",
             "| precision | file | vs fp32 | RSS after load | RSS after encode | 1 label ms | 10 labels ms | load s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        ratio = f"{r['size_mb'] / fp32['size_mb']:.2f}x" if fp32 else "-"
        one, ten = r["label_1_ms"], r["labels_10_ms"]
        lines.append(f"| {r['precision']} | {r['size_mb']:.1f} MB | {ratio} | {r['rss_after_load_mb']:.0f} MB | "
                     f"{r['rss_after_encode_mb']:.0f} MB | {one['p50']:.1f} / {one['p90']:.1f} | "
                     f"{ten['p50']:.1f} / {ten['p90']:.1f} | {r['load_s']:.2f} |")
    lines += ["", "## Gate against the fp32 tower (fp32: its parity with the torch teacher)", "",
              "Prompts: edgekd.export.text_gate.GATE_CLASSES x gate_templates(), class-major; label = template mean, "
              "normalised; top-1 = every fp32 prompt as a query, near-ties forgiven (strict rate in brackets).", "",
              "| precision | prompts | prompt cosine mean / p1 / worst | label cosine mean / worst | top-1 agreement "
              "(strict) | floors | passed |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        g, m = r["gate"], r["gate"]["metrics"]
        prompt = " / ".join(f"{m[k]:.6f}" for k in ("prompt_cosine_mean", "prompt_cosine_p01", "prompt_cosine_min")
                            if k in m)
        label = f"{m['label_cosine_mean']:.6f} / {m['label_cosine_min']:.6f}" if "label_cosine_min" in m else "-"
        top1 = f"{m['top1_agreement']:.1%} ({m['top1_agreement_strict']:.1%})" if "top1_agreement" in m else "-"
        floors = ", ".join(f"{k} >= {v}" for k, v in g["floors"].items())
        lines.append(f"| {r['precision']} | {m['prompts']} | {prompt} | {label} | {top1} | {floors} | "
                     f"{g['passed']} |")
    fp16 = next((r for r in res["rows"] if r["precision"] == "fp16"), None)
    if fp16 and fp32 and fp16["rss_after_encode_mb"] > 0.9 * fp32["rss_after_encode_mb"]:
        lines += ["", "fp16 halves the file but not the memory here: onnxruntime's CPU provider on this CPU has no "
                  "fp16 MatMul kernel and casts those weights back to float32 when it loads the tower (its optimised "
                  "graph keeps only the token table in fp16)."]
    loads = ", ".join(f"{r['loadavg_1m']:.1f}" for r in res["rows"])
    lines += ["", f"Load average (1 min) at the end of each row: {loads}; the machine is shared, so compare rows of "
              "this run rather than absolute times."]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
