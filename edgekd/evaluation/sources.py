"""What `edgekd eval` reads: a run or bundle to evaluate, the teacher (live, or from a teacher cache built on the
same images) and the per-class training counts of a training index (for long-tail buckets)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import EdgekdError
from edgekd._io import read_json
from edgekd.evaluation.embed import Encoder
from edgekd.preprocess import Preprocess

log = logging.getLogger(__name__)

BUNDLE_FILE = "edgekd.json"
RUN_FILE = "config.json"


@dataclass
class Source:
    """A run directory or an export bundle, as far as evaluation is concerned."""

    kind: str  # "run" | "bundle"
    path: Path
    teacher_id: str
    embed_dim: int
    preprocess: Preprocess
    labels_path: Path | None  # its label pack, if it has one
    teacher: dict[str, Any] | None  # Teacher.describe() of the teacher it was distilled from, when known
    info: dict[str, Any] = field(default_factory=dict)  # arch, precision, target, epoch ... for the report


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        obj = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise EdgekdError(f"{path}: not a {what} (expected a JSON object)")
    return obj


def resolve_source(path: str | os.PathLike) -> Source:
    """A run dir (config.json + model.safetensors) or a bundle dir (edgekd.json) -> Source; clear errors otherwise."""
    path = Path(path)
    if path.is_file() and path.name in (BUNDLE_FILE, RUN_FILE, "model.safetensors"):
        path = path.parent
    if not path.exists():
        raise EdgekdError(f"{path}: no such run or bundle directory")
    if not path.is_dir():
        raise EdgekdError(f"{path}: expected a run directory (`edgekd distill`) or an export bundle (`edgekd export`)")
    if (path / BUNDLE_FILE).is_file():
        return _bundle_source(path)
    if (path / RUN_FILE).is_file():
        return _run_source(path)
    raise EdgekdError(f"{path}: neither a run directory (no {RUN_FILE}) nor an export bundle (no {BUNDLE_FILE})")


def _run_source(path: Path) -> Source:
    from edgekd.students.io import load_student_config

    cfg = load_student_config(path)
    if not (path / "model.safetensors").is_file():
        raise EdgekdError(f"{path}: no model.safetensors; the run has not saved a checkpoint yet")
    ek = _read_json(path / RUN_FILE, "run config").get("edgekd", {})
    teacher = ek.get("teacher") if isinstance(ek.get("teacher"), dict) else None
    teacher_id = (teacher or {}).get("id") or cfg.teacher_id
    labels = path / "labels.npz"
    info = {"arch": cfg.arch, "img_size": cfg.img_size, "epoch": ek.get("epoch"), "step": ek.get("step")}
    return Source("run", path, teacher_id, cfg.embed_dim, cfg.get_preprocess(),
                  labels if labels.is_file() else None, teacher, info)


def _bundle_source(path: Path) -> Source:
    from edgekd.runtime.bundle import read_bundle

    try:
        info = read_bundle(path, verify=True)  # refuses a bundle whose files do not match their sha256
    except (KeyError, TypeError, ValueError) as e:
        raise EdgekdError(f"{path / BUNDLE_FILE}: malformed bundle manifest ({type(e).__name__}: {e}); re-run "
                          "`edgekd export`") from e
    meta = info.meta
    teacher = None
    run = (meta.get("source_run") or {}).get("path")
    if run and (Path(run) / RUN_FILE).is_file():  # the bundle's run still exists: its full teacher description
        t = _read_json(Path(run) / RUN_FILE, "run config").get("edgekd", {}).get("teacher")
        teacher = t if isinstance(t, dict) and t.get("id") == info.teacher_id else None
    extra = {"arch": (meta.get("student") or {}).get("arch"), "target": meta.get("target"),
             "precision": meta.get("precision"), "bundle": info}
    return Source("bundle", path, info.teacher_id, info.embed_dim, info.preprocess, info.labels_path, teacher, extra)


def source_encoder(src: Source, device: Any, backend: str = "auto", threads: int | None = None) -> Encoder:
    """The student as an Encoder: a run through torch, a bundle through the runtime backend of its model file."""
    if src.kind == "run":
        from edgekd.evaluation.embed import torch_encoder
        from edgekd.students.io import load_student

        return torch_encoder("student", load_student(src.path), src.preprocess, device)
    return _bundle_encoder(src, backend, threads)


def _bundle_encoder(src: Source, backend: str, threads: int | None) -> Encoder:
    """Run the bundle's model file with a runtime backend; rendered uint8 views in, [B, D] embeddings out."""
    from edgekd.runtime.backends import create_backend
    from edgekd.runtime.batching import run_batched

    info = src.info["bundle"]
    be = create_backend(info.model_path, backend=backend, threads=threads)
    frames = info.input_layout == "NHWC"
    pp = src.preprocess

    def fn(pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels) if frames else pp.normalize(pixels)
        res = run_batched(be, x, batch_size=len(x))  # one call, or batches the model accepts
        if info.output_name not in res:
            raise EdgekdError(f"{info.model_path}: no output {info.output_name!r} (outputs: {', '.join(res)})")
        return res[info.output_name]

    return Encoder("student", pp, fn, {"backend": be.name})


