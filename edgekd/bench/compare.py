"""`edgekd bench --compare A.json B.json`: two result files side by side, rows matched by model, backend,
precision, batch, threads and mode."""

from __future__ import annotations

import os
from typing import Any

from edgekd.bench.report import load_results

KEY = ("model", "backend", "precision", "batch", "threads", "mode")


def _key(r: dict[str, Any]) -> tuple:
    return tuple(r.get(k, "model") if k == "mode" else r.get(k) for k in KEY)


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """-> [{key fields, a_p50, b_p50, p50_ratio (b / a), a_ips, b_ips, a_status, b_status}] over both files' rows."""
    ra = {_key(r): r for r in a["rows"]}
    rb = {_key(r): r for r in b["rows"]}
    out = []
    for k in list(dict.fromkeys([*ra, *rb])):
        x, y = ra.get(k), rb.get(k)

        def p50(r: dict[str, Any] | None) -> float | None:
            return r["latency_ms"]["p50"] if r and r["status"] == "ok" else None

        def ips(r: dict[str, Any] | None) -> float | None:
            return r.get("throughput_ips") if r and r["status"] == "ok" else None

        pa, pb = p50(x), p50(y)
        out.append({**dict(zip(KEY, k)), "a_status": x["status"] if x else "absent",
                    "b_status": y["status"] if y else "absent", "a_p50": pa, "b_p50": pb,
                    "p50_ratio": pb / pa if pa and pb else None, "a_ips": ips(x), "b_ips": ips(y)})
    return out


def _env_line(doc: dict[str, Any]) -> str:
    env = doc.get("environment", {})
    cpu = env.get("cpu", {})
    gpu = env.get("gpu")
    gpu_txt = ", ".join(g["name"] for g in gpu) if isinstance(gpu, list) else gpu
    return f"{cpu.get('model', 'unknown')} ({cpu.get('cores_usable', '?')} cores), GPU {gpu_txt}, " \
           f"{env.get('created', '')}"


def compare_markdown(path_a: str | os.PathLike, path_b: str | os.PathLike) -> str:
    """Markdown table of A vs B (B/A latency ratio < 1 means B is faster)."""
    a, b = load_results(path_a), load_results(path_b)
    rows = compare_rows(a, b)
    lines = [f"A: {path_a} — {_env_line(a)}", f"B: {path_b} — {_env_line(b)}", "",
             "| model | backend | precision | batch | threads | mode | A p50 ms | B p50 ms | B/A | A img/s | B img/s |",
             "|" + "---|" * 11]

    def f(v: float | None, fmt: str = ".2f") -> str:
        return "–" if v is None else format(v, fmt)

    for r in rows:
        pa = f(r["a_p50"]) if r["a_status"] == "ok" else r["a_status"]
        pb = f(r["b_p50"]) if r["b_status"] == "ok" else r["b_status"]
        ratio = f"{r['p50_ratio']:.2f}x" if r["p50_ratio"] else "–"
        lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {f(r['batch'], 'd')} | "
                     f"{f(r['threads'], 'd')} | {r['mode']} | {pa} | {pb} | {ratio} | {f(r['a_ips'], '.1f')} | "
                     f"{f(r['b_ips'], '.1f')} |")
    return "\n".join(lines) + "\n"
