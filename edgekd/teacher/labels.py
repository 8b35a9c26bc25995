"""Label packs from a teacher: all prompts of a class embedded, averaged and L2-normalised (open_clip's
`build_zero_shot_classifier`), saved with the prompts and the teacher that made them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from edgekd import EdgekdError
from edgekd.data.captions import load_descriptions
from edgekd.labelpack import LabelPack
from edgekd.teacher.clip import Teacher
from edgekd.teacher.prompts import build_prompts, load_templates

log = logging.getLogger(__name__)


def embed_prompts(teacher: Teacher, prompts: dict[str, list[str]], progress: bool = False,
                  batch_size: int = 256) -> np.ndarray:
    """{class: [prompt, ...]} (C classes) -> float32 [C, D]: mean of unit prompt embeddings, re-normalised.

    All prompts of all classes go through the text tower in large batches (one class at a time wastes the batch).
    """
    flat: list[str] = []
    owner: list[int] = []
    for ci, (c, ps) in enumerate(prompts.items()):
        if not ps:
            raise EdgekdError(f"class {c!r} has no prompts")
        flat += ps
        owner += [ci] * len(ps)
    chunks = []
    for i in tqdm(range(0, len(flat), batch_size), desc="labels", unit="batch",
                  disable=not progress or len(flat) <= batch_size):
        chunks.append(teacher.encode_texts(flat[i: i + batch_size], batch_size=batch_size))
    emb = torch.cat(chunks)  # [P, D], unit rows
    sums = torch.zeros(len(prompts), emb.shape[1], dtype=emb.dtype).index_add_(0, torch.tensor(owner), emb)
    return F.normalize(sums, dim=-1).numpy().astype(np.float32)  # normalising the sum == normalising the mean


def build_label_pack(
    teacher: Teacher,
    class_names: list[str],
    templates: str | os.PathLike | list[str] | None = "default",
    descriptions: str | os.PathLike | dict[str, list[str]] | None = None,
    progress: bool = False,
) -> LabelPack:
    """Class names (+ descriptions) -> LabelPack with `embeddings` float32 [C, D].

    templates: a built-in set name (default | simple | single), a templates file, or a list of '{}' templates.
    descriptions: a JSON file {class: [description, ...]} or that dict; matched by class name.
    """
    class_names = [str(c).strip() for c in class_names]
    if not class_names or any(not c for c in class_names):
        raise EdgekdError("no class names (or an empty one) given; pass --classes a,b,c, --classes-file or --data")
    if len(set(class_names)) != len(class_names):
        dup = sorted({c for c in class_names if class_names.count(c) > 1})
        raise EdgekdError(f"duplicate class names: {', '.join(dup[:5])}")
    if isinstance(templates, list):
        tmpl, tmpl_name = templates, "custom"
    else:
        tmpl, tmpl_name = load_templates(templates)
    desc_file = None
    if descriptions is not None and not isinstance(descriptions, dict):
        desc_file = str(descriptions)
        descriptions = load_descriptions(descriptions, class_names)
    prompts = build_prompts(class_names, tmpl, descriptions)
    emb = embed_prompts(teacher, prompts, progress=progress)
    meta = {
        "teacher_id": teacher.teacher_id,
        "teacher": teacher.describe(),
        "embed_dim": teacher.embed_dim,
        "logit_scale": teacher.logit_scale,
        "templates": tmpl_name,
        "num_templates": len(tmpl),
        "descriptions_file": desc_file,
        "num_descriptions": sum(len(v) for v in (descriptions or {}).values()),
    }
    return LabelPack(class_names, emb, prompts, meta)


def build_simple_label_pack(teacher: Teacher, class_names: list[str]) -> LabelPack:
    """The single-template pack ("a photo of a {}.") of the OOD-distillation paper's plain recipe."""
    return build_label_pack(teacher, class_names, "single")


def read_class_names(classes: str | None = None, classes_file: str | os.PathLike | None = None,
                     data: str | os.PathLike | None = None) -> list[str]:
    """Class names from exactly one of: 'a,b,c', a file (one per line, or JSON list), a dataset (its classes)."""
    given = [x for x in (classes, classes_file, data) if x]
    if len(given) != 1:
        raise EdgekdError("give exactly one of --classes a,b,c, --classes-file FILE or --data DIR")
    if classes:
        names = [c.strip() for c in classes.split(",") if c.strip()]
    elif classes_file:
        path = Path(classes_file)
        if not path.is_file():
            raise EdgekdError(f"--classes-file {path}: no such file")
        text = path.read_text(encoding="utf-8-sig")
        if text.lstrip().startswith("["):
            import json

            names = [str(c) for c in json.loads(text)]
        else:
            names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        from edgekd.data.index import build_index

        names = build_index(data).classes
        if not names:
            raise EdgekdError(f"--data {data}: the dataset has no classes (use an ImageFolder or a labeled list)")
    if not names:
        raise EdgekdError("no class names found")
    return names
