"""Label scoring and top-k (issue 30): LabelSet.predict() before and after, on random unit label embeddings.

    python benchmarks/scoring.py [--labels 100,1000,10000] [--dim 512] [--top-k 5] [--iters 3000]
                                 [--busy 2] [--out benchmarks/results/scoring]

Four tables, all at batch 1, p50 in microseconds (perf_counter around each call, after a warm-up):
  * predict: the code before issue 30 (`reference_predict`: einsum cosines, a softmax over all C classes, a stable
    argsort of all C, a Prediction per returned class) against LabelSet.predict() now, interleaved call by call so
    that both see the same load; their answers are checked first (same classes in the same order, scores to 1e-6,
    probs to 1e-4 relative: the two round cosines differently, and logit_scale amplifies that in the softmax);
  * parts: what the new path spends on cosines, the top-k selection and the softmax, next to the alternatives
    measured for each (einsum / BLAS cosines; argsort / argpartition; float64, a preallocated buffer);
  * selection: top-k of one row by each method, for several k (where the thresholds of top_k_indices come from);
  * contention: the cosine alternatives with `--busy` processes spinning on the CPU (a camera app where the model
    and other threads keep the cores busy): a BLAS call wakes OpenBLAS's thread pool, whose threads then wait for
    a core (the reason small batches do not use BLAS's matrix product).
Writes OUT.json and OUT.md with the host CPU (edgekd.cpu), numpy and its BLAS, and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench.timer import latency_stats
from edgekd.cpu import cpu_facts
from edgekd.cpu import describe as describe_cpu
from edgekd.labelpack import LabelPack
from edgekd.runtime.labels import (
    ARGMAX_TOP_K,
    ARGSORT_BELOW,
    LabelSet,
    Prediction,
    _top_k_argmax,
    _top_k_partition,
    top_k_indices,
    top_probs,
)

LOGIT_SCALE = 100.0  # CLIP's
ScoresFn = Callable[[LabelSet, np.ndarray], tuple[np.ndarray, np.ndarray]]


def reference_scores(labels: LabelSet, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LabelSet.scores() before issue 30: emb [B, D] -> (cosine [B, C], softmax over all C [B, C])."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    emb_t = labels._emb_t  # [D, C], cached by the LabelSet then as now
    cos = np.einsum("bd,dc->bc", emb, emb_t) if emb.shape[0] <= 16 else emb @ emb_t
    logits = labels.logit_scale * cos
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return cos, e / e.sum(axis=1, keepdims=True)


def reference_predict(labels: LabelSet, emb: np.ndarray, top_k: int = 5,
                      scores: ScoresFn = reference_scores) -> list[list[Prediction]]:
    """LabelSet.predict() before issue 30, the straightforward definition: a full softmax, a stable argsort of all
    C classes, then thresholds. emb [B, D] -> B lists of top_k predictions. `scores(labels, emb)` -> (cosine, prob)
    [B, C] (tests pass LabelSet.scores, so that both sides start from the same float32 cosines)."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    cos, prob = scores(labels, emb)
    k = min(int(top_k), len(labels.pack))
    order = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    names = labels.pack.class_names
    out = []
    for b in range(cos.shape[0]):
        preds = [Prediction(names[i], float(cos[b, i]), float(prob[b, i]), int(i)) for i in order[b]]
        best = preds[0]
        th = labels.thresholds[best.index]
        if not np.isnan(th) and (best.score if labels.threshold_on == "score" else best.prob) < th:
            preds = [Prediction(labels.unknown_label, best.score, best.prob, -1)] + preds[: int(top_k) - 1]
        out.append(preds)
    return out


def random_labels(c: int, d: int, seed: int = 0) -> LabelSet:
    """A label set of `c` random unit embeddings [c, d] (scoring cost does not depend on what they mean)."""
    emb = np.random.default_rng(seed).normal(size=(c, d)).astype(np.float32)
    return LabelSet.from_pack(LabelPack([f"class {i}" for i in range(c)], emb, meta={"logit_scale": LOGIT_SCALE}))


