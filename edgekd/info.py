"""Describe any edgekd artifact: a registry of describers keyed by the artifact's "format" field.

numpy-only (no torch): `describe(path)` -> JSON-able dict, `format_text(d)` -> human-readable text. Adding a
format means adding a `@describer("edgekd.xyz")` function, not another branch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import read_json

Describer = Callable[[Path, dict[str, Any]], dict[str, Any]]
DESCRIBERS: dict[str, Describer] = {}

RUN_FORMAT = "edgekd.run"  # run dirs have no "format" field; they are recognised by config.json's "edgekd" block


def describer(fmt: str) -> Callable[[Describer], Describer]:
    """Register `fn(path, doc) -> dict` as the describer of artifacts whose format is `fmt`."""

    def deco(fn: Describer) -> Describer:
        DESCRIBERS[fmt] = fn
        return fn

    return deco


def _read_json_obj(path: Path) -> dict[str, Any] | None:
    try:
        obj = read_json(path)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _npz_meta(path: Path) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"])) if "meta" in z.files else None
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


def detect(path: str | os.PathLike) -> tuple[str, Path, dict[str, Any]]:
    """-> (format, the file that says so, its JSON/meta). Raises EdgekdError for anything unknown."""
    path = Path(path)
    if not path.exists():
        raise EdgekdError(f"{path}: no such file or folder")
    candidates: list[Path]
    if path.is_dir():
        candidates = [path / n for n in ("manifest.json", "edgekd.json", "config.json", "results.json")]
    else:
        candidates = [path]
    for f in candidates:
        if not f.is_file():
            continue
        if f.suffix == ".npz":
            meta = _npz_meta(f)
            if meta and meta.get("format") in DESCRIBERS:
                return meta["format"], f, meta
            continue
        doc = _read_json_obj(f) if f.suffix == ".json" else None
        if doc is None:
            continue
        fmt = doc.get("format") or doc.get("schema")
        if fmt in DESCRIBERS:
            return fmt, f, doc
        if isinstance(doc.get("edgekd"), dict):
            return RUN_FORMAT, f, doc
    raise EdgekdError(f"{path}: not an edgekd cache, run dir, bundle, label pack (.npz) or bench results.json "
                      "(looked for manifest.json, edgekd.json, config.json with an 'edgekd' block, results.json)")


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-able description: {"format", "path", ...format-specific fields}."""
    fmt, f, doc = detect(path)
    d = DESCRIBERS[fmt](f, doc)
    return {"format": fmt, "path": str(Path(path)), **d}


def _shapes(folder: Path, names: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for n in names:
        if (folder / n).is_file():
            try:
                a = np.load(folder / n, mmap_mode="r", allow_pickle=False)
                out[n] = {"shape": list(a.shape), "dtype": str(a.dtype)}
            except (OSError, ValueError) as e:
                out[n] = {"error": str(e)}
    return out


def _size_mb(p: Path) -> float | None:
    return round(p.stat().st_size / 2**20, 3) if p.is_file() else None


@describer("edgekd.cache")
def _cache(f: Path, m: dict[str, Any]) -> dict[str, Any]:
    from edgekd.teacher.cache import ARRAYS

    folder = f.parent
    t = m.get("teacher", {})
    ds = m.get("dataset", {})
    d: dict[str, Any] = {
        "version": m.get("version"),
        "complete": m.get("complete"),
        "teacher": {k: t.get(k) for k in ("id", "name", "source", "embed_dim", "logit_scale")},
        "preprocess": m.get("preprocess"),
        "views": m.get("views"),
        "dataset": {k: ds.get(k) for k in ("root", "kind", "num_images", "index_sha256")}
        | {"num_classes": len(ds.get("classes") or []), "classes": (ds.get("classes") or [])[:50]},
        "counts": m.get("counts"),
        "skipped": (m.get("skipped") or [])[:20],
        "captions": m.get("captions"),
        "shard": m.get("shard"),
        "arrays": _shapes(folder, ARRAYS),
        "label_packs": {n: _label_summary(folder / n) for n in ("labels.npz", "labels_simple.npz")
                        if (folder / n).is_file()},
        "versions": m.get("versions"),
        "created": m.get("created"),
    }
    if not m.get("complete"):
        prog = _read_json_obj(folder / "progress.json") or {}
        d["progress"] = {"done": prog.get("done", 0), "of": (m.get("counts") or {}).get("images")}
    return d


def _label_summary(f: Path) -> dict[str, Any]:
    meta = _npz_meta(f) or {}
    return {k: meta.get(k) for k in ("num_classes", "embed_dim", "templates", "teacher_id")}


@describer("edgekd.labels")
def _labels(f: Path, meta: dict[str, Any]) -> dict[str, Any]:
    with np.load(f, allow_pickle=False) as z:
        names = [str(n) for n in z["class_names"]]
        emb = z["embeddings"]
        prompts = json.loads(str(z["prompts"])) if "prompts" in z.files else {}
    per_class = [len(v) for v in prompts.values()] or [0]
    return {
        "version": meta.get("version"),
        "num_classes": len(names),
        "classes": names[:50],
        "embeddings": {"shape": list(emb.shape), "dtype": str(emb.dtype),
                       "unit_rows": bool(np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3))},
        "teacher_id": meta.get("teacher_id"),
        "logit_scale": meta.get("logit_scale"),
        "templates": meta.get("templates"),
        "descriptions_file": meta.get("descriptions_file"),
        "prompts_per_class": {"min": min(per_class), "max": max(per_class)},
        "example_prompts": (prompts.get(names[0], []) if names else [])[:3],
        "created": meta.get("created"),
        "size_mb": _size_mb(f),
    }


