"""Fidelity study: how faithfully a distilled student reproduces its teacher's embedding space, one factor at a time
around a centre, against wall time on this machine split into teacher-cache time and training time.

ViT-B-32 teacher (random weights, seeded: no model hub here), CIFAR-10 from ../shared/assets (unpack it first:
`../shared/assets/unpack-cifar10.sh /tmp/edgekd-data`). Held out: `--held-out` test images (balanced over the
classes) that are never cached for training; their teacher embeddings are cached once. Each point reports
retrieval@1/@5 among the held-out images, centred cosine (after subtracting the teacher's mean embedding), plain
cosine, and the same for the untrained student of that architecture and resolution.

    python benchmarks/fidelity_study.py --data /tmp/edgekd-data/cifar10-images --list
    python benchmarks/fidelity_study.py --data /tmp/edgekd-data/cifar10-images [--grid old-default] [--factor student]
    python benchmarks/fidelity_study.py --data ... --only student=efficientvit_b1 augment=crop   # chosen grid points
    python benchmarks/fidelity_study.py --data ... --budget-point images=30000,views=1,epochs=10
    python benchmarks/fidelity_study.py --speed           # the students' speed vs the teacher (edgekd bench)
    python benchmarks/fidelity_study.py --report          # results.md + plots from results.jsonl

Two grids. "old-default" is centred on the recipe as it was before the study (cos + rel + cls + kl): the loss mix,
views, epochs and resolution were studied there, and moved the default to feature imitation alone. "default" is
centred on that default at the budget that met the target (5,000 images x 1 view x 10 epochs): student size and
augmentation were studied there. Budget points are runs off the grids that trace the default against wall time.

Resumable: every finished point is a line of benchmarks/results/fidelity/results.jsonl (written atomically) and is
skipped on re-run; caches are shared by the points that need the same images and views (a reused cache's time is
the time it took when it was built, so every point's wall time is what it would cost alone).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

RESULTS = REPO / "benchmarks" / "results" / "fidelity"
SETTINGS = ("images", "views", "epochs", "img_size", "student", "loss", "augment")
GRIDS: dict[str, dict[str, Any]] = {
    "default": {
        "centre": {"images": 5000, "views": 1, "epochs": 10, "img_size": 128, "student": "mobilenetv4_conv_small",
                   "loss": "cos", "augment": "none"},
        "factors": {
            "student": ["mobilenetv4_conv_small", "mobilenetv4_conv_medium", "efficientvit_b0", "efficientvit_b1"],
            "augment": ["none", "crop", "jitter"],
            "loss": ["cos", "cos+vlalign"],
        },
    },
    "old-default": {
        "centre": {"images": 2000, "views": 2, "epochs": 20, "img_size": 128, "student": "mobilenetv4_conv_small",
                   "loss": "cos+rel+cls+kl", "augment": "none"},
        "factors": {
            "views": [1, 2, 4],
            "epochs": [10, 20],
            "img_size": [64, 96, 128],
            "loss": ["cos+rel+cls+kl", "cos", "mse", "cos+rel", "ood2023"],
        },
    },
}
CENTRE = GRIDS["default"]["centre"]
# loss mix -> distill options (explicit weights, so a point means the same whatever the default recipe is)
LOSSES: dict[str, list[str]] = {
    "cos+rel+cls+kl": ["--w-cos", "1", "--w-rel", "1", "--w-cls", "1", "--w-kl", "1"],
    "cos": ["--w-cos", "1", "--w-rel", "0", "--w-cls", "0", "--w-kl", "0"],
    "mse": ["--w-mse", "1", "--w-cos", "0", "--w-rel", "0", "--w-cls", "0", "--w-kl", "0"],
    "cos+rel": ["--w-cos", "1", "--w-rel", "1", "--w-cls", "0", "--w-kl", "0"],
    "cos+vlalign": ["--w-cos", "1", "--w-vlalign", "1", "--w-rel", "0", "--w-cls", "0", "--w-kl", "0"],
    "ood2023": ["--recipe", "ood2023"],
}
# augmentation on top of the cached views -> distill options (edgekd.distill.augment)
AUGMENTS: dict[str, list[str]] = {
    "none": [],
    "crop": ["--aug-crop", "0.6"],
    "jitter": ["--aug-jitter", "0.3"],
    "crop+jitter": ["--aug-crop", "0.6", "--aug-jitter", "0.3"],
}


def points(grid: str = "default", factor: str | None = None) -> list[dict[str, Any]]:
    """A grid's centre, then each factor's other values with everything else at the centre (deduplicated)."""
    centre, factors = GRIDS[grid]["centre"], GRIDS[grid]["factors"]
    out, seen = [], set()
    for name, values in factors.items():
        if factor and name != factor:
            continue
        for v in values:
            p = {**centre, name: v}
            key = point_key(p)
            if key not in seen:
                seen.add(key)
                out.append({**p, "grid": grid, "factor": name if v != centre[name] else "centre"})
    return sorted(out, key=lambda p: p["factor"] != "centre")


def budget_point(spec: str) -> dict[str, Any]:
    """A point off the grids, on the way to the time-budget target: "images=20000,views=1,epochs=20"
    (unnamed settings stay at the default grid's centre)."""
    p = dict(CENTRE)
    for item in spec.split(","):
        name, _, value = item.partition("=")
        if name not in CENTRE:
            raise SystemExit(f"--budget-point {spec!r}: unknown setting {name!r} (one of {', '.join(CENTRE)})")
        p[name] = type(CENTRE[name])(value)
    return {**p, "factor": "budget"}


def settings(p: dict[str, Any]) -> dict[str, Any]:
    """A point's or row's settings (rows from before augmentation was a setting had none)."""
    return {k: p.get(k, "none") for k in SETTINGS}


def point_key(p: dict[str, Any]) -> str:
    # "augment" enters the key only when set, so the keys of points run before it existed stay valid
    s = settings(p)
    if s["augment"] == "none":
        del s["augment"]
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


# --- data -----------------------------------------------------------------------------------------------------------

def balanced_subset(root: Path, n: int, out: Path) -> Path:
    """An ImageFolder of symlinks to the first n // classes images of each class (sorted names: deterministic)."""
    from captions_loop import link_subset  # benchmarks/captions_loop.py: the same subset-by-symlinks, per class

    if not (out / ".done").is_file():
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        link_subset(root, out, dict.fromkeys(classes, n // len(classes)))
        (out / ".done").touch()
    return out


# --- stages ---------------------------------------------------------------------------------------------------------

def edgekd(*args: str, log: Path) -> float:
    """Run `python -m edgekd ARGS`, output to `log`; returns wall seconds; raises with the log's tail on failure."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ edgekd {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "edgekd", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"edgekd {args[0]} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return time.perf_counter() - t0


def teacher_args(args: argparse.Namespace) -> list[str]:
    return ["--teacher", args.teacher, "--random-teacher", "--progress" if args.progress else "--no-progress"]


def build_cache(args: argparse.Namespace, images: Path, views: int, out: Path, work: Path) -> float:
    """The teacher cache of `images` with `views` views; its build seconds (recorded, so reuse reports them too)."""
    timing = out.with_suffix(".seconds")
    if timing.is_file() and (out / "manifest.json").is_file():
        return float(timing.read_text())
    seconds = edgekd("cache", "--data", str(images), "--out", str(out), "--views", str(views), "--templates",
                     "simple", *teacher_args(args), log=work / "logs.txt")
    timing.write_text(f"{seconds:.1f}")
    return seconds


def evaluate(args: argparse.Namespace, run: Path, held_out: Path, held_cache: Path, out: Path, work: Path) -> dict:
    if not out.is_file():
        edgekd("eval", str(run), "--data", str(held_out), "--teacher-cache", str(held_cache), "--shots", "0",
               "--no-metrics-csv", "--out", str(out), "--device", "cpu", log=work / "logs.txt")
    fid = json.loads(out.read_text())["fidelity"]
    return {k: fid.get(k) for k in ("retrieval_at_1", "retrieval_at_5", "centred_cosine", "mean_cosine", "images")}


def untrained_run(student: str, img_size: int, cache: Path, out: Path) -> Path:
    """A run dir holding the student as initialised (seed 0), so that eval measures the untrained baseline."""
    if (out / "model.safetensors").is_file():
        return out
    import torch

    from edgekd.students.io import save_student
    from edgekd.students.model import create_student
    from edgekd.teacher.cache import open_cache_arrays, read_manifest

    embed_dim = int(open_cache_arrays(cache, captions=False)["image_embeds"].shape[2])
    torch.manual_seed(0)
    model = create_student(student, embed_dim, img_size=img_size, teacher_id=read_manifest(cache)["teacher"]["id"])
    save_student(out, model.eval())
    shutil.copyfile(cache / "labels.npz", out / "labels.npz")  # what distill copies into a run (eval scores with it)
    return out


def run_point(args: argparse.Namespace, p: dict[str, Any], held_out: Path, held_cache: Path) -> dict[str, Any]:
    work = Path(args.work)
    train = balanced_subset(Path(args.data) / "train", p["images"], work / "data" / f"train-{p['images']}")
    cache = work / "caches" / f"n{p['images']}-k{p['views']}"
    cache_s = build_cache(args, train, p["views"], cache, work)
    run = work / "runs" / point_key(p)
    t0 = time.perf_counter()
    resumed = run.exists() and not (run / "DONE").is_file()  # an interrupted run: its time before the kill is lost
    if not (run / "DONE").is_file():
        edgekd("distill", "--cache", str(cache), "--student", p["student"], "--out", str(run), "--img-size",
               str(p["img_size"]), "--epochs", str(p["epochs"]), "--batch-size", str(args.batch_size), "--workers",
               str(args.workers), "--device", "cpu", "--no-progress", *(["--resume"] if run.exists() else []),
               *LOSSES[p["loss"]], *AUGMENTS[p["augment"]], log=work / "logs.txt")
        (run / "DONE").write_text(f"{time.perf_counter() - t0:.1f}{' resumed' if resumed else ''}")
    done = (run / "DONE").read_text().split()
    train_s, partial = float(done[0]), "resumed" in done
    trained = evaluate(args, run, held_out, held_cache, work / "evals" / f"{point_key(p)}.json", work)
    base = untrained_run(p["student"], p["img_size"], cache, work / "untrained" / f"{p['student']}-{p['img_size']}")
    untrained = evaluate(args, base, held_out, held_cache, work / "evals" / f"untrained-{base.name}.json", work)
    return {"key": point_key(p), **p, "cache_seconds": round(cache_s, 1), "train_seconds": round(train_s, 1),
            "wall_seconds": round(cache_s + train_s, 1), "train_time_partial": partial, "trained": trained,
            "untrained": untrained, "load_after": [round(v, 2) for v in os.getloadavg()]}


def run_plan_check(args: argparse.Namespace, minutes: float, held_out: Path, held_cache: Path) -> None:
    """`edgekd plan --minutes M` on the training images, then the plan's commands as a user runs them (each timed),
    and the run evaluated like every point: does a plan fit its budget on this machine, and what does it buy?
    Written to RESULTS/plan_check-<M>min.json (once: delete it to measure again)."""
    from edgekd._io import atomic_write_json

    out = args.results / f"plan_check-{minutes:g}min.json"
    if out.is_file():
        return
    work = Path(args.work) / f"plan-{minutes:g}min"
    if work.exists():  # a plan half run: its timings would be partial
        shutil.rmtree(work)
    log = Path(args.work) / "logs.txt"
    plan_s = edgekd("plan", "--data", str(Path(args.data) / "train"), "--minutes", f"{minutes:g}", "--out",
                    str(work), "--teacher", args.teacher, "--random-teacher", "--device", "cpu", log=log)
    plan = json.loads((work / "plan.json").read_text())
    seconds = []
    for command in plan["commands"]:  # "edgekd cache ...", "edgekd distill ...": run with this interpreter
        words = shlex.split(command)
        seconds.append(edgekd(*words[1:], "--no-progress", log=log))
    evaluation = evaluate(args, work / "run", held_out, held_cache, work / "eval.json", Path(args.work))
    p = plan["plan"]
    atomic_write_json(out, {
        "minutes": minutes, "host": host_cpu(), "teacher": f"{args.teacher} (random weights, seeded)",
        "plan_seconds": round(plan_s, 1), "speeds": plan["speeds"], "commands": plan["commands"],
        "plan": {k: p[k] for k in ("images", "views", "epochs", "img_size", "est_cache_s", "est_train_s")},
        "cache_seconds": round(seconds[0], 1), "train_seconds": round(seconds[1], 1),
        "wall_seconds": round(plan_s + sum(seconds), 1), "trained": evaluation,
        "load_after": [round(v, 2) for v in os.getloadavg()]})


def host_cpu() -> str:
    from edgekd.cpu import cpu_facts, describe

    return f"{describe(cpu_facts())}, {os.cpu_count()} cores"


# --- results --------------------------------------------------------------------------------------------------------

def done_keys(path: Path) -> set[str]:
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()} if path.is_file() \
        else set()


def append_result(path: Path, row: dict[str, Any]) -> None:
    """Rewrite the JSONL with the new row (atomic: a killed run never leaves half a line)."""
    from edgekd._io import atomic_write_text

    old = path.read_text() if path.is_file() else ""
    atomic_write_text(path, old + json.dumps(row) + "\n")


def tables(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's tables: per grid and factor, the rows that differ from the grid's centre in that factor only
    (matched by settings, whatever a row was run as), then the budget points; each sorted by wall time."""
    out = []
    for grid, spec in GRIDS.items():
        centre = spec["centre"]
        for factor in spec["factors"]:
            sel = [r for r in rows if all(settings(r)[k] == centre[k] for k in SETTINGS if k != factor)]
            if len(sel) >= 2:
                out.append({"grid": grid, "factor": factor, "rows": sorted(sel, key=lambda r: r["wall_seconds"])})
    budget = [r for r in rows if r["factor"] == "budget"]
    if budget:
        out.append({"grid": None, "factor": "budget",
                    "rows": sorted(budget, key=lambda r: (r["student"], r["wall_seconds"]))})
    return out


def describe_centre(grid: str) -> str:
    c = GRIDS[grid]["centre"]
    return (f"{c['images']} images x {c['views']} view(s), {c['epochs']} epochs, {c['img_size']} px, {c['student']}, "
            f"loss {c['loss']}, augmentation {c['augment']}")


def student_speed(results: Path) -> dict[str, Any] | None:
    """{student: speed-up over the teacher at fp32 on the same backend, batch 1} from `--speed`'s bench run."""
    path = results / "speed" / "results.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    rows = [r for r in doc["rows"] if r["status"] == "ok" and r["precision"] == "fp32" and r["batch"] == 1]
    teacher = next(r for r in rows if r["teacher"])
    return {"backend": teacher["backend"], "threads": teacher["threads"], "teacher": teacher["model"],
            "teacher_p50_ms": teacher["latency_ms"]["p50"],
            "students": {r["model"]: {"p50_ms": r["latency_ms"]["p50"], "img_size": r["img_size"][0],
                                      "speedup_vs_teacher": r["speedup_vs_teacher"]}
                         for r in rows if not r["teacher"]}}


def plan_checks(results: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("plan_check-*min.json"))]


def report(results: Path) -> None:
    """results.md (one table per grid factor, then the budget points), results.json and one plot per metric vs
    wall time, from results.jsonl (and the student speeds of `--speed`)."""
    from edgekd._io import atomic_write_json, atomic_write_text
    rows = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines() if line.strip()]
    host = rows[0].get("host") if rows else host_cpu()
    lines = ["# Fidelity study", "", f"Host: {host}. Teacher: {rows[0].get('teacher') if rows else '?'}. Held-out: "
             f"{rows[0]['trained']['images'] if rows else '?'} CIFAR-10 test images never cached for training. "
             "Written by `benchmarks/fidelity_study.py --report`.", ""]
    found = tables(rows)
    for table in found:
        if table["grid"]:
            lines += [f"## {table['factor']} (grid {table['grid']}: centre {describe_centre(table['grid'])})", ""]
        else:
            lines += ["## budget (the default recipe against wall time; settings as listed)", ""]
        lines += ["| images | views | epochs | px | student | loss | augment | cache s | train s | R@1 | R@5 | "
                  "centred cos | cos | untrained R@1 | untrained centred cos |", "|" + "---|" * 15]
        for r in table["rows"]:
            t, u = r["trained"], r["untrained"]
            slow = " †" if r.get("timing_note") else ""
            lines.append(f"| {r['images']} | {r['views']} | {r['epochs']} | {r['img_size']} | {r['student']} | "
                         f"{r['loss']} | {settings(r)['augment']} | {r['cache_seconds']:.0f} | "
                         f"{r['train_seconds']:.0f}{slow} | {100 * t['retrieval_at_1']:.1f}% | "
                         f"{100 * t['retrieval_at_5']:.1f}% | {t['centred_cosine']:.3f} | {t['mean_cosine']:.3f} | "
                         f"{100 * u['retrieval_at_1']:.1f}% | {u['centred_cosine']:.3f} |")
        lines.append("")
    speed = student_speed(results)
    if speed:
        lines += [f"## Student speed ({speed['backend']} fp32, batch 1, {speed['threads']} threads; "
                  "[speed/results.md](speed/results.md), `--speed`)", "",
                  "| model | input px | p50 ms | x faster than the teacher |", "|---|---|---|---|",
                  f"| {speed['teacher']} | 224 | {speed['teacher_p50_ms']:.2f} | 1.0x |"]
        lines += [f"| {name} | {s['img_size']} | {s['p50_ms']:.2f} | {s['speedup_vs_teacher']:.1f}x |"
                  for name, s in speed["students"].items()]
        lines.append("")
    checks = plan_checks(results)
    if checks:
        lines += ["## Planner check (`edgekd plan --minutes M`, then its commands as printed, each timed; "
                  "`--plan-check`)", "",
                  "| budget min | planned images x epochs | estimated cache + train min | measured plan + cache + "
                  "train min | R@1 | R@5 | centred cos |", "|---|---|---|---|---|---|---|"]
        for c in checks:
            p, t = c["plan"], c["trained"]
            lines.append(f"| {c['minutes']:g} | {p['images']} x {p['epochs']} | {p['est_cache_s'] / 60:.1f} + "
                         f"{p['est_train_s'] / 60:.1f} | {c['plan_seconds'] / 60:.1f} + {c['cache_seconds'] / 60:.1f} "
                         f"+ {c['train_seconds'] / 60:.1f} = **{c['wall_seconds'] / 60:.1f}** | "
                         f"{100 * t['retrieval_at_1']:.1f}% | {100 * t['retrieval_at_5']:.1f}% | "
                         f"{t['centred_cosine']:.3f} |")
        lines.append("")
    notes = sorted({r["timing_note"] for r in rows if r.get("timing_note")})
    lines += [f"† {n}" for n in notes] + ([""] if notes else [])
    atomic_write_text(results / "results.md", "\n".join(lines))
    atomic_write_json(results / "results.json", {
        "host": host, "grids": GRIDS, "speed": speed, "plan_checks": checks,
        "rows": [{**r, **settings(r)} for r in rows],
        "tables": [{"grid": t["grid"], "factor": t["factor"], "keys": [r["key"] for r in t["rows"]],
                    "centre": next((r["key"] for r in t["rows"] if t["grid"] and
                                    settings(r) == GRIDS[t["grid"]]["centre"]), None)} for t in found]})
    plot(found, results, checks)


def plot(found: list[dict[str, Any]], results: Path, checks: list[dict[str, Any]] = ()) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    targets = {"retrieval_at_1": 0.5, "centred_cosine": 0.8}  # issue 17's target, within 60 minutes
    for metric, label in (("retrieval_at_1", "retrieval@1"), ("centred_cosine", "centred cosine")):
        fig, ax = plt.subplots(figsize=(9, 5.5))
        drawn: set[str] = set()  # a factor's point that is also a budget point is drawn once, with its factor
        for table in found:
            centre = GRIDS[table["grid"]]["centre"] if table["grid"] else None
            series = [(None, table["rows"])] if centre else \
                [(s, [r for r in table["rows"] if r["student"] == s]) for s in dict.fromkeys(
                    r["student"] for r in table["rows"])]
            for student, sel in series:
                if centre:  # a factor's points are alternatives to its centre (drawn once per grid, below)
                    sel = [r for r in sel if settings(r) != centre]
                    drawn.update(r["key"] for r in sel)
                else:
                    sel = [r for r in sel if r["key"] not in drawn]
                if not sel:
                    continue
                xs, ys = [r["wall_seconds"] / 60 for r in sel], [r["trained"][metric] for r in sel]
                name = f"{table['factor']} ({table['grid']})" if centre else f"budget, {student}"
                # a student's budget points trace its time curve
                (line,) = ax.plot(xs, ys, "o" if centre else "o-", ms=6, label=name)
                draw_split(ax, ys, [r["cache_seconds"] / 60 for r in sel], xs, line.get_color())
                for r, x, y in zip(sel, xs, ys):
                    ax.annotate(point_label(r, centre), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        for (grid, spec), marker in zip(GRIDS.items(), "*X"):
            row = next((r for t in found for r in t["rows"] if settings(r) == spec["centre"]), None)
            if row:
                x, y = row["wall_seconds"] / 60, row["trained"][metric]
                ax.plot(x, y, "k" + marker, ms=10, label=f"centre ({grid})")
                draw_split(ax, [y], [row["cache_seconds"] / 60], [x], "k")
        for c in checks:  # a plan run as printed: its wall time includes the planning
            x, y = c["wall_seconds"] / 60, c["trained"][metric]
            ax.plot(x, y, "rD", ms=8, label=f"edgekd plan --minutes {c['minutes']:g}, run as printed")
            draw_split(ax, [y], [(c["plan_seconds"] + c["cache_seconds"]) / 60], [x], "r")
            p = c["plan"]
            ax.annotate(f"{p['images']}x{p['views']}v {p['epochs']}ep", (x, y), textcoords="offset points",
                        xytext=(-70, -12), fontsize=7)
        ax.axhline(targets[metric], color="0.6", ls="--", lw=1)
        ax.set_xlabel("wall minutes on this CPU: teacher cache (tick) + training (bar) = total (dot)")
        ax.set_ylabel(f"{label} among the held-out images")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(results / f"{metric}.png", dpi=110)
        plt.close(fig)


def draw_split(ax: Any, ys: list[float], caches: list[float], totals: list[float], color: Any) -> None:
    """Under each point, its wall time split: a tick at the teacher-cache minutes, a bar from there to the total (the
    training minutes)."""
    ax.hlines(ys, caches, totals, colors=color, lw=2, alpha=0.35)
    ax.plot(caches, ys, "|", color=color, ms=9)


def point_label(r: dict[str, Any], centre: dict[str, Any] | None = None) -> str:
    """What a point changes from `centre`, in a few characters; without a centre (budget points) its images, views,
    epochs and loss, and its student and augmentation where not the default grid's."""
    fmt = {"images": "{} img", "views": "K={}", "epochs": "{} ep", "img_size": "{} px", "student": "{}",
           "loss": "{}", "augment": "aug {}"}
    s = settings(r)
    if centre is None:
        extra = [fmt[k].format(s[k]) for k in ("student", "augment") if s[k] != CENTRE[k]]
        return " ".join([f"{s['images']}x{s['views']}v {s['epochs']}ep {s['loss']}", *extra])
    changed = [fmt[k].format(s[k]) for k in SETTINGS if s[k] != centre[k]]
    return ", ".join(changed) or "centre"


def run_speed(args: argparse.Namespace) -> None:
    """`edgekd bench` of the teacher and the default grid's students at its resolution: fp32, batch 1, all cores,
    one backend (onnxruntime), into RESULTS/speed."""
    spec = GRIDS["default"]
    work = Path(args.work) / "speed"  # bench exports the models there too (not results to keep)
    edgekd("bench", "--random-teacher", "--teacher", args.teacher, *spec["factors"]["student"], "--img-size",
           str(spec["centre"]["img_size"]), "--backend", "onnxruntime", "--teacher-precisions", "fp32", "--batch",
           "1", "--warmup-s", "1", "--min-time-s", "3", "--out", str(work), log=Path(args.work) / "logs.txt")
    (args.results / "speed").mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "results.md", "latency.png", "throughput.png"):
        if (work / name).is_file():
            shutil.copyfile(work / name, args.results / "speed" / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="cifar10-images folder (train/ and test/)")
    ap.add_argument("--work", default=os.environ.get("EDGEKD_WORK", "/tmp/edgekd-fidelity"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--grid", choices=list(GRIDS), default="default", help="which centre the factors vary around")
    ap.add_argument("--factor", help="only the grid's centre and this factor's points")
    ap.add_argument("--only", nargs="+", metavar="FACTOR=VALUE", default=[],
                    help="only these points of the grid, e.g. student=efficientvit_b1 (values as in --list)")
    ap.add_argument("--budget-point", nargs="+", metavar="K=V,K=V", default=[],
                    help="points off the grids, e.g. images=20000,views=1,epochs=20 (factor 'budget'); alone: only "
                         "them")
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--teacher", default="ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--budget-min", type=float, default=0, help="stop starting new points after this many minutes")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--list", action="store_true", help="print the points and exit")
    ap.add_argument("--plan-check", type=float, metavar="MINUTES",
                    help="also run `edgekd plan --minutes MINUTES` and its commands, timed (after the points); "
                         "alone: only that")
    ap.add_argument("--speed", action="store_true", help="only bench the students against the teacher, then report")
    ap.add_argument("--report", action="store_true", help="only write results.md + plots from results.jsonl")
    args = ap.parse_args(argv)
    if args.factor and args.factor not in GRIDS[args.grid]["factors"]:
        ap.error(f"--factor {args.factor}: grid {args.grid} varies {', '.join(GRIDS[args.grid]['factors'])}")
    alone = (args.budget_point or args.plan_check) and not (args.only or args.factor)  # no grid unless asked
    grid = [] if alone else points(args.grid, args.factor)
    todo = [p for p in grid if not args.only or
            (p["factor"] != "centre" and f"{p['factor']}={p[p['factor']]}" in args.only)]
    todo += [budget_point(spec) for spec in args.budget_point]
    if args.list:
        for p in todo:
            print(point_key(p), json.dumps(p))
        return 0
    args.results.mkdir(parents=True, exist_ok=True)
    if args.speed:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        run_speed(args)
    if args.report or args.speed:
        report(args.results)
        return 0
    if not args.data or not (Path(args.data) / "train").is_dir():
        ap.error("--data: the cifar10-images folder (with train/ and test/); unpack ../shared/assets first")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    held_out = balanced_subset(Path(args.data) / "test", args.held_out, work / "data" / f"test-{args.held_out}")
    held_cache = work / "caches" / f"held-out-{args.held_out}"
    build_cache(args, held_out, 1, held_cache, work)
    jsonl, t0 = args.results / "results.jsonl", time.perf_counter()
    for p in todo:
        if point_key(p) in done_keys(jsonl):
            continue
        if args.budget_min and time.perf_counter() - t0 > args.budget_min * 60:
            print(f"budget of {args.budget_min} min spent; re-run to continue", file=sys.stderr)
            break
        print(f"point {point_key(p)}: {json.dumps(p)}", file=sys.stderr, flush=True)
        row = run_point(args, p, held_out, held_cache)
        append_result(jsonl, {**row, "host": host_cpu(), "teacher": f"{args.teacher} (random weights, seeded)"})
    if args.plan_check:
        run_plan_check(args, args.plan_check, held_out, held_cache)
    report(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
