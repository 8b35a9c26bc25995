"""Write the measured figures of README.md and docs/*.md from the files under benchmarks/results/.

    python benchmarks/readme_tables.py            # rewrite every generated block in place
    python benchmarks/readme_tables.py --check    # exit 1 and name the blocks that differ (tests/test_readme.py)

A generated block sits between `<!-- generated: KIND ARGS -->` and `<!-- /generated -->`; KIND names one of the
functions in BLOCKS, which reads its results file(s) and returns the Markdown. Every block names its source file and
the CPU it was measured on, so a figure never outlives its measurement: re-running a benchmark and this script
updates the prose, and a hand-edited number fails the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCUMENTS = ("README.md", "docs/export.md", "docs/bench.md", "docs/runtime.md", "docs/pipeline.md", "docs/distill.md")
PROGRESS = re.compile(r"\d+%\||━")  # progress bars in a transcript
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)

Block = Callable[..., str]
BLOCKS: dict[str, Block] = {}


def block(name: str) -> Callable[[Block], Block]:
    def deco(fn: Block) -> Block:
        BLOCKS[name] = fn
        return fn

    return deco


def load(rel: str) -> Any:
    path = RESULTS / rel
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run the benchmark that writes it (see its README block)")
    return json.loads(path.read_text())


CURRENT = {"document": "README.md"}  # the document being rewritten: links are relative to it


def link(rel: str) -> str:
    """A Markdown link to benchmarks/results/REL from the document being rewritten."""
    depth = CURRENT["document"].count("/")
    return f"[{rel}]({'../' * depth}benchmarks/results/{rel})"


def cpu_of(env: dict[str, Any] | None) -> str:
    """The CPU a results file records, in the words of edgekd.cpu.describe (older files: their model string)."""
    from edgekd.cpu import describe

    env = env or {}
    facts = env.get("cpu_facts") or (env.get("cpu") if isinstance(env.get("cpu"), dict) and "onednn_isa" in env.get(
        "cpu", {}) else None)
    if isinstance(facts, dict) and facts.get("onednn_isa_levels") is not None:
        return describe(facts)
    cpu = env.get("cpu")
    if isinstance(cpu, dict):
        isa = cpu.get("onednn_isa")
        return f"{cpu.get('model')}" + (f" ({isa})" if isa and isa != "unknown" else "")
    if not cpu or cpu in ("x86_64", "aarch64", "AMD64", "arm64"):
        return f"CPU model not recorded ({cpu or 'unknown'})"
    return str(cpu)


def bench_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from edgekd.bench.report import add_speedups

    return add_speedups([r for r in doc["rows"] if r.get("mode", "model") == "model"])


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} ms"


# --- blocks -------------------------------------------------------------------------------------------------------

@block("demo")
def demo_block() -> str:
    meta = load("demo/demo.json")
    summary = (RESULTS / "demo" / "summary.txt").read_text().rstrip("\n")
    minutes, seconds = divmod(int(round(meta["seconds"])), 60)
    return (f"On {meta['cpu']} ({meta['cores']} cores), `{meta['command']}` took {minutes} min {seconds:02d} s from "
            f"scratch with `.venv` already built ({meta['created']}; {link('demo/summary.txt')}). Its closing "
            f"summary:\n\n```text\n{summary}\n```\n")


@block("fidelity")
def fidelity_block(factors: str = "loss,budget") -> str:
    """Rows of the fidelity study's tables (benchmarks/fidelity_study.py) for the named factors, in that order
    (comma-separated; "all" = every table); a row already shown is not repeated."""
    doc = load("fidelity/results.json")
    by_key = {r["key"]: r for r in doc["rows"]}
    wanted = [t["factor"] for t in doc["tables"]] if factors == "all" else factors.split(",")
    shown: set[str] = set()
    first = doc["rows"][0]
    out = [f"{doc['host']}; teacher {first['teacher']}; retrieval among {first['trained']['images']} held-out "
           "CIFAR-10 test images never cached for training. Wall time = teacher cache + training on this CPU, one "
           f"run each ({link('fidelity/results.md')}, plots beside it; `python benchmarks/fidelity_study.py`).", "",
           "| varied | images | views | epochs | px | student | loss | augment | cache + train min | R@1 | R@5 | "
           "centred cosine | untrained R@1 |", "|" + "---|" * 13]
    notes = False
    for factor in wanted:
        for table in (t for t in doc["tables"] if t["factor"] == factor):
            for key in table["keys"]:
                if key in shown:
                    continue
                shown.add(key)
                r = by_key[key]
                t, u = r["trained"], r["untrained"]
                name = f"centre ({table['grid']})" if key == table["centre"] else factor
                notes |= bool(r.get("timing_note"))
                out.append(f"| {name} | {r['images']} | {r['views']} | {r['epochs']} | {r['img_size']} | "
                           f"{r['student']} | {r['loss']} | {r['augment']} | {r['cache_seconds'] / 60:.1f}"
                           f" + {r['train_seconds'] / 60:.1f}{' †' if r.get('timing_note') else ''} | "
                           f"**{100 * t['retrieval_at_1']:.1f}%** | {100 * t['retrieval_at_5']:.1f}% | "
                           f"{t['centred_cosine']:.3f} | {100 * u['retrieval_at_1']:.1f}% |")
    if notes:
        out += ["", "† training time inflated by another job on the same cores; the fidelity figures are unaffected "
                "(seeded, deterministic training)."]
    return "\n".join(out) + "\n"


@block("fidelity-plan")
def fidelity_plan_block() -> str:
    """The fidelity study's planner checks: `edgekd plan --minutes M`, then its commands, timed and evaluated."""
    doc = load("fidelity/results.json")
    if not doc.get("plan_checks"):
        raise SystemExit("fidelity/results.json has no planner check; run benchmarks/fidelity_study.py --plan-check M")
    out = ["| budget | `edgekd plan` chose | estimated cache + training | measured plan + cache + training | "
           "retrieval@1 | R@5 | centred cosine |", "|---|---|---|---|---|---|---|"]
    for c in doc["plan_checks"]:
        p, t = c["plan"], c["trained"]
        out.append(f"| {c['minutes']:g} min | {p['images']} images x {p['views']} view, {p['epochs']} epochs, "
                   f"{p['img_size']} px | {p['est_cache_s'] / 60:.1f} + {p['est_train_s'] / 60:.1f} min | "
                   f"{c['plan_seconds'] / 60:.1f} + {c['cache_seconds'] / 60:.1f} + {c['train_seconds'] / 60:.1f} = "
                   f"**{c['wall_seconds'] / 60:.1f} min** | **{100 * t['retrieval_at_1']:.1f}%** | "
                   f"{100 * t['retrieval_at_5']:.1f}% | {t['centred_cosine']:.3f} |")
    c = doc["plan_checks"][0]
    out += ["", f"{c['host']}; teacher {c['teacher']}; among the same {c['trained']['images']} held-out images "
            f"({link('fidelity/results.md')}, `python benchmarks/fidelity_study.py --plan-check M`)."]
    return "\n".join(out) + "\n"


