"""Plots of a results document (matplotlib, imported lazily, Agg backend): latency bars at the smallest batch,
throughput bars at the largest, and a latency vs teacher-fidelity/accuracy Pareto plot when the bundles carry
eval results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgekd._io import atomic_path

# eval keys, preferred first, for the Pareto plot's y axis (matched as substrings of flattened key names)
EVAL_KEYS = ("fidelity", "zero_shot_top1", "zeroshot_top1", "top1", "accuracy", "acc")


def _plt() -> Any:
    from edgekd._optional import require

    mpl = require("matplotlib", purpose="bench plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(r: dict[str, Any]) -> str:
    return f"{r['backend']} {r['precision']} t{r['threads']}"


def _bars(plt: Any, rows: list[dict[str, Any]], value: Any, xlabel: str, title: str, path: Path,
          log: bool = False) -> Path:
    """One horizontal bar per row (model, backend, precision, threads), coloured by backend, teacher rows first."""
    rows = sorted(rows, key=lambda r: (not r.get("teacher"), r["model"], r["backend"], r["threads"]))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    colors = {b: f"C{i}" for i, b in enumerate(backends)}
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.28 * len(rows)))
    ys = range(len(rows))
    vals = [value(r) for r in rows]
    ax.barh(list(ys), vals, color=[colors[r["backend"]] for r in rows])
    ax.set_yticks(list(ys))
    ax.set_yticklabels([f"{r['model']}  [{r['precision']}, t{r['threads']}]" for r in rows], fontsize=7)
    ax.invert_yaxis()
    for y, v in zip(ys, vals):
        ax.annotate(f"{v:.3g}", (v, y), fontsize=6, xytext=(2, 0), textcoords="offset points", va="center")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()], labels=list(colors),
              fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def eval_metric(ev: dict[str, Any] | None) -> tuple[str, float] | None:
    """The bundle's headline quality number: (key, value) by EVAL_KEYS preference, from a possibly nested dict."""
    if not isinstance(ev, dict):
        return None
    flat: dict[str, float] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, int | float) and not isinstance(v, bool):
                flat[f"{prefix}{k}"] = float(v)

    walk(ev, "")
    for want in EVAL_KEYS:
        for k, v in flat.items():
            if want in k.lower():
                return k, v
    return None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower latency x and higher quality y are better)."""
    return [i for i, (x, y) in enumerate(points)
            if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in points)]


def plot_results(doc: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write latency.png, throughput.png (and pareto.png when rows carry eval results) -> {name: path}."""
    out = Path(out_dir)
    rows = [r for r in doc["rows"] if r["status"] == "ok" and r.get("mode", "model") == "model"]
    if not rows:
        return {}
    plt = _plt()
    small, large = min(r["batch"] for r in rows), max(r["batch"] for r in rows)
    paths = {
        "latency": _bars(plt, [r for r in rows if r["batch"] == small], lambda r: r["latency_ms"]["p50"],
                         "p50 latency (ms, log scale)", f"Latency at batch {small}", out / "latency.png", log=True),
        "throughput": _bars(plt, [r for r in rows if r["batch"] == large], lambda r: r["throughput_ips"],
                            "images / s", f"Throughput at batch {large}", out / "throughput.png"),
    }
    scored = [(r, m) for r in rows if r["batch"] == small and (m := eval_metric(r.get("eval")))]
    if scored:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        pts = [(r["latency_ms"]["p50"], m[1]) for r, m in scored]
        front = set(pareto_front(pts))
        for i, ((r, _), (x, y)) in enumerate(zip(scored, pts)):
            ax.scatter([x], [y], marker="o" if i in front else "x", color="C0" if i in front else "C7")
            ax.annotate(f"{r['model']} ({_label(r)})", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        fx = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "C0--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(f"p50 latency at batch {small} (ms, log)")
        ax.set_ylabel(scored[0][1][0])
        ax.set_title("Latency vs quality (Pareto front dashed)")
        fig.tight_layout()
        with atomic_path(out / "pareto.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        paths["pareto"] = out / "pareto.png"
    return paths