# --- teacher ----------------------------------------------------------------------------------------------------


def load_source_teacher(src: Source, spec: dict[str, Any] | None, device: Any) -> Any:
    """Load the teacher described by `spec` (CLI overrides) or else by the source's config; it must be the teacher
    the source was distilled from (same id), or fidelity numbers would compare against the wrong model."""
    from edgekd.teacher.clip import load_teacher

    desc = spec or src.teacher
    if not desc or not desc.get("name"):
        raise EdgekdError(f"{src.path}: does not say which teacher it came from; pass --teacher NAME (with "
                          "--pretrained/--teacher-weights/--random-teacher), --teacher-cache CACHE, or --no-teacher")
    try:
        teacher = load_teacher(desc["name"], pretrained=desc.get("pretrained"), weights=desc.get("weights_file"),
                               random_init=bool(desc.get("random_init")), device=device)
    except EdgekdError as e:
        raise EdgekdError(f"{e} (or evaluate without the live teacher: --teacher-cache CACHE or --no-teacher)") from e
    if src.teacher_id and teacher.teacher_id != src.teacher_id:
        raise EdgekdError(f"teacher {teacher.teacher_id} is not the teacher {src.path} was distilled from "
                          f"({src.teacher_id}); pass that teacher's weights, or --no-teacher")
    return teacher


def teacher_from_cache(cache: str | os.PathLike, rel_paths: list[str], sizes: list[int] | None,
                       teacher_id: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Eval-view (view 0) teacher embeddings of `rel_paths` from a teacher cache built on the same images.

    -> (float32 [N, D], valid bool [N], teacher description). Refuses a cache of another teacher, an incomplete
    cache, or one that lacks (or holds changed versions of) some of the images.
    """
    from edgekd.teacher.cache import TeacherCache

    try:
        tc = TeacherCache.open(cache)
    except EdgekdError as e:
        raise EdgekdError(f"--teacher-cache: {e}") from e
    if teacher_id:
        try:
            tc.check_teacher(teacher_id)
        except EdgekdError as e:
            raise EdgekdError(f"--teacher-cache: {e}") from e
    pos = {e["path"]: (i, e.get("size")) for i, e in enumerate(tc.index)}
    missing = [p for p in rel_paths if p not in pos]
    if missing:
        raise EdgekdError(f"--teacher-cache {cache}: {len(missing)} of {len(rel_paths)} images of --data are not in "
                          f"the cache (e.g. {missing[0]}); build the cache on the same --data")
    if sizes is not None:
        changed = [p for p, s in zip(rel_paths, sizes) if pos[p][1] is not None and s >= 0 and pos[p][1] != s]
        if changed:
            raise EdgekdError(f"--teacher-cache {cache}: {len(changed)} images changed since the cache was built "
                              f"(e.g. {changed[0]}); rebuild it")
    rows = np.array([pos[p][0] for p in rel_paths], dtype=np.int64)
    return np.asarray(tc.image_embeds[rows, 0], dtype=np.float32), tc.valid[rows].copy(), tc.teacher


# --- long-tail training counts ----------------------------------------------------------------------------------


def train_class_counts(path: str | os.PathLike) -> dict[str, int]:
    """Training images per class name from a teacher cache dir, its index.json, or a dataset folder/list."""
    path = Path(path)
    if not path.exists():
        raise EdgekdError(f"--train-index {path}: no such cache, index.json or dataset")
    index_file = path / "index.json" if path.is_dir() else path
    if index_file.name == "index.json" and index_file.is_file():
        man_path = index_file.parent / "manifest.json"
        man = _read_json(man_path, "cache manifest") if man_path.is_file() else {}
        classes = (man.get("dataset") or {}).get("classes")
        entries = read_json(index_file)
        if not isinstance(entries, list):
            raise EdgekdError(f"--train-index {index_file}: expected a list of {{path, label}} entries")
        valid_path = index_file.parent / "valid.npy"
        valid = np.load(valid_path) if valid_path.is_file() else np.ones(len(entries), bool)
        counts: dict[str, int] = {}
        for e, ok in zip(entries, valid):
            if not ok or e.get("label", -1) < 0:
                continue
            # without a manifest, an imagefolder index still names the class by its first path component
            name = classes[e["label"]] if classes else e["path"].split("/")[0]
            counts[name] = counts.get(name, 0) + 1
    else:
        from edgekd.data.index import build_index

        idx = build_index(path)
        counts = {}
        for lab in idx.labels:
            if lab >= 0:
                counts[idx.classes[lab]] = counts.get(idx.classes[lab], 0) + 1
    if not counts:
        raise EdgekdError(f"--train-index {path}: holds no labeled images, so there are no long-tail buckets")
    return counts
