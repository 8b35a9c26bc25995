"""`edgekd eval`: zero-shot (all / seen / unseen), few-shot, long-tail and teacher-fidelity numbers for a run or a
bundle, with the teacher's own numbers on the same images side by side.

    results = evaluate("runs/r1", EvalConfig(data="data/test", unseen=("cat", "dog")))
    print(format_table(results)); append_run_metrics("runs/r1", results)
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd import EdgekdError, __version__
from edgekd._io import atomic_write_text, json_get
from edgekd.evaluation import metrics as M
from edgekd.labelpack import LabelPack, load_label_pack

if TYPE_CHECKING:
    from edgekd.data.index import DatasetIndex
    from edgekd.evaluation.embed import Embeddings, Encoder
    from edgekd.evaluation.sources import Source

log = logging.getLogger(__name__)

FORMAT = "edgekd.eval"
VERSION = 1
METRICS_CSV = "metrics.csv"


@dataclass(frozen=True)
class EvalConfig:
    """Options of one evaluation (mirrors the `edgekd eval` flags)."""

    data: str
    labels: str | None = None  # label pack; default: the run's / bundle's labels.npz
    unseen: tuple[str, ...] = ()  # classes held out of distillation
    split_file: str | None = None  # JSON {"seen": [...], "unseen": [...]} or text, one unseen class per line
    train_index: str | None = None  # cache dir / index.json / dataset -> long-tail buckets
    shots: tuple[int, ...] = (1, 5, 16)
    seed: int = 0
    teacher: dict[str, Any] | None = None  # {name, pretrained, weights_file, random_init}; default: from the run
    teacher_cache: str | None = None  # teacher cache built on --data (no teacher forward passes)
    use_teacher: bool = True
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    backend: str = "auto"  # runtime backend for bundles
    tip_beta: float = M.TIP_BETA
    tip_alpha: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


# --- class split ------------------------------------------------------------------------------------------------


def read_split_file(path: str | os.PathLike) -> tuple[list[str] | None, list[str]]:
    """-> (seen or None, unseen). JSON {"seen": [...], "unseen": [...]} ("seen" optional), or a text file with one
    unseen class per line ('#' comments allowed)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"--split-file {path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise EdgekdError(f"--split-file {path}: not valid JSON ({e.msg} at line {e.lineno})") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("unseen"), list):
            raise EdgekdError(f"--split-file {path}: expected {{\"seen\": [...], \"unseen\": [...]}}")
        seen = obj.get("seen")
        return ([str(c) for c in seen] if isinstance(seen, list) else None), [str(c) for c in obj["unseen"]]
    lines = [ln.strip() for ln in text.splitlines()]
    return None, [ln for ln in lines if ln and not ln.startswith("#")]


def _resolve_split(cfg: EvalConfig, pack: LabelPack, data_classes: list[str]
                   ) -> tuple[list[str], list[str]] | None:
    if cfg.unseen and cfg.split_file:
        raise EdgekdError("pass either --unseen or --split-file, not both")
    if not cfg.unseen and not cfg.split_file:
        return None
    seen, unseen = read_split_file(cfg.split_file) if cfg.split_file else (None, list(cfg.unseen))
    opt = "--split-file" if cfg.split_file else "--unseen"
    unseen = list(dict.fromkeys(c.strip() for c in unseen if c.strip()))
    if not unseen:
        raise EdgekdError(f"{opt}: no unseen classes given")
    if seen is None:
        seen = [c for c in data_classes if c not in unseen]
    both = sorted(set(seen) & set(unseen))
    if both:
        raise EdgekdError(f"{opt}: classes both seen and unseen: {', '.join(both[:5])}")
    for name, group in (("unseen", unseen), ("seen", seen)):
        missing = [c for c in group if c not in pack.class_names]
        if missing:
            raise EdgekdError(f"{opt}: {name} class(es) {', '.join(missing[:5])} not in the label pack "
                              f"({len(pack)} classes, e.g. {', '.join(pack.class_names[:3])}); check the spelling "
                              "or make a pack that covers them with `edgekd labels`")
    if not seen:
        raise EdgekdError(f"{opt}: every class is unseen; at least one class must be seen")
    return seen, unseen


# --- evaluation -------------------------------------------------------------------------------------------------


def _load_pack(cfg: EvalConfig, src: Any, required: bool) -> tuple[LabelPack | None, str | None]:
    path = cfg.labels or src.labels_path
    if path is None:
        if required:
            raise EdgekdError(f"{src.path} has no labels.npz; pass --labels PACK (from `edgekd labels`) to score "
                              "the labeled --data")
        return None, None
    pack = load_label_pack(path)
    pack.check_compatible(src.teacher_id, src.embed_dim, what=f"{src.kind} {src.path}")
    return pack, str(path)


