"""Helpers shared by the runtime/classify/examples tests: tiny bundles built with the real exporter pieces.

`make_bundle` uses `edgekd.export.pipeline.export_bundle` when it is available (a real run dir -> bundle), otherwise
`edgekd.export.onnx.export_student_onnx` + `edgekd.export.bundle.write_manifest` (the exporter's own graph and
manifest writer) so the runtime is always tested against what the exporter writes.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

TINY_TEACHER = "edgekd-test-tiny"
CLASSES = ["red", "green", "blue", "a photo of a cat"]


@functools.lru_cache(maxsize=1)
def teacher():
    from edgekd.teacher.clip import load_teacher

    return load_teacher(TINY_TEACHER, random_init=True, device="cpu")


@functools.lru_cache(maxsize=1)
def student():
    from edgekd.students.model import create_student

    torch.manual_seed(0)
    t = teacher()
    return create_student("test_vit", t.embed_dim, img_size=32, preprocess=t.preprocess,
                          teacher_id=t.teacher_id).eval()


@functools.lru_cache(maxsize=1)
def label_pack():
    from edgekd.teacher.labels import build_label_pack

    return build_label_pack(teacher(), CLASSES, "single")


@functools.lru_cache(maxsize=1)
def gate_images() -> Path:
    """A small ImageFolder (the CLASSES' colours, 4 images each) for the exporter's parity gate in test bundles."""
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="edgekd-gate-images-"))
    rng = np.random.default_rng(7)
    for ci, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir()
        for i in range(4):
            rgb = np.roll(np.array([220, 30, 30], np.float32), ci)
            arr = np.clip(rgb + rng.normal(0, 40, (36 + 2 * i, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.jpg")
    return root


def make_bundle(out: Path, in_graph: bool | str = False, labels: bool = True, with_scores: bool = False,
                val_dir: Path | None = None, static_batch: int | None = None, gate: bool = True) -> Path:
    """A tiny ONNX fp32 bundle of `student()` (input `pixels` NCHW float32, or `frames` NHWC uint8 when in_graph;
    in_graph="full": frames of any size, resized in the graph).

    with_scores bakes the label scores into the graph (a second output). The exporter's parity gate runs on val_dir
    (default: gate_images()), a small gate accepted as such; gate=False leaves the bundle ungated.
    """
    try:
        from edgekd.export.pipeline import export_bundle
    except ImportError:
        return _make_bundle_by_hand(out, in_graph, labels)
    from edgekd.students.io import save_student

    run = out.parent / f".{out.name}-run"
    save_student(run, student())
    if labels:
        label_pack().save(run / "labels.npz")
    return export_bundle(run, "onnx", "fp32", out, val_dir=(val_dir or gate_images()) if gate else None, gate=gate,
                         small_gate_ok=True, preprocess_in_graph=in_graph, with_labels=with_scores,
                         static_batch=static_batch, overwrite=True)


def _make_bundle_by_hand(out: Path, in_graph: bool, labels: bool) -> Path:
    from edgekd.export.bundle import write_manifest
    from edgekd.export.onnx import export_student_onnx

    s, t = student(), teacher()
    out.mkdir(parents=True, exist_ok=True)
    pp = s.cfg.get_preprocess()
    io = export_student_onnx(s, out / "model.onnx", pp, preprocess_in_graph=in_graph)
    files = {"model": "model.onnx", "labels": None}
    if labels:
        label_pack().save(out / "labels.npz")
        files["labels"] = "labels.npz"
    write_manifest(out, {"target": "onnx", "precision": "fp32", "files": files, **io, "preprocess": pp.to_dict(),
                         "preprocess_in_graph": in_graph, "embed_dim": t.embed_dim, "logit_scale": t.logit_scale,
                         "teacher_id": t.teacher_id, "student": s.cfg.to_dict(), "opset": 17})
    return out


def torch_embed(images) -> np.ndarray:
    """The training-side reference: Preprocess (numpy/PIL) -> torch student -> [N, D]."""
    from edgekd.data.images import load_rgb

    s = student()
    pp = s.cfg.get_preprocess()
    x = np.stack([pp(load_rgb(p) if isinstance(p, (str, Path)) else p) for p in images])
    with torch.no_grad():
        return s(torch.from_numpy(x)).numpy()


def test_make_bundle_writes_the_documented_layout(tmp_path):
    import json

    b = make_bundle(tmp_path / "b")
    meta = json.loads((b / "edgekd.json").read_text())
    assert meta["format"] == "edgekd.bundle" and meta["input"]["name"] == "pixels"
    assert set(meta["sha256"]) == {"model.onnx", "labels.npz"}