@block("transcript")
def transcript_block(stage: str, lines: str = "8", end: str = "tail") -> str:
    """The command and the last (end="tail") or first ("head") lines of one stage of benchmarks/cifar10_pipeline.sh,
    as it printed them."""
    path = RESULTS / "cifar10" / "transcript" / f"{stage}.txt"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run benchmarks/cifar10_pipeline.sh")
    text = [ln for ln in path.read_text().splitlines()
            if ln.strip() and not ln.startswith(("WARNING", "NOTE")) and not PROGRESS.search(ln)]
    n = int(lines)
    first = next((i for i, ln in enumerate(text) if ln.startswith("$ ")), 0)
    command, rest = text[first:first + 1], text[first + 1:]
    shown = rest if len(rest) <= n else ["...", *rest[-n:]] if end == "tail" else [*rest[:n], "..."]
    return "```text\n" + "\n".join([*command, *shown]) + "\n```\n"


@block("captions_loop")
def captions_loop_block(stages: str, lines: str = "8") -> str:
    """Commands and printed output of stages of benchmarks/captions_loop.py (captions -> cache -> distill -> eval),
    from its transcripts: the command recorded in captions_loop.json, then the last `lines` lines it printed."""
    path = RESULTS / "captions_loop" / "captions_loop.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run benchmarks/captions_loop.py")
    recorded = json.loads(path.read_text())["stages"]
    out: list[str] = []
    for stage in stages.split(","):
        transcript = RESULTS / "captions_loop" / "transcript" / f"{stage}.txt"
        text = [ln for ln in transcript.read_text().splitlines()
                if ln.strip() and not ln.startswith(("WARNING", "NOTE")) and not PROGRESS.search(ln)]
        out += [f"$ {recorded[stage]['command']}", *text[-int(lines):]]
    return "```text\n" + "\n".join(out) + "\n```\n"