def _scores_for(emb: np.ndarray, labels: np.ndarray, texts: np.ndarray, split: dict | None,
                cfg: EvalConfig, keys: list[str], counts: np.ndarray | None) -> dict[str, Any]:
    """Every label-based score of one model's embeddings [N, D] (labels [N] into texts [C, D])."""
    out: dict[str, Any] = {"zero_shot": {"all": M.zero_shot_scores(emb, labels, texts)}}
    fs_classes = np.arange(len(texts))
    if split is not None:
        zs = out["zero_shot"]
        zs["seen"] = M.zero_shot_scores(emb, labels, texts, split["seen_idx"])
        zs["unseen"] = M.zero_shot_scores(emb, labels, texts, split["unseen_idx"])
        zs["harmonic_mean"] = M.harmonic_mean(zs["seen"]["mean_per_class_top1"], zs["unseen"]["mean_per_class_top1"])
        fs_classes = np.asarray(split["unseen_idx"])  # the OOD paper adapts to the unseen classes
    if cfg.shots:
        remap = np.full(len(texts), -1)
        remap[fs_classes] = np.arange(len(fs_classes))
        fs_labels = np.where(labels >= 0, remap[np.clip(labels, 0, None)], -1)
        out["few_shot"] = _few_shot(emb, fs_labels, texts[fs_classes], cfg, keys)
    if counts is not None:
        pred = M.cosine_logits(emb, texts).argmax(1)
        lab = labels >= 0
        out["long_tail"] = M.long_tail_scores(pred[lab], labels[lab], counts)
    return out


def _few_shot(emb: np.ndarray, labels: np.ndarray, texts: np.ndarray, cfg: EvalConfig, keys: list[str]) -> dict:
    from edgekd.evaluation.fewshot import few_shot_scores

    return few_shot_scores(emb, labels, texts, cfg.shots, cfg.seed, keys, beta=cfg.tip_beta, alpha=cfg.tip_alpha)