@describer(RUN_FORMAT)
def _run(f: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    from edgekd.resize import describe as describe_resize

    folder = f.parent
    e = cfg.get("edgekd", {})
    d = {k: cfg.get(k) for k in ("architecture", "num_features")}
    d.update({
        "student": e.get("student"),
        "resize": describe_resize((e.get("student") or {}).get("preprocess")),
        "teacher": (e.get("teacher") or {}).get("id") if isinstance(e.get("teacher"), dict) else e.get("teacher"),
        "cache": e.get("cache"),
        "epoch": e.get("epoch"),
        "step": e.get("step"),
        "files": {p.name: _size_mb(p) for p in sorted(folder.iterdir()) if p.is_file()},
    })
    metrics = folder / "metrics.csv"
    if metrics.is_file():
        lines = [ln for ln in metrics.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(lines) >= 2:
            d["last_metrics"] = dict(zip(lines[0].split(","), lines[-1].split(",")))
    return d


@describer("edgekd.bundle")
def _bundle(f: Path, b: dict[str, Any]) -> dict[str, Any]:
    folder = f.parent
    keys = ("version", "target", "precision", "input", "output", "embed_dim", "logit_scale", "teacher_id", "student",
            "source_run", "opset", "calibration", "parity", "eval", "versions", "created", "build_seconds")
    from edgekd.cpu import describe as describe_cpu
    from edgekd.runtime.bundle import gate_summary

    d = {"parity_gate": gate_summary(b)}
    host = (b.get("parity") or {}).get("validated_on")
    if host:
        cpu = host.get("cpu") or {}
        d["validated_on"] = {"cpu": describe_cpu(cpu), "vendor": cpu.get("vendor"), "isa_flags": cpu.get("flags"),
                             "backend": f"{host.get('backend')} {host.get('backend_version')}"}
    d.update({k: b.get(k) for k in keys if k in b})
    from edgekd.resize import describe as describe_resize

    d["resize"] = describe_resize(b.get("preprocess"))
    d["files"] = {k: {"name": v, "size_mb": _size_mb(folder / v)} for k, v in (b.get("files") or {}).items() if v}
    return d


@describer("edgekd.bench")
def _bench(f: Path, r: dict[str, Any]) -> dict[str, Any]:
    rows = r.get("rows") or []
    table = []
    for row in rows:
        lat = row.get("latency_ms") or {}
        table.append({k: row.get(k) for k in ("model", "backend", "precision", "batch", "threads", "status")}
                     | {"p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "throughput_ips": row.get("throughput_ips"),
                        "reason": row.get("reason")})
    return {"version": r.get("version"), "environment": r.get("environment"), "num_rows": len(rows),
            "status_counts": {s: sum(1 for x in rows if x.get("status") == s) for s in {x.get("status") for x in rows}},
            "rows": table}


# --------------------------------------------------------------------------------------------------- text


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        s = ", ".join(_fmt_value(x) for x in v[:12])
        return f"[{s}{', ...' if len(v) > 12 else ''}]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items()) + "}"
    return "-" if v is None else str(v)


def _lines(d: dict[str, Any], indent: int = 0) -> list[str]:
    out = []
    pad = "  " * indent
    for k, v in d.items():
        if isinstance(v, dict) and v and indent < 2:
            out.append(f"{pad}{k}:")
            out += _lines(v, indent + 1)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out.append(f"{pad}{k}: ({len(v)})")
            out += [f"{pad}  - {_fmt_value(x)[1:-1]}" for x in v[:30]]
        else:
            out.append(f"{pad}{k}: {_fmt_value(v)}")
    return out


_TITLES = {"edgekd.cache": "teacher cache", "edgekd.labels": "label pack", RUN_FORMAT: "training run",
           "edgekd.bundle": "export bundle", "edgekd.bench": "benchmark results"}


def format_text(d: dict[str, Any]) -> str:
    """Human-readable rendering of a `describe()` dict."""
    body = {k: v for k, v in d.items() if k not in ("format", "path")}
    title = f"{d['path']}: {_TITLES.get(d['format'], d['format'])} ({d['format']})"
    return "\n".join([title, *_lines(body, 1)])