@block("cifar10")
def cifar10_block() -> str:
    """The CIFAR-10 pipeline's summary table (benchmarks/cifar10_summary.py renders it; one implementation)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import cifar10_summary

    s = load("cifar10/results.json")
    env = s["bench"].get("environment") or {}
    lines = cifar10_summary.headline(s)[2:]  # without its own heading
    return (f"Measured on {cpu_of(env)}, 2 threads, one `edgekd bench` run "
            f"({link('cifar10/results.md')}):\n\n" + "\n".join(lines).strip() + "\n")


@block("headline")
def headline_block(arch: str = "mobilenetv4_conv_small") -> str:
    """The student against the teacher at its best on this CPU, at the same 224 px, batch 1, 2 threads."""
    doc = load("cpu-b1-t2/results.json")
    rows = bench_rows(doc)
    student = [r for r in rows if r["status"] == "ok" and arch in r["model"] and r["precision"] == "int8"
               and r["batch"] == 1 and r["threads"] == 2]
    if not student:
        raise SystemExit(f"cpu-b1-t2/results.json has no INT8 {arch} row at batch 1, 2 threads")
    r = min(student, key=lambda x: x["latency_ms"]["p50"])
    teachers = [t for t in rows if t.get("teacher") and t["status"] == "ok" and t["batch"] == 1 and t["threads"] == 2]
    best = min(teachers, key=lambda t: t["latency_ms"]["p50"])
    fp32 = next(t for t in teachers if t["backend"] == r["backend"] and t["precision"] == "fp32")
    return (f"**{arch} INT8 on {r['backend']}: {_ms(r['latency_ms']['p50'])} per image, "
            f"{r['speedup_vs_best_teacher']:.0f}x faster than its ViT-B-32 teacher at its best on the same CPU** "
            f"({best['backend']} {best['precision']}, {_ms(best['latency_ms']['p50'])}; {r['speedup_vs_teacher']:.0f}x "
            f"against the fp32 teacher on {r['backend']}, {_ms(fp32['latency_ms']['p50'])}). Both at 224 px, batch 1, "
            f"2 threads, p50 of one run on {cpu_of(doc.get('environment'))} ({link('cpu-b1-t2/results.md')}).\n")


@block("teacher-vs-students")
def teacher_vs_students_block(setting: str = "cpu-b1-t2") -> str:
    """Every INT8 student bundle against the teacher, fp32 on the same backend and at its best, one bench run."""
    doc = load(f"{setting}/results.json")
    rows = [r for r in bench_rows(doc) if r["status"] == "ok"]
    teachers = sorted((r for r in rows if r.get("teacher")), key=lambda r: (r["backend"], r["precision"]))
    batch, threads = rows[0]["batch"], rows[0]["threads"]
    out = [f"{cpu_of(doc.get('environment'))}, 224 px, batch {batch}, {threads} thread(s), p50 of one "
           f"`edgekd bench` run ({link(f'{setting}/results.md')}). Teacher ViT-B-32 (random weights) in every "
           "precision its backends offer here:", "",
           "| teacher | backend | precision | p50 | img/s |", "|---|---|---|---|---|"]
    out += [f"| {t['model']} | {t['backend']} | {t['precision']} | {_ms(t['latency_ms']['p50'])} | "
            f"{t['throughput_ips']:.1f} |" for t in teachers]
    out += ["", "| student (INT8 bundle) | backend | p50 | vs teacher fp32 (same backend) | vs best teacher |",
            "|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["precision"] == "int8" and not r.get("teacher")),
                    key=lambda r: r["latency_ms"]["p50"]):
        out.append(f"| {r['model']} | {r['backend']} | {_ms(r['latency_ms']['p50'])} | "
                   f"{r['speedup_vs_teacher']:.1f}x | **{r['speedup_vs_best_teacher']:.1f}x** ({r['best_teacher']}) |")
    return "\n".join(out) + "\n"


@block("e2e")
def e2e_block(setting: str = "e2e-resize") -> str:
    """End-to-end (decode -> resize/normalise -> infer -> score) next to model-only, teacher and student, one
    `edgekd bench --e2e` run; ratios against the fastest teacher of each kind."""
    doc = load(f"{setting}/results.json")
    rows = [r for r in doc["rows"] if r["status"] == "ok"]  # as recorded: model and e2e rows
    model_rows = {(r["model"], r["backend"], r["precision"]): r for r in rows if r["mode"] == "model"}
    e2e = [r for r in rows if r["mode"] == "e2e"]
    best_e2e = min((r for r in e2e if r.get("teacher")), key=lambda r: r["latency_ms"]["p50"])
    best_frame = min((r["stages_ms"]["frame"] for r in e2e if r.get("teacher")), default=None) \
        if all("frame" in r["stages_ms"] for r in e2e) else None
    best_model = min((r for r in model_rows.values() if r.get("teacher")), key=lambda r: r["latency_ms"]["p50"])
    frame = "x".join(str(v) for v in e2e[0]["frame"])
    out = [f"{cpu_of(doc.get('environment'))}, one {frame} JPEG frame, batch 1, {e2e[0]['threads']} threads, p50 of "
           f"one `edgekd bench --e2e` run ({link(f'{setting}/results.md')}); each model with its own preprocessing "
           "(the teacher: its bicubic resize to 224 px). *Frame in* leaves out the JPEG decode: a camera or GStreamer "
           "hands over decoded frames.", "",
           "| model | backend | precision | px | JPEG in | decode | preprocess | infer | frame in | model only | "
           "JPEG-in vs best teacher | frame-in vs best teacher | model-only vs best teacher |", "|" + "---|" * 13]
    for r in sorted(e2e, key=lambda r: r["latency_ms"]["p50"]):
        if r.get("teacher") and r is not best_e2e:
            continue
        m = model_rows.get((r["model"], r["backend"], r["precision"]))
        st = r["stages_ms"]
        name = r["model"] if r.get("teacher") else f"{r.get('arch') or r['model']} ({r['model']})"
        model_only = _ms(m["latency_ms"]["p50"]) if m else "-"
        model_ratio = f"{best_model['latency_ms']['p50'] / m['latency_ms']['p50']:.1f}x" if m else "-"
        frame_in = _ms(st["frame"]) if best_frame else "-"
        frame_ratio = f"{best_frame / st['frame']:.1f}x" if best_frame else "-"
        out.append(f"| {name} | {r['backend']} | {r['precision']} | {r['img_size'][0]} | "
                   f"{_ms(r['latency_ms']['p50'])} | {_ms(st['decode'])} | {_ms(st['preprocess'])} | "
                   f"{_ms(st['infer'])} | {frame_in} | {model_only} | "
                   f"{best_e2e['latency_ms']['p50'] / r['latency_ms']['p50']:.1f}x | {frame_ratio} | {model_ratio} |")
    return "\n".join(out) + "\n"


@block("int8-isa")
def int8_isa_block() -> str:
    """INT8 bundles under each oneDNN ISA level of one host: the gate's metrics and latency; the presets
    (int8_isa/results.json) and, when measured, timm students that are not presets (int8_isa/results_extra.json)."""
    doc = load("int8_isa/results.json")
    out = [f"{doc['cpu_described']}, {doc['threads']} threads, {doc['test_images']} CIFAR-10 test images, students "
           f"distilled {doc['epochs']} epochs at {doc['img_size']} px; `python benchmarks/int8_isa.py` "
           f"({link('int8_isa/results.md')}; fp32/fp16 rows there too).", "", *_int8_isa_table(doc)]
    if (RESULTS / "int8_isa" / "results_extra.json").is_file():
        extra = load("int8_isa/results_extra.json")
        acc = [r["accuracy_reference"] for r in extra["rows"] if r.get("status") == "ok"]
        out += ["", f"Students that are not presets, on {extra['cpu_described']}, {extra['threads']} threads, "
                f"{extra['test_images']} CIFAR-10 test images, distilled {extra['epochs']} epochs at "
                f"{extra['img_size']} px from a {extra['teacher']} on {extra['train_images']} images (their own "
                f"zero-shot top-1 {min(acc):.1f}-{max(acc):.1f} %, chance 10 %: agreement says little here, the "
                f"cosines are the measure); `python benchmarks/int8_isa.py --stem results_extra` "
                f"({link('int8_isa/results_extra.md')}).", "", *_int8_isa_table(extra)]
    out += ["", "`=`: onnxruntime's output is bit-identical to the uncapped run (it takes no ISA cap). `fix`: NNCF "
            "overflow_fix of an OpenVINO INT8 bundle (enable: 7-bit weights in every layer, safe from saturation "
            "without VNNI, the default for `--gate-isa all`; first_layer: NNCF's default). `x fp32`: the same "
            "backend's fp32 p50 under the same ISA over this row's."]
    return "\n".join(out) + "\n"


def _int8_isa_table(doc: dict[str, Any]) -> list[str]:
    """The INT8 rows of an int8_isa results file, one per bundle and ISA level."""
    out = ["| student | bundle | fix | ISA | cosine mean / p1 / worst | top-1 agreement (strict) | gate | p50 "
           "| x fp32 |",
           "|---|---|---|---|---|---|---|---|---|"]
    fp32 = {(r["student"], r["backend"], r["isa"]): r.get("p50_ms") for r in doc["rows"]
            if r["precision"] == "fp32" and r.get("status") == "ok"}
    for r in doc["rows"]:
        if r["precision"] != "int8":
            continue
        # OpenVINO rows measured before bundles recorded overflow_fix were made with NNCF's default
        fix = r.get("overflow_fix") or ("" if r["backend"] == "onnxruntime" else "first_layer")
        if r.get("status") != "ok":
            out.append(f"| {r['student']} | {r['bundle']} | {fix} | {r['isa']} | **{r['status']}** | | | | |")
            continue
        base = fp32.get((r["student"], r["backend"], r["isa"]))
        same = "" if r["backend"] != "onnxruntime" else (" =" if r["identical_to_host_isa"] else " ≠")
        speed = f"{base / r['p50_ms']:.2f}x" if base else "-"
        out.append(f"| {r['student']} | {r['bundle']} | {fix} | {r['isa']}{same} | {r['cosine_mean']:.5f} / "
                   f"{r['cosine_p01']:.5f} / {r['cosine_min']:.4f} | {r['top1_agreement']:.1%} "
                   f"({r['top1_agreement_strict']:.1%}) | {'pass' if r['gate_passed'] else 'FAIL'} | "
                   f"{r['p50_ms']:.3f} ms | {speed} |")
    return out


@block("gate-floors")
def gate_floors_block() -> str:
    """The measured per-image cosine distributions behind the gate's floors (edgekd.export.parity.COSINE_FLOORS)."""
    from edgekd.export.parity import COSINE_FLOORS

    doc = load("int8_isa/results.json")
    out = [f"Good exports (those that passed the gate) measured by `benchmarks/int8_isa.py` on {doc['cpu_described']} "
           f"(every bundle under every ISA level; {link('int8_isa/results.md')}) and the floors set below them:", "",
           "| precision | good rows | lowest mean | lowest p1 | lowest worst image | floor: mean / p1 / worst |",
           "|---|---|---|---|---|---|"]
    for precision in ("fp32", "fp16", "int8"):
        ok = [r for r in doc["rows"] if r["precision"] == precision and r.get("status") == "ok" and r["gate_passed"]]
        if ok:
            floor = " / ".join(f"{v:g}" for v in COSINE_FLOORS[precision])
            out.append(f"| {precision} | {len(ok)} | {min(r['cosine_mean'] for r in ok):.5f} | "
                       f"{min(r['cosine_p01'] for r in ok):.5f} | {min(r['cosine_min'] for r in ok):.5f} | {floor} |")
    return "\n".join(out) + "\n"