def evaluate(source: str | os.PathLike, cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate a run directory or export bundle on `cfg.data`. -> JSON-ready results (format "edgekd.eval")."""
    from edgekd.data.index import build_index
    from edgekd.evaluation.sources import resolve_source

    t0 = time.perf_counter()
    if any(k < 1 for k in cfg.shots):
        raise EdgekdError(f"--shots must be positive integers, got {','.join(map(str, cfg.shots))}")
    src = resolve_source(source)
    index = build_index(cfg.data)
    labeled = bool(index.classes)
    if not labeled and (cfg.unseen or cfg.split_file or cfg.train_index):
        raise EdgekdError(f"--data {cfg.data} is unlabeled, but --unseen/--split-file/--train-index need labeled "
                          "images (an image folder with one sub-folder per class, or a list with labels)")
    pack, pack_path = _load_pack(cfg, src, required=labeled)
    classes, split, texts = _class_space(cfg, index, pack, pack_path, labeled)
    student_encoder, emb, valid, teacher_desc = _embed(src, index, cfg)
    labels = np.array(index.labels, dtype=np.int64)[valid]
    keys = [p for p, ok in zip(index.rel_paths, valid) if ok]
    models = {k: v[valid] for k, v in emb.embeds.items()}
    counts = _train_counts(cfg, classes)

    results: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "source": {"kind": src.kind, "path": str(src.path), "teacher_id": src.teacher_id,
                   **{k: v for k, v in src.info.items() if k != "bundle"}, **student_encoder.info},
        "data": {"root": str(index.root), "kind": index.kind, "index_sha256": index.sha256, "images": len(index),
                 "evaluated": int(valid.sum()), "skipped": emb.skipped, "classes": list(index.classes)},
        "labels": {"path": pack_path, "classes": len(classes), "teacher_id": pack.teacher_id} if pack else None,
        "split": {"seen": split["seen"], "unseen": split["unseen"]} if split else None,
        "teacher": ({"source": "cache" if cfg.teacher_cache else "model", "cache": cfg.teacher_cache,
                     "id": (teacher_desc or {}).get("id"), "name": (teacher_desc or {}).get("name")}
                    if "teacher" in models else None),
        "shots": list(cfg.shots), "seed": cfg.seed,
        "train_counts": dict(zip(classes, counts.tolist())) if counts is not None else None,
    }
    if labeled and pack is not None:
        for who, e in models.items():
            for section, value in _scores_for(e, labels, texts, split, cfg, keys, counts).items():
                results.setdefault(section, {})[who] = value
    if "teacher" in models:
        results["fidelity"] = M.fidelity_scores(models["student"], models["teacher"],
                                                texts if pack is not None else None)
    results.update({"versions": {"edgekd": __version__}, "seconds": round(time.perf_counter() - t0, 3),
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    return _finite(results)


def _class_space(cfg: EvalConfig, index: DatasetIndex, pack: LabelPack | None, pack_path: str | None, labeled: bool
                 ) -> tuple[list[str], dict[str, Any] | None, np.ndarray | None]:
    """-> (classes scored: the data's, + split classes without images as distractor texts; the seen/unseen split
    with class positions, or None; their text embeddings [C, D], or None without a label pack)."""
    classes = list(index.classes)
    if pack is None:
        return classes, None, None
    if labeled:
        missing = [c for c in classes if c not in pack.class_names]
        if missing:
            raise EdgekdError(f"--data {cfg.data}: class(es) {', '.join(missing[:5])} not in the label pack "
                              f"{pack_path}; pass --labels with a pack that covers them (`edgekd labels`)")
    else:
        classes = list(pack.class_names)  # unlabeled data: the pack's classes, for teacher agreement only
    seen_unseen = _resolve_split(cfg, pack, classes) if labeled else None
    split = None
    if seen_unseen is not None:
        classes += [c for c in seen_unseen[0] + seen_unseen[1] if c not in classes]
        pos = {c: i for i, c in enumerate(classes)}
        split = {"seen": seen_unseen[0], "unseen": seen_unseen[1],
                 "seen_idx": [pos[c] for c in seen_unseen[0]], "unseen_idx": [pos[c] for c in seen_unseen[1]]}
    return classes, split, pack.subset(classes).embeddings


def _embed(src: Source, index: DatasetIndex, cfg: EvalConfig
           ) -> tuple[Encoder, Embeddings, np.ndarray, dict[str, Any] | None]:
    """Embed every image of `index` with the source (and the teacher: live, or read from `cfg.teacher_cache`).
    -> (the source's encoder, the embeddings by model, which images both models embedded [N], the teacher's
    description or None)."""
    from edgekd.devices import resolve_device
    from edgekd.evaluation.embed import embed_dataset, teacher_encoder
    from edgekd.evaluation.sources import load_source_teacher, source_encoder, teacher_from_cache

    device = resolve_device(cfg.device)
    encoders = [source_encoder(src, device, cfg.backend)]
    teacher_desc = None
    if cfg.use_teacher and not cfg.teacher_cache:
        teacher = load_source_teacher(src, cfg.teacher, device)
        encoders.append(teacher_encoder(teacher))
        teacher_desc = teacher.describe()
    emb = embed_dataset([index.abs_path(i) for i in range(len(index))], encoders, cfg.batch_size, cfg.workers,
                        desc=f"eval {src.path.name}", rel_paths=index.rel_paths)
    valid = emb.valid.copy()
    if cfg.use_teacher and cfg.teacher_cache:
        t_emb, t_valid, teacher_desc = teacher_from_cache(cfg.teacher_cache, index.rel_paths,
                                                          [e.size for e in index.entries], src.teacher_id)
        emb.embeds["teacher"] = t_emb
        valid &= t_valid
    return encoders[0], emb, valid, teacher_desc


def _train_counts(cfg: EvalConfig, classes: list[str]) -> np.ndarray | None:
    """Training images per class of `classes` from `cfg.train_index` (for the long-tail buckets), or None."""
    if not cfg.train_index:
        return None
    from edgekd.evaluation.sources import train_class_counts

    by_name = train_class_counts(cfg.train_index)
    if not set(by_name) & set(classes):
        raise EdgekdError(f"--train-index {cfg.train_index}: none of its classes is a class of --data")
    return np.array([by_name.get(c, 0) for c in classes])


def _finite(obj: Any) -> Any:
    """NaN (an empty group) -> None, so the JSON is valid everywhere."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --- reporting --------------------------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def table_rows(results: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(metric, student value, teacher value) rows of the report, accuracies as fractions."""
    rows: list[tuple[str, Any, Any]] = []

    def add(name: str, *path: str) -> None:
        s, t = json_get(results, path[0], "student", *path[1:]), json_get(results, path[0], "teacher", *path[1:])
        if s is not None or t is not None:
            rows.append((name, s, t))

    zs = json_get(results, "zero_shot", "student") or {}
    n_all = json_get(zs, "all", "classes")
    add(f"zero-shot top-1 ({n_all} classes)", "zero_shot", "all", "top1")
    add("zero-shot top-5", "zero_shot", "all", "top5")
    add("zero-shot mean per-class top-1", "zero_shot", "all", "mean_per_class_top1")
    if "seen" in zs:
        add(f"seen (held-out) mean per-class top-1 ({zs['seen']['classes']} cl.)", "zero_shot", "seen",
            "mean_per_class_top1")
        add(f"unseen mean per-class top-1 ({zs['unseen']['classes']} cl.)", "zero_shot", "unseen",
            "mean_per_class_top1")
        add("harmonic mean seen/unseen", "zero_shot", "harmonic_mean")
    for k, row in (json_get(results, "few_shot", "student") or {}).items():
        for method, label in (("ncm", "NCM"), ("probe", "linear probe"), ("tip_adapter", "Tip-Adapter")):
            if method in row:
                add(f"{k}-shot {label} top-1 ({row['queries']} queries)", "few_shot", k, method, "top1")
    for bucket in ("many", "medium", "few"):
        b = json_get(results, "long_tail", "student", bucket)
        if b is not None:
            add(f"long-tail {bucket} top-1 ({b['classes']} cl.)", "long_tail", bucket, "top1")
    return rows


def format_table(results: dict[str, Any]) -> str:
    """Plain-text report: accuracies in %, student and teacher side by side, then fidelity."""
    src, data = results["source"], results["data"]
    lines = [f"{src['kind']} {src['path']}  on  {data['root']}  ({data['evaluated']}/{data['images']} images"
             + (f", {len(data['skipped'])} skipped" if data["skipped"] else "") + ")"]
    rows = table_rows(results)
    if rows:
        width = max(len(r[0]) for r in rows) + 2
        lines.append(f"{'metric':<{width}}{'student':>9}{'teacher':>9}{'delta':>8}")
        for name, s, t in rows:
            delta = f"{100 * (s - t):+.2f}" if s is not None and t is not None else "-"
            lines.append(f"{name:<{width}}{_pct(s):>9}{_pct(t):>9}{delta:>8}")
    fid = results.get("fidelity")
    if fid:
        parts = [f"mean cosine {fid['mean_cosine']:.4f}"]
        if "centred_cosine" in fid:
            parts.append(f"centred cosine {fid['centred_cosine']:.4f}")
        parts += [f"retrieval@1 {_pct(fid['retrieval_at_1'])}%",
                 f"retrieval@5 {_pct(fid['retrieval_at_5'])}%"]
        if "top1_agreement" in fid:
            parts.append(f"top-1 agreement {_pct(fid['top1_agreement'])}%")
        lines.append("teacher fidelity: " + ", ".join(parts))
    elif results.get("teacher") is None:
        lines.append("teacher: not evaluated (--no-teacher)")
    for s in data["skipped"][:10]:
        lines.append(f"skipped {s['path']}: {s['reason']}")
    if len(data["skipped"]) > 10:
        lines.append(f"... and {len(data['skipped']) - 10} more skipped images")
    return "\n".join(lines)


def flat_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """Scalar eval_* columns for metrics.csv."""
    row: dict[str, Any] = {}
    for who, prefix in (("student", "eval_"), ("teacher", "eval_teacher_")):
        zs = json_get(results, "zero_shot", who) or {}
        if "all" in zs:
            row[f"{prefix}top1"] = zs["all"]["top1"]
            row[f"{prefix}top5"] = zs["all"]["top5"]
            row[f"{prefix}mpc_top1"] = zs["all"]["mean_per_class_top1"]
        if "seen" in zs:
            row[f"{prefix}seen_mpc_top1"] = zs["seen"]["mean_per_class_top1"]
            row[f"{prefix}unseen_mpc_top1"] = zs["unseen"]["mean_per_class_top1"]
            row[f"{prefix}hm"] = zs["harmonic_mean"]
        for k, r in (json_get(results, "few_shot", who) or {}).items():
            for method in ("ncm", "probe", "tip_adapter"):
                if method in r:
                    row[f"{prefix}{k}shot_{method}_top1"] = r[method]["top1"]
        for bucket, b in (json_get(results, "long_tail", who) or {}).items():
            row[f"{prefix}{bucket}_top1"] = b["top1"]
    for key, value in (results.get("fidelity") or {}).items():
        if key != "images":
            row[f"eval_{key}"] = value
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


def append_run_metrics(run_dir: str | os.PathLike, results: dict[str, Any]) -> Path:
    """Append one `phase=eval` row to the run's metrics.csv (atomically). Columns the file lacks are appended after
    the existing ones (older rows get empty cells), so the trainer's rows, written in the header's leading column
    order, stay aligned and training and eval rows share one file."""
    path = Path(run_dir) / METRICS_CSV
    # step first and always an int: the trainer keys its rows (and trims them on --resume) by the first column
    row = {"step": int(results["source"].get("step") or 0), "epoch": results["source"].get("epoch"),
           "phase": "eval", "time": results["created"], "eval_data": results["data"]["root"],
           "eval_images": results["data"]["evaluated"], **flat_metrics(results)}
    old_rows: list[dict[str, str]] = []
    header: list[str] = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            old_rows = list(reader)
    header += [k for k in row if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(old_rows)
    writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())
    return path
