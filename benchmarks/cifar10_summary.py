"""Assemble the CIFAR-10 pipeline's outputs into benchmarks/results/cifar10/ (results.json, results.md, plots).

Reads only what the stages wrote in the work dir of `benchmarks/cifar10_pipeline.sh`:
    timings.jsonl            wall time per stage (written by the pipeline script)
    data/subsets.json        the image subsets (train: seen classes only; test; demo)
    cache-train/manifest.json, run-*/config.json + metrics.csv
    eval/run.json, eval/<bundle>.json      `edgekd eval --out` (fidelity, zero-shot, seen/unseen, few-shot)
    bundles/<target>-<precision>/edgekd.json   export metadata + parity gate report
    bench/results.json (+ latency.png, throughput.png, results.md)   `edgekd bench`
    classify.jsonl           `edgekd classify --json` on a few held-out test images

    python benchmarks/cifar10_summary.py --work /tmp/edgekd-cifar10 --out benchmarks/results/cifar10
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from edgekd._io import atomic_write_json, atomic_write_text, json_get  # noqa: E402


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(x: Any, nd: int = 1) -> str:
    return "-" if x is None else f"{100 * float(x):.{nd}f}"


def _num(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(float(x), fmt)


def timings(work: Path) -> dict[str, dict[str, Any]]:
    """Per stage: the last run that did the work (ok/failed) and whether the latest invocation skipped it."""
    out: dict[str, dict[str, Any]] = {}
    path = work / "timings.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        s = out.setdefault(r["stage"], {"seconds": None, "status": None, "rc": None, "skipped_later": False})
        if r["status"] == "skipped":
            s["skipped_later"] = True
        else:
            s.update(seconds=r["seconds"], status=r["status"], rc=r.get("rc"), skipped_later=False)
    return out


def training(run: Path) -> dict[str, Any]:
    cfg = _load(run / "config.json") or {}
    ek = cfg.get("edgekd", {})
    rows = []
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("loss") not in (None, "")]
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    ips = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    return {"run": str(run), "architecture": cfg.get("architecture"), "student": ek.get("student"),
            "epoch": ek.get("epoch"), "step": ek.get("step"), "first_loss": _f(first.get("loss")),
            "last_loss": _f(last.get("loss")), "last_row": last,
            "images_per_s_median": sorted(ips)[len(ips) // 2] if ips else None,
            "params_mb": (run / "model.safetensors").stat().st_size / 2**20
            if (run / "model.safetensors").is_file() else None}


def _f(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def bundles(work: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for d in sorted((work / "bundles").glob("*")):
        meta = _load(d / "edgekd.json")
        if meta is None:
            continue
        par = meta.get("parity") or {}
        files = [d / f for f in (meta.get("files") or {}).values() if isinstance(f, str) and f.startswith("model")]
        out[d.name] = {"target": meta.get("target"), "precision": meta.get("precision"),
                       "model_mb": sum(f.stat().st_size for f in files if f.is_file()) / 2**20,
                       "parity_passed": par.get("passed"), "parity_skipped": par.get("skipped"),
                       "parity_reasons": par.get("reasons"), "parity_metrics": par.get("metrics"),
                       "calibration": meta.get("calibration"), "build_seconds": meta.get("build_seconds")}
    return out


def evals(work: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted((work / "eval").glob("*.json")):
        r = _load(p)
        zs_s, zs_t = json_get(r, "zero_shot", "student") or {}, json_get(r, "zero_shot", "teacher") or {}
        out[p.stem] = {
            "images": json_get(r, "data", "evaluated"), "fidelity": r.get("fidelity"),
            "student": {"top1": json_get(zs_s, "all", "top1"), "mpc_top1": json_get(zs_s, "all", "mean_per_class_top1"),
                        "seen_mpc": json_get(zs_s, "seen", "mean_per_class_top1"),
                        "unseen_mpc": json_get(zs_s, "unseen", "mean_per_class_top1"), "hm": zs_s.get("harmonic_mean")},
            "teacher": {"top1": json_get(zs_t, "all", "top1"), "mpc_top1": json_get(zs_t, "all", "mean_per_class_top1"),
                        "seen_mpc": json_get(zs_t, "seen", "mean_per_class_top1"),
                        "unseen_mpc": json_get(zs_t, "unseen", "mean_per_class_top1"), "hm": zs_t.get("harmonic_mean")},
            "few_shot": {who: {k: {m: json_get(v, m, "top1") for m in ("ncm", "probe", "tip_adapter")}
                               for k, v in (json_get(r, "few_shot", who) or {}).items()}
                         for who in ("student", "teacher")},
            "split": r.get("split")}
    return out


def bench(work: Path) -> dict[str, Any]:
    """Bench rows with edgekd's own speed-ups (edgekd.bench.report.add_speedups): against the fp32 teacher on the same
    backend, against the fastest teacher of any backend and precision, and against the teacher in torch eager."""
    from edgekd.bench.report import add_speedups

    res = _load(work / "bench" / "results.json")
    if res is None:
        return {"rows": [], "environment": None}
    rows = add_speedups([r for r in res.get("rows", []) if r.get("mode", "model") == "model"])
    out = []
    for r in rows:
        out.append({"model": r["model"], "teacher": bool(r.get("teacher")), "backend": r["backend"],
                    "precision": r.get("precision"), "batch": r["batch"], "threads": r["threads"],
                    "status": r["status"], "reason": r.get("reason"), "p50_ms": json_get(r, "latency_ms", "p50"),
                    "p90_ms": json_get(r, "latency_ms", "p90"), "throughput_ips": r.get("throughput_ips"),
                    "model_mb": r.get("model_mb"), "peak_rss_mb": r.get("peak_rss_mb"), "img_size": r.get("img_size"),
                    "frame_size": r.get("frame_size"), "speedup_same_backend": r.get("speedup_vs_teacher"),
                    "speedup_vs_best_teacher": r.get("speedup_vs_best_teacher"), "best_teacher": r.get("best_teacher"),
                    "speedup_vs_teacher_torch": r.get("speedup_vs_teacher_eager")})
    return {"rows": out, "environment": res.get("environment"), "command": res.get("command")}


def classify(work: Path) -> list[dict[str, Any]]:
    path = work / "classify.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            img = str(r.get("image") or r.get("path") or "")
            out.append({"image": "/".join(Path(img).parts[-2:]), "true": Path(img).parent.name,
                        "predictions": r.get("predictions") or r.get("top") or r.get("labels"), "raw": r})
    return out


def _pred_str(preds: Any) -> str:
    if not isinstance(preds, list):
        return str(preds)
    parts = []
    for p in preds[:3]:
        if isinstance(p, dict):
            parts.append(f"{p.get('label', p.get('class'))} ({_num(p.get('score'), '.3f')})")
        else:
            parts.append(str(p))
    return ", ".join(parts)


def render(s: dict[str, Any]) -> str:
    L: list[str] = []
    cfg = s["config"]
    random_teacher = cfg.get("random_teacher", True)
    L += ["# CIFAR-10 end to end: teacher -> student distillation, export, bench (`benchmarks/cifar10_pipeline.sh`)",
          "",
          f"Teacher: {cfg.get('teacher')} ({'**random weights**' if random_teacher else cfg.get('pretrained')}); "
          f"student {cfg.get('student')} at {cfg.get('img_size')} px; data: {cfg.get('subsets')}; "
          f"unseen (held out of distillation): {cfg.get('unseen')}. Machine: {cfg.get('machine')}.", ""]
    if random_teacher:
        L += ["> The teacher has random weights here (no model hub on this machine), so **zero-shot accuracy and the "
              "seen/unseen split are at chance for both teacher and student and mean nothing**; what is meaningful: "
              "the student's fidelity to the teacher (cosine, retrieval, top-1 agreement), INT8 parity, sizes and "
              "latency (independent of the weights). Re-run with `--pretrained openai` where the hub is reachable.",
              "",
              "> The student's zero-shot accuracy above chance does not come from the teacher: the default recipe adds "
              "a cross-entropy to the true label over the label-text embeddings (`cls`) on the seen classes, so the "
              "student learns CIFAR-10 labels from the training images while the random teacher stays at chance. For "
              "the same reason top-1 agreement with the teacher is low although the embeddings are close (cosine).",
              ""]
    L += headline(s)
    L += ["## Wall time per stage", "", "| stage | seconds | status |", "|---|---|---|"]
    total = 0.0
    for k, v in s["timings"].items():
        total += v["seconds"] or 0
        st = v["status"] or "-"
        if v["skipped_later"]:
            st += " (skipped on the last run: complete)"
        L.append(f"| {k} | {_num(v['seconds'], '.1f')} | {st} |")
    L += [f"| **total** | **{total:.1f}** ({total / 60:.1f} min) | |", ""]

    tr = s["training"]
    L += ["## Distillation", "",
          f"{tr.get('architecture')}: {tr.get('epoch')} epochs / {tr.get('step')} steps, loss "
          f"{_num(tr.get('first_loss'), '.4f')} -> {_num(tr.get('last_loss'), '.4f')}, median "
          f"{_num(tr.get('images_per_s_median'), '.0f')} images/s; weights {_num(tr.get('params_mb'))} MB (fp32).", ""]

    L += ["## Student fidelity to the teacher and zero-shot (held-out test images)", "",
          "| model | images | mean cosine | centred cosine | retrieval@1 % | top-1 agreement % | student top-1 % | "
          "teacher top-1 % | student seen / unseen / HM (mpc %) | teacher seen / unseen / HM |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in s["eval"].items():
        f = e.get("fidelity") or {}
        st, te = e["student"], e["teacher"]
        L.append(f"| {name} | {e.get('images')} | {_num(f.get('mean_cosine'), '.4f')} | "
                 f"{_num(f.get('centred_cosine'), '.4f')} | "
                 f"{_pct(f.get('retrieval_at_1'))} | {_pct(f.get('top1_agreement'))} | {_pct(st['top1'])} | "
                 f"{_pct(te['top1'])} | {_pct(st['seen_mpc'])} / {_pct(st['unseen_mpc'])} / {_pct(st['hm'])} | "
                 f"{_pct(te['seen_mpc'])} / {_pct(te['unseen_mpc'])} / {_pct(te['hm'])} |")
    fs = json_get(s["eval"], "run", "few_shot") or {}
    if fs.get("student"):
        L += ["", "Few-shot on the unseen classes (run, top-1 %: NCM / linear probe / Tip-Adapter):", "",
              "| K | student | teacher |", "|---|---|---|"]
        for k, v in fs["student"].items():
            t = (fs.get("teacher") or {}).get(k, {})
            L.append(f"| {k} | {_pct(v['ncm'])} / {_pct(v['probe'])} / {_pct(v['tip_adapter'])} | "
                     f"{_pct(t.get('ncm'))} / {_pct(t.get('probe'))} / {_pct(t.get('tip_adapter'))} |")
    L.append("")

    L += ["## Export bundles and the parity gate (vs the torch student as trained, held-out test images)", "",
          "| bundle | size MB | parity | images | cosine mean / p1 / worst | top-1 agreement % [95% interval] "
          "(strict) | zero-shot drop (points) | calibration |",
          "|---|---|---|---|---|---|---|---|"]
    for name, b in s["bundles"].items():
        m = b.get("parity_metrics") or {}
        gate = "skipped" if b.get("parity_skipped") else ("passed" if b.get("parity_passed") else "**FAILED**")
        cal = b.get("calibration") or {}
        cal_text = f"{cal.get('images', '-')} imgs, {cal.get('method', '-')}" if cal else "-"
        strict = f" ({_pct(m['top1_agreement_strict'])})" if "top1_agreement_strict" in m else ""
        ci = m.get("top1_agreement_ci95")
        interval = f" [{_pct(ci[0])}-{_pct(ci[1])}]" if ci else ""
        L.append(f"| {name} | {_num(b['model_mb'])} | {gate} | {m.get('images', '-')} | "
                 f"{_num(m.get('cosine_mean'), '.5f')} / {_num(m.get('cosine_p01'), '.5f')} / "
                 f"{_num(m.get('cosine_min'), '.5f')} | {_pct(m.get('top1_agreement'))}{interval}{strict} | "
                 f"{_num(m.get('accuracy_drop'))} | {cal_text} |")
        if b.get("parity_passed") is False and b.get("parity_reasons"):
            L.append(f"|  | | reasons: {'; '.join(map(str, b['parity_reasons']))} | | | | | |")
    tie_flips = {n: (b.get("parity_metrics") or {}).get("flips_within_tie_margin") for n, b in s["bundles"].items()}
    tie_flips = {n: v for n, v in tie_flips.items() if v}
    if tie_flips:
        margin = next(b["parity_metrics"]["tie_margin"] for n, b in s["bundles"].items() if n in tie_flips)
        L += ["", "Strict agreement counts every flip; the gated number forgives flips where the torch student's "
              f"embedding lies within {margin:g} of the two classes' decision boundary (near-ties: "
              + ", ".join(f"{n} {v}" for n, v in tie_flips.items()) + " images). "
              + ("With a random teacher the label-text embeddings are nearly parallel, so many images sit on such "
                 "ties. " if random_teacher else "") + "See docs/export.md."]
    L.append("")

    rows = s["bench"]["rows"]
    if rows:
        L += ["## Latency: teacher vs student (p50 ms, 2 threads; speed-up = teacher p50 / model p50)", "",
              "| model | backend | precision | batch | size MB | p50 ms | throughput img/s | vs teacher fp32 "
              "(same backend) | vs best teacher | vs teacher torch |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["batch"] or 0, not r["teacher"], str(r["backend"]), str(r["model"]))):
            if r["status"] != "ok":
                if r["status"] == "failed":
                    L.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch']} | | FAILED: "
                             f"{str(r.get('reason'))[:80]} | | | | |")
                continue
            L.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch']} "
                     f"| {_num(r['model_mb'], '.1f')} | {_num(r['p50_ms'])} | {_num(r['throughput_ips'], '.1f')} | "
                     f"{_num(r['speedup_same_backend'], '.1f')}x | {_num(r['speedup_vs_best_teacher'], '.1f')}x | "
                     f"{_num(r['speedup_vs_teacher_torch'], '.1f')}x |")
        skipped: dict[tuple[str, str], int] = {}
        for r in rows:
            if r["status"] == "skipped":
                why = str(r.get("reason")).replace(str(s["config"].get("work", "")), "WORK").split(";")[0][:90]
                key = (r["backend"], why.replace(r["model"], "<model>"))
                skipped[key] = skipped.get(key, 0) + 1
        if skipped:
            L += ["", "Skipped rows (the model's format cannot run there): " + "; ".join(
                f"{b} x{n}: {why}" for (b, why), n in sorted(skipped.items()))]
        L += ["", "![latency](latency.png) ![throughput](throughput.png)", ""]
        env = s["bench"].get("environment") or {}
        if env.get("load_avg"):
            L += [f"Host load average during bench: {env.get('load_avg')} (the machine is shared; compare rows "
                  "within this table).", ""]

    if s["classify"]:
        L += ["## `edgekd classify` through the runtime", "", f"Bundle: `{s['config'].get('classify_bundle')}`", "",
              "| image | true class | top-3 |", "|---|---|---|"]
        for c in s["classify"]:
            L.append(f"| {c['image']} | {c['true']} | {_pred_str(c['predictions'])} |")
        L.append("")
    L += ["Reproduce: `benchmarks/cifar10_pipeline.sh` (see docs/pipeline.md); raw numbers in results.json.", ""]
    return "\n".join(L)


def _machine(env: dict[str, Any]) -> str:
    cpu = env.get("cpu")
    if isinstance(cpu, dict):
        return f"{cpu.get('model', '?')}, {cpu.get('cores_usable', '?')} usable cores"
    return str(cpu or "?")


NATIVE_BACKEND = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


def headline(s: dict[str, Any]) -> list[str]:
    """Teacher vs student per backend and precision: size, latency (b1), throughput (b32), speed-ups, fidelity, parity.

    Rows: the teacher on each backend in each precision that ran, the run dir on torch, each bundle on its own target's
    backend. Speed-ups at batch 1: against the fp32 teacher on the same backend, and against the fastest teacher."""
    rows = [r for r in s["bench"]["rows"] if r["status"] == "ok"]
    by = {(r["model"], r["backend"], r["precision"], r["batch"]): r for r in rows}
    picks: list[tuple[str, str, str, str]] = []  # (label, bench model, backend, precision)
    for r in rows:
        if r["teacher"] and r["batch"] == 1:
            picks.append((f"teacher {r['model'].split(':', 1)[-1]} ({_px(r)})", r["model"], r["backend"],
                          r["precision"]))
    run = next((r for r in rows if not r["teacher"] and r["backend"] == "torch"), None)
    if run:
        picks.append((f"student (run dir, {_px(run)})", run["model"], "torch", run["precision"]))
    for name, b in s["bundles"].items():
        backend = NATIVE_BACKEND.get(str(b.get("target")), "")
        r = next((x for x in rows if x["model"] == name and x["backend"] == backend), None)
        if r:
            frame = r.get("frame_size")
            note = f", fed {frame[1]}x{frame[0]} frames: crop + resize in its graph" if frame else ""
            picks.append((f"student bundle {name} ({_px(r)}{note})", name, backend, r["precision"]))
    if not picks:
        return []
    best = next((r["best_teacher"] for r in rows if r["batch"] == 1 and r.get("best_teacher")), "?")
    L = ["## Summary: teacher vs student (2 threads)", "",
         f"Speed-ups at batch 1: against the fp32 teacher on the same backend, and against the fastest teacher of this "
         f"run ({best}), the one a user would run on this CPU. Resolutions differ: the teacher runs at its own 224 px, "
         "the student at its own.", "",
         "| model | backend | precision | size MB | p50 ms b1 | vs teacher fp32 (same backend) | vs best teacher | "
         "img/s b32 | fidelity: mean cosine to teacher | INT8 parity |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, model, backend, precision in sorted(picks, key=lambda p: (not p[0].startswith("teacher"), p[2],
                                                                         p[3], p[0])):
        r1, r32 = by.get((model, backend, precision, 1)), by.get((model, backend, precision, 32))
        r = r1 or r32
        ev = s["eval"].get(model) or (s["eval"].get("run") if run and model == run["model"] else None) or {}
        b = s["bundles"].get(model) or {}
        gate = "-"
        if b.get("precision") == "int8":
            gate = "skipped" if b.get("parity_skipped") else ("passed" if b.get("parity_passed") else "**FAILED**")
            m = b.get("parity_metrics") or {}
            gate += f" (agreement {_pct(m.get('top1_agreement'))}%, cos {_num(m.get('cosine_mean'), '.4f')})"
        fid = json_get(ev, "fidelity", "mean_cosine")
        L.append(f"| {label} | {backend} | {precision} | {_num(r.get('model_mb'), '.1f')} | "
                 f"{_num(json_get(r1, 'p50_ms'))} | {_num(json_get(r1, 'speedup_same_backend'), '.1f')}x | "
                 f"{_num(json_get(r1, 'speedup_vs_best_teacher'), '.1f')}x | "
                 f"{_num((r32 or {}).get('throughput_ips'), '.0f')} | {'-' if fid is None else f'{fid:.4f}'} | "
                 f"{gate} |")
    return L + [""]


def _px(row: dict[str, Any]) -> str:
    size = row.get("img_size") or ["?"]
    return f"{size[0]} px"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-cifar10"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cifar10")
    ap.add_argument("--classify-bundle", default=None)
    a = ap.parse_args(argv)
    work: Path = a.work
    if not work.is_dir():
        print(f"Error: --work {work} does not exist: run benchmarks/cifar10_pipeline.sh first", file=sys.stderr)
        return 2
    runs = sorted(work.glob("run-*"))
    subsets = _load(work / "data" / "subsets.json") or {}
    cache = _load(work / "cache-train" / "manifest.json") or {}
    tr = training(runs[-1]) if runs else {}
    teacher = cache.get("teacher") or {}
    student = tr.get("student") or {}
    bres = bench(work)
    env = bres.get("environment") or {}
    summary = {
        "format": "edgekd.cifar10_pipeline", "version": 1,
        "config": {"teacher": teacher.get("name"), "pretrained": teacher.get("pretrained"),
                   "random_teacher": bool(teacher.get("random_init", True)), "teacher_id": teacher.get("id"),
                   "student": tr.get("architecture"), "img_size": student.get("img_size"),
                   "views": json_get(cache, "views", "count"), "unseen": subsets.get("unseen"),
                   "subsets": {k: sum(v.values()) for k, v in (subsets.get("counts") or {}).items()},
                   "classify_bundle": Path(a.classify_bundle).name if a.classify_bundle else None,
                   "work": str(work),
                   "machine": _machine(env)},
        "timings": timings(work), "training": tr, "eval": evals(work), "bundles": bundles(work), "bench": bres,
        "classify": [{k: v for k, v in c.items() if k != "raw"} for c in classify(work)],
    }
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out / "results.json", summary)
    atomic_write_text(a.out / "results.md", render(summary))
    for name in ("latency.png", "throughput.png"):
        if (work / "bench" / name).is_file():
            shutil.copyfile(work / "bench" / name, a.out / name)
    if (work / "bench" / "results.md").is_file():
        shutil.copyfile(work / "bench" / "results.md", a.out / "bench.md")
    print(f"wrote {a.out / 'results.md'} and results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