@block("export-matrix")
def export_matrix_block() -> str:
    """Each student on every backend and precision at 224 px, batch 1, 2 threads: one bench run."""
    doc = load("export_matrix/results.json")
    rows = [r for r in doc["rows"] if r["status"] == "ok"]
    archs = list(dict.fromkeys(r["model"].split("-")[0] for r in rows))
    columns = [("torch", "fp32", None), ("onnxruntime", "fp32", None), ("onnxruntime", "int8", "onnx"),
               ("openvino", "fp32", "openvino"), ("openvino", "int8", "openvino")]

    def cell(arch: str, backend: str, precision: str, target: str | None) -> str:
        names = [arch] if target is None else [f"{arch}-{target}-{precision}"]
        r = next((r for r in rows if r["model"] in names and r["backend"] == backend and r["precision"] == precision),
                 None)
        return "-" if r is None else f"{r['latency_ms']['p50']:.2f} ms, {r['model_mb']:.1f} MB"

    out = [f"{cpu_of(doc.get('environment'))}, 224 px, batch 1, 2 threads, p50 of one `edgekd bench` run "
           f"(`benchmarks/export_matrix.sh` -> {link('export_matrix/results.md')}):", "",
           "| student | PyTorch eager | onnxruntime fp32 | onnxruntime int8 | OpenVINO fp32 | OpenVINO int8 |",
           "|---|---|---|---|---|---|"]
    out += [f"| {arch} | " + " | ".join(cell(arch, *c) for c in columns) + " |" for arch in archs]
    return "\n".join(out) + "\n"