def random_query(d: int, batch: int = 1, seed: int = 1) -> np.ndarray:
    """[batch, d] float32 unit rows: image embeddings."""
    q = np.random.default_rng(seed).normal(size=(batch, d)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def interleaved(fns: dict[str, Callable[[], Any]], iters: int, warmup: int) -> dict[str, dict[str, float]]:
    """Time each callable once per round, `warmup` untimed rounds then `iters` timed ones -> {name: stats in us}."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
    return {name: {k: (round(v * 1e3, 2) if k != "n" else v) for k, v in latency_stats(ts).items()}
            for name, ts in times.items()}


def check_same(old: list[list[Prediction]], new: list[list[Prediction]]) -> None:
    """Raise SystemExit unless both give the same classes, in order, with scores within 1e-6 and probs within 1e-4
    relative: the two compute cosines differently (einsum, dot products), and a float32 rounding difference `d` of a
    cosine moves probabilities by up to 2 * logit_scale * d relative (3e-5 for d = 1.5e-7)."""
    for a, b in zip(old, new, strict=True):
        if [(p.label, p.index) for p in a] != [(p.label, p.index) for p in b]:
            raise SystemExit(f"the new predict() answers differently: {a} vs {b}")
        if not np.allclose([p.score for p in a], [p.score for p in b], rtol=0, atol=1e-6) \
                or not np.allclose([p.prob for p in a], [p.prob for p in b], rtol=1e-4, atol=1e-9):
            raise SystemExit(f"scores or probs differ: {a} vs {b}")


def predict_row(c: int, d: int, top_k: int, iters: int, warmup: int) -> dict[str, Any]:
    """Old vs new predict() at batch 1 for `c` labels."""
    labels, q = random_labels(c, d), random_query(d)
    check_same(reference_predict(labels, q, top_k), labels.predict(q, top_k))
    st = interleaved({"old": lambda: reference_predict(labels, q, top_k), "new": lambda: labels.predict(q, top_k)},
                     iters, warmup)
    return {"labels": c, "dim": d, "top_k": top_k, "old_us": st["old"], "new_us": st["new"],
            "speedup_p50": round(st["old"]["p50"] / st["new"]["p50"], 2)}


def part_fns(labels: LabelSet, q: np.ndarray, k: int) -> dict[str, Callable[[], Any]]:
    """The pieces of scoring one row, new path and alternatives, as callables."""
    cos = labels._cosine(q)[0]
    neg, scale, top = -cos, labels.logit_scale, top_k_indices(cos, k)
    c64 = cos.astype(np.float64)
    buf = np.empty_like(cos)

    def softmax_full() -> np.ndarray:  # the old way, one row
        e = np.exp(scale * cos - (scale * cos).max())
        return e / e.sum()

    def softmax_f64() -> np.ndarray:
        e = scale * c64
        e -= e[top[0]]
        np.exp(e, out=e)
        return e[top] / e.sum()

    def softmax_buffer() -> np.ndarray:
        e = np.multiply(cos, scale, out=buf)
        e -= e[top[0]]
        np.exp(e, out=e)
        return e[top] / e.sum()

    def argpartition() -> np.ndarray:
        part = np.argpartition(neg, k) if k < neg.size else np.arange(neg.size)
        sel = np.sort(part[:k])
        return sel[np.argsort(neg[sel], kind="stable")]

    return {
        "cosine: per-row dot (new)": lambda: labels._cosine(q),
        "cosine: einsum (old)": lambda: np.einsum("bd,dc->bc", q, labels._emb_t),
        "top-k: top_k_indices (new)": lambda: top_k_indices(cos, k),
        "top-k: stable argsort of C (old)": lambda: np.argsort(neg, kind="stable")[:k],
        "top-k: argpartition + sort k": argpartition,
        "softmax: full over C, allocating (old)": softmax_full,
        "softmax: k probs, float32 in place (new)": lambda: top_probs(cos, top, scale),
        "softmax: k probs, float64": softmax_f64,
        "softmax: k probs, preallocated buffer": softmax_buffer,
        "exp over C alone (float32)": lambda: np.exp(cos),
        "probs + k Predictions (new)": lambda: labels._answer(cos, top, k),
    }


def parts_row(c: int, d: int, top_k: int, iters: int, warmup: int) -> dict[str, Any]:
    labels, q = random_labels(c, d), random_query(d)
    us = interleaved(part_fns(labels, q, top_k), iters, warmup)
    # alone and last: OpenBLAS's woken threads spin on for a while and would slow whatever ran after them
    us.update(interleaved({"cosine: BLAS matmul": lambda: q @ labels._emb_t}, iters, warmup))
    time.sleep(1.0)  # ... so they get to sleep before the next measurement
    return {"labels": c, "dim": d, "top_k": top_k, "us": us}


def selection_row(c: int, ks: list[int], iters: int, warmup: int) -> dict[str, Any]:
    """Top-k of one row of `c` cosines, for each k: the two selections top_k_indices() chooses between (argmax
    passes up to ARGMAX_TOP_K, np.partition beyond), argpartition + a sort of k, and the stable argsort of all C
    (which top_k_indices() uses below ARGSORT_BELOW classes)."""
    cos = random_labels(c, 64)._cosine(random_query(64))[0]
    neg = -cos
    rows = {}
    for k in (k for k in ks if k < c):
        def argpartition(k: int = k) -> np.ndarray:
            sel = np.sort(np.argpartition(neg, k)[:k])
            return sel[np.argsort(neg[sel], kind="stable")]

        rows[str(k)] = interleaved({"argmax passes": lambda k=k: _top_k_argmax(cos, k),
                                    "np.partition + candidates": lambda k=k: _top_k_partition(cos, k),
                                    "argpartition + sort k": argpartition,
                                    "stable argsort of C": lambda k=k: np.argsort(neg, kind="stable")[:k]},
                                   iters, warmup)
    return {"labels": c, "us": rows}


def contention_row(c: int, d: int, busy: int, iters: int, warmup: int) -> dict[str, Any]:
    """Cosine alternatives while `busy` processes spin (started here, killed after)."""
    labels, q = random_labels(c, d), random_query(d)
    fns = {"per-row dot (new)": lambda: labels._cosine(q),
           "einsum (old)": lambda: np.einsum("bd,dc->bc", q, labels._emb_t),
           "BLAS matmul": lambda: q @ labels._emb_t}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.5)
        st = interleaved(fns, iters, warmup)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return {"labels": c, "dim": d, "busy": busy, "us": st}


def environment() -> dict[str, Any]:
    facts = cpu_facts()
    return {"cpu": describe_cpu(facts), "cpu_facts": facts, "cores": _cores(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": _blas(), "loadavg_1m_start": round(os.getloadavg()[0], 2)}


def _blas() -> str:
    """numpy's BLAS, 'name version' (numpy >= 1.26 reports it)."""
    try:
        cfg = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.26: no mode argument
        return "unknown"
    blas = cfg.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_report(res: dict[str, Any], out: Path) -> None:
    from edgekd._io import atomic_write_json, atomic_write_text

    atomic_write_json(out.with_suffix(".json"), res)
    env = res["environment"]
    lines = [f"# Label scoring: LabelSet.predict() before and after issue 30, batch 1, top-{res['top_k']}", "",
             f"CPU: {env['cpu']} ({env['cores']} cores), numpy {env['numpy']} ({env['blas']}), Python "
             f"{env['python']}; D = {res['dim']}, random unit label embeddings; {res['iters']} interleaved "
             f"iterations; load average {env['loadavg_1m_start']} at the start, {res['loadavg_1m_end']} at the end "
             "(a shared machine: compare the two columns of one table, measured side by side).", "",
             "## predict(): microseconds per call", "",
             "| labels | old p50 | new p50 | speedup p50 | old p90 | new p90 | old p99 | new p99 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["predict"]:
        o, n = r["old_us"], r["new_us"]
        lines.append(f"| {r['labels']:,} | {o['p50']} | {n['p50']} | {r['speedup_p50']}x | {o['p90']} | {n['p90']} "
                     f"| {o['p99']} | {n['p99']} |")
    cs = [r["labels"] for r in res["parts"]]
    lines += ["", "## Parts: p50 microseconds (one row; new = what predict() runs now)", "",
              "| part | " + " | ".join(f"C = {c:,}" for c in cs) + " |", "|---" * (len(cs) + 1) + "|"]
    for name in res["parts"][0]["us"]:
        lines.append(f"| {name} | " + " | ".join(str(r["us"][name]["p50"]) for r in res["parts"]) + " |")
    lines += ["", f"## Top-k selection of one row: p50 microseconds (top_k_indices: stable argsort below "
              f"{ARGSORT_BELOW} classes, argmax passes up to k = {ARGMAX_TOP_K}, np.partition beyond)", "",
              "| labels | k | argmax passes | np.partition + candidates | argpartition + sort k | "
              "stable argsort of C |",
              "|---|---|---|---|---|---|"]
    for r in res["selection"]:
        for k, st in r["us"].items():
            lines.append(f"| {r['labels']:,} | {k} | " + " | ".join(str(v["p50"]) for v in st.values()) + " |")
    if res["contention"]:
        lines += ["", f"## Cosines with {res['busy']} busy processes on the CPU: microseconds, p50 / p99", "",
                  "| cosine | " + " | ".join(f"C = {r['labels']:,}" for r in res["contention"]) + " |",
                  "|---" * (len(res["contention"]) + 1) + "|"]
        for name in res["contention"][0]["us"]:
            lines.append(f"| {name} | " + " | ".join(f"{r['us'][name]['p50']} / {r['us'][name]['p99']}"
                                                    for r in res["contention"]) + " |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", default="100,1000,10000", help="label set sizes C, comma-separated")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--busy", type=int, default=_cores(), help="spinning processes for the contention table (0: none)")
    ap.add_argument("--busy-iters", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring"))
    args = ap.parse_args()
    cs = [int(c) for c in args.labels.split(",")]
    env = environment()
    res = {"dim": args.dim, "top_k": args.top_k, "iters": args.iters, "busy": args.busy, "environment": env,
           "predict": [predict_row(c, args.dim, args.top_k, args.iters, args.warmup) for c in cs],
           "parts": [parts_row(c, args.dim, args.top_k, args.iters, args.warmup) for c in cs],
           "selection": [selection_row(c, [1, 5, ARGMAX_TOP_K, ARGMAX_TOP_K + 1, 64], args.iters // 3, args.warmup)
                         for c in sorted({*cs, ARGSORT_BELOW})],
           "contention": [contention_row(c, args.dim, args.busy, args.busy_iters, 20) for c in cs] if args.busy
           else []}
    res["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