# runtime_overhead*.json: one cell each (older runs: onnxruntime, one size and precision) or `cells` (the matrix)
OVERHEAD_FILES = {"": "fp32", "_int8": "INT8", "_mnv4m": "fp32", "_box": "fp32, box filter",
                  "_int8_cv2": "INT8, cv2-area-linear", "_matrix": None}


def overhead_cells() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(source file, its document, one cell) for every cell of the runtime_overhead*.json files there are; a cell
    holds `img_size`, `precision`, `backend`, `rows` and its honest ratio (`honest`, computed for older files by
    benchmarks/runtime_overhead.py, the one implementation)."""
    ro = _runtime_overhead()
    out = []
    for suffix in OVERHEAD_FILES:
        rel = f"runtime_overhead{suffix}.json"
        if not (RESULTS / rel).is_file():
            continue
        doc = load(rel)
        cells = doc.get("cells") or [{"img_size": doc["img_size"], "precision": doc.get("precision", "fp32"),
                                      "backend": "onnxruntime", "rows": doc["rows"]}]
        for cell in cells:
            cell.setdefault("honest", {stat: ro.honest_ratio(cell["rows"], stat) for stat in ("p50", "min")})
            cell.setdefault("verdict", ro.verdict(cell["honest"]["p50"]["ratio"]))
            out.append((rel, doc, cell))
    return out


def _runtime_overhead() -> Any:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import runtime_overhead

    return runtime_overhead


def _overhead_label(rel: str, doc: dict[str, Any], cell: dict[str, Any]) -> str:
    """A cell in words: student, precision, size, backend, resize (older files: the words they were shown with)."""
    old = OVERHEAD_FILES.get(rel.removeprefix("runtime_overhead").removesuffix(".json"))
    if old is not None:
        return f"{doc['arch']} @ {cell['img_size']} {old}, {cell['backend']}"
    method = doc.get("resize_method", "pillow")
    resize = f"Pillow {doc['interpolation']}" if method == "pillow" else method
    precision = cell["precision"].replace("int8", "INT8")
    return f"{doc['arch']} @ {cell['img_size']} {precision}, {resize}, {cell['backend']}"


@block("runtime-overhead")
def runtime_overhead_block() -> str:
    """classify() on a 640x480 frame against the fastest model-only variant (the honest ratio), then per student and
    preprocessing path against that path's own model, and where classify()'s time goes."""
    ro = _runtime_overhead()
    cells = overhead_cells()
    out = ["| student | threads | fastest classify() ms p50 (min), variant | fastest model-only ms p50 (min), "
           f"variant | honest ratio p50 (min) | <= {ro.RATIO_TARGET}x | CPU | source |", "|" + "---|" * 8]
    for rel, doc, cell in cells:
        h, m = cell["honest"]["p50"], cell["honest"]["min"]
        out.append(f"| {_overhead_label(rel, doc, cell)} | {doc['threads']} "
                   f"| {h['classify_ms']:.2f} ({m['classify_ms']:.2f}), {h['classify_variant']} | {h['model_ms']:.2f} "
                   f"({m['model_ms']:.2f}), {h['model_variant']} | **{h['ratio']:.2f}x** ({m['ratio']:.2f}x) | "
                   f"{cell['verdict']} | {cpu_of(doc['environment'])} | {link(rel.replace('.json', '.md'))} |")
    out += ["", "Each preprocessing path against its own model (onnxruntime spin off, the runtime's default; x own "
            "model flatters a path whose in-graph work slows its model down):", "",
            "| student | preprocessing | model ms | classify() ms | x own model | resize alone | CPU | source |",
            "|---|---|---|---|---|---|---|---|"]
    modes = {"full": "in graph: crop + resize + normalise", "normalize": "in graph: normalise only",
             "numpy": "numpy + Pillow"}
    for rel, doc, cell in cells:
        for r in (r for r in cell["rows"] if not r["spin"]):
            mode = modes.get(r["mode"], r["mode"])
            if r["mode"] == "numpy" and doc.get("resize_method", "pillow") != "pillow":
                mode = f"numpy + {doc['resize_method']}"
            out.append(f"| {_overhead_label(rel, doc, cell)} | {mode} | {r['model_ms']['p50']:.2f} | "
                       f"{r['classify_ms']['p50']:.2f} | {1 + r['overhead']:.2f}x | {r['resize_ms']['p50']:.2f} ms | "
                       f"{cpu_of(doc['environment'])} | {link(rel.replace('.json', '.md'))} |")
    return "\n".join(out + _overhead_split(cells)) + "\n"


def _overhead_split(cells: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Where classify()'s time goes, for the cells whose file records it (spin off)."""
    rows = [(rel, doc, cell, r) for rel, doc, cell in cells for r in cell["rows"] if "split" in r and not r["spin"]]
    if not rows:
        return []
    ro = _runtime_overhead()
    out = ["", "Where the time of one classify() goes, ms p50 (min): resize = the bundle's method alone (in the graph: "
           "part of the model); normalise + layout = what the app does between the resize and the model; score = "
           "1,000 labels + top-5; remainder = classify() - the parts:", "",
           "| student | preprocessing | resize | normalise + layout | model | score | remainder | classify() | "
           "source |", "|" + "---|" * 9]
    for rel, doc, cell, r in rows:
        s, m = r["split"]["p50"], r["split"]["min"]
        parts = " | ".join("in model" if s[p] is None else f"{s[p]:.2f} ({m[p]:.2f})"
                           for p in ("resize", "layout", "model", "score", "remainder", "classify"))
        out.append(f"| {_overhead_label(rel, doc, cell)} | {ro.variant(r)} | {parts} | "
                   f"{link(rel.replace('.json', '.md'))} |")
    return out


@block("runtime-overhead-check")
def runtime_overhead_check_block() -> str:
    """Issue 30's check, one line per measured cell (cv2-area-linear, INT8, 224 px), with the same student's Pillow
    bicubic cells beside it."""
    ro = _runtime_overhead()
    want = ro.DONE_WHEN
    out = []
    for rel, doc, cell in overhead_cells():
        config = {"resize_method": doc.get("resize_method", "pillow"), "precision": cell["precision"],
                  "img_size": cell["img_size"]}
        if {**config, "resize_method": want["resize_method"]} != want:
            continue
        h, m = cell["honest"]["p50"], cell["honest"]["min"]
        native = min(cell["rows"], key=lambda r: r["classify_ms"]["p50"]).get("classify_native_ms")
        native = f"; a frame already at the model's size: {native['p50']:.2f} ms" if native else ""
        resize = want["resize_method"] if config == want else f"Pillow {doc['interpolation']} (for comparison)"
        out.append(f"* {doc['arch']}, {resize}, {cell['backend']}, {doc['threads']} threads: **{h['ratio']:.2f}x** "
                   f"({m['ratio']:.2f}x from minima), {h['classify_ms']:.2f} ms ({h['classify_variant']}) / "
                   f"{h['model_ms']:.2f} ms ({h['model_variant']}): **{cell['verdict']}**{native}; "
                   f"{cpu_of(doc['environment'])} ({link(rel.replace('.json', '.md'))})")
    if not out:
        raise SystemExit("no runtime_overhead*.json measures cv2-area-linear INT8 at 224 px; run "
                         "benchmarks/runtime_overhead.py --resize-method cv2-area-linear --precision int8")
    return "\n".join(sorted(out, key=lambda line: "Pillow" in line)) + "\n"


@block("gst-element")
def gst_element_block(rel: str = "gstreamer/gst_element.json") -> str:
    """edgekdclassify per frame by format (vs RGB of the same run), memory with text encoders, label changes."""
    doc = load(rel)
    env = doc["environment"]
    md = link(rel.replace(".json", ".md"))
    out = [f"{cpu_of(env)}, {env['cores']} cores, GStreamer {env['gstreamer'].split()[-1]}, {doc['arch']} fp32 at "
           f"{doc['img_size']} px, {doc['threads']} threads, 1000 labels; p50 of the time GStreamer's streaming thread "
           f"spends in the element per frame (block=true), one run of `benchmarks/gst_element.py` ({md}). In "
           "brackets: against RGB frames of the same size, bundle and backend in that run.", "",
           "| resize | backend | frame | RGB | BGR | NV12 | I420 | classify() on RGB |",
           "|---|---|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["resize"], r["backend"], r["size"]) for r in doc["rows"])
    for key in keys:
        rows = {r["format"]: r for r in doc["rows"] if (r["resize"], r["backend"], r["size"]) == key}

        def cell(fmt: str, rows: dict = rows) -> str:
            r = rows.get(fmt)
            if r is None:
                return "-"
            ms = f"{r['element_ms']['p50']:.2f} ms"
            return ms if fmt == "RGB" else f"{ms} ({r['vs_rgb_p50']:.2f}x)"

        classify = next(iter(rows.values()))["classify_rgb_ms"]["p50"]
        out.append(f"| {' | '.join(key)} | " + " | ".join(cell(f) for f in ("RGB", "BGR", "NV12", "I420"))
                   + f" | {classify:.2f} ms |")
    if doc.get("memory"):
        mem = ", ".join(f"{m['precision'] if m['precision'] != 'none' else 'no text encoder'} {m['rss_max_mb']:.0f} MB"
                        for m in doc["memory"])
        growth = max(m["rss_end_mb"] - m["rss_start_mb"] for m in doc["memory"])
        out += ["", f"Memory, {doc['memory'][0]['frames']:,} RGB 640x480 frames per run (labels changed to new texts "
                f"every tenth of the run where a text encoder is loaded; {doc['teacher']}'s text tower, random "
                f"weights): peak RSS {mem}; largest growth from frame 500 to the end {growth:+.0f} MB."]
    for c in doc.get("label_changes", []):
        out += ["", f"Label changes ({c['precision']} text encoder, live 30 fps, {c['applied']} of {c['changes']} "
                f"applied): the app's set_property returns in {c['set_property_ms']['max']:.2f} ms at most; the "
                f"streaming thread spends {c['element_ms_at_swap']['max']:.2f} ms at most in the element on the frames "
                f"that swap a set in ({c['element_ms_normal']['p50']:.2f} ms p50 on the others; a frame lasts "
                f"{c['frame_interval_ms']:.1f} ms); the set is in use {c['request_to_frame_ms']['p50']:.0f} ms after "
                f"the request (p50; the text encoder takes {c['build_ms']['p50']:.0f} ms of it, on its own thread)."]
    return "\n".join(out) + "\n"


@block("regions")
def regions_block(rel: str = "regions/regions.json") -> str:
    """Batched region inference against one classify() per region, and RSS of elements sharing one model."""
    doc = load(rel)
    env, a = doc["env"], doc["args"]
    out = [f"{cpu_of(env)}, {env['cores']} cores, {a['arch']} fp32 at {a['img_size']} px, {a['threads']} threads, "
           f"1000 labels, a 1280x720 BGR frame with N boxes of 48-360 px; p50 per frame, {a['iters']} interleaved "
           f"iterations, one run of `benchmarks/regions.py` ({link(rel.replace('.json', '.md'))}). Speed-up: time per "
           "region of one `classify(crop)` each / of one `classify_regions` call, same run.", "",
           "| resize | backend | regions | batched | one call each | crops/s batched | crops/s one each | speed-up |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['resize_method']} | {r['backend']} | {r['regions']} | {r['batched_ms']:.2f} ms | "
            f"{r['one_call_each_ms']:.2f} ms | {r['crops_per_s_batched']:.0f} | {r['crops_per_s_one_each']:.0f} | "
            f"{r['speedup']:.2f}x |" for r in doc["crops"]]
    rss = {(m["elements"], m["shared"]): m["rss_mb"] for m in doc["rss"]}
    out += ["", f"Memory (onnxruntime, {doc['rss'][0]['frames']} frames, 4 regions each, one process per case): one "
            f"region element {rss[(1, False)]:.0f} MB RSS; four sharing one `model-instance-id` "
            f"{rss[(4, True)]:.0f} MB; four with a model each {rss[(4, False)]:.0f} MB."]
    return "\n".join(out) + "\n"


@block("measured")
def measured_block() -> str:
    """The other measurements: teacher cache and training speed, runtime overhead and memory."""
    cache = load("cache_speed_cpu.json")
    train = load("train_speed.json")
    speeds = {(r["mode"], r["img_size"]): r for r in train["rows"] if r.get("status") == "ok"}
    training = "; ".join(
        f"{size} px: {speeds[('cache', size)]['images_per_s']:.0f} img/s from the cache, "
        f"{speeds[('online', size)]['images_per_s']:.1f} img/s with `--online-teacher` "
        f"({speeds[('cache', size)]['images_per_s'] / speeds[('online', size)]['images_per_s']:.1f}x slower)"
        for size in sorted({s for _, s in speeds}) if ("cache", size) in speeds and ("online", size) in speeds)
    rows = [
        ("teacher cache, ViT-B-32", f"{cache['cache_images_per_s']:.1f} images/s ({cache['views']} view, batch "
         f"{cache['batch_size']}, {cache['workers']} workers); the teacher forward alone "
         f"{cache['teacher_forward_views_per_s']:.1f} views/s, decoding + rendering alone "
         f"{cache['decode_render_images_per_s_1proc']:.0f} images/s", cpu_of(cache["environment"]),
         link("cache_speed_cpu.json")),
        (f"student training, {train['rows'][0]['student']}", training, cpu_of(train["environment"]),
         link("train_speed.md")),
        *(_overhead_matrix_rows() if (RESULTS / "runtime_overhead_matrix.json").is_file() else
          _overhead_legacy_rows()),
    ]
    out = ["| what | measured | CPU | source |", "|---|---|---|---|"]
    out += [f"| {what} | {value} | {cpu} | {src} |" for what, value, cpu, src in rows]
    return "\n".join(out) + "\n"


def _overhead_matrix_rows() -> list[tuple[str, str, str, str]]:
    """The measured table's runtime rows from benchmarks/runtime_overhead.py's matrix: the honest ratio per cell."""
    doc = load("runtime_overhead_matrix.json")
    ro = _runtime_overhead()

    def cell(c: dict[str, Any]) -> str:
        return (f"{c['img_size']} px {c['precision'].replace('int8', 'INT8')} {c['backend']} "
                f"{c['honest']['p50']['ratio']:.2f}x{' (**' + c['verdict'] + '**)' if c['done_when'] else ''}")

    method = doc["resize_method"] if doc["resize_method"] != "pillow" else f"Pillow {doc['interpolation']}"
    rows = [r for c in doc["cells"] for r in c["rows"] if not r["spin"]]
    md = link("runtime_overhead_matrix.md")
    return [(f"runtime: `classify()` of a 640x480 frame / the fastest model-only variant, {doc['arch']}, {method}",
             f"fastest `classify()` over the preprocessing paths / fastest model alone, p50, {doc['threads']} threads "
             f"(target <= {ro.RATIO_TARGET}x): " + "; ".join(cell(c) for c in doc["cells"]),
             cpu_of(doc["environment"]), md),
            ("runtime memory", f"a process with the runtime loaded and one classify: "
             f"{min(r['rss_mb'] for r in rows):.0f}-{max(r['rss_mb'] for r in rows):.0f} MB RSS; `import torch` "
             f"alone: {doc['torch']['torch_import_rss_mb']:.0f} MB", cpu_of(doc["environment"]), md)]


def _overhead_legacy_rows() -> list[tuple[str, str, str, str]]:
    """The measured table's runtime rows from the single-cell files of older runs (until a matrix is committed)."""
    overhead = {name: load(f"runtime_overhead{name}.json") for name in ("", "_int8", "_mnv4m")}

    def over(doc: dict[str, Any], mode: str) -> str:
        row = next(r for r in doc["rows"] if r["mode"] == mode and not r["spin"])
        return f"+{row['overhead']:.0%} ({row['classify_ms']['p50']:.2f} vs {row['model_ms']['p50']:.2f} ms)"

    fp32, int8, medium = overhead[""], overhead["_int8"], overhead["_mnv4m"]
    full = next(r for r in fp32["rows"] if r["mode"] == "full" and not r["spin"])
    return [
        ("runtime: `classify()` on a 640x480 frame vs the model alone, 224 px",
         f"whole-frame bundle (`--preprocess-in-graph full`): {over(fp32, 'full')} fp32, {over(int8, 'full')} INT8 "
         f"for {fp32['arch']}, {over(medium, 'full')} for {medium['arch']}; numpy + Pillow preprocessing "
         f"(Pillow's bicubic resize alone {full['resize_ms']['p50']:.2f} ms): {over(fp32, 'numpy')} and "
         f"{over(medium, 'numpy')}", cpu_of(fp32["environment"]), link("runtime_overhead.md")),
        ("runtime memory", f"a process with the runtime loaded and one classify: {full['rss_mb']:.0f} MB RSS; "
         f"`import torch` alone: {fp32['torch']['torch_import_rss_mb']:.0f} MB", cpu_of(fp32["environment"]),
         link("runtime_overhead.md")),
    ]


# --- the rewrite --------------------------------------------------------------------------------------------------

def render(spec: str) -> str:
    kind, *args = spec.split()
    if kind not in BLOCKS:
        raise SystemExit(f"unknown generated block {kind!r}; known: {', '.join(sorted(BLOCKS))}")
    return BLOCKS[kind](*args)


def rewrite(text: str, document: str = "README.md") -> tuple[str, list[str]]:
    """(text with every generated block re-rendered, the specs of the blocks that changed); `document` is the path
    of the text relative to the repository (links are made relative to it)."""
    CURRENT["document"] = document
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        body = render(m.group("spec"))
        if body != m.group("body"):
            changed.append(m.group("spec"))
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(sub, text), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is out of date")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    stale = []
    for rel in DOCUMENTS:
        path = REPO / rel
        if not path.is_file():
            continue
        new, changed = rewrite(path.read_text(), rel)
        stale += [f"{rel}: {spec}" for spec in changed]
        if changed and not args.check:
            path.write_text(new)
    for line in stale:
        print(("out of date: " if args.check else "rewrote: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
