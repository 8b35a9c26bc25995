"""Budget planner (issue #17): from "M minutes on this machine and this dataset" to the `edgekd cache` and
`edgekd distill` commands that fit, after timing this machine's teacher and student briefly.

Three steps, each usable alone: `measure_teacher_ips` / `measure_train_ips` time the real models (a few seconds
each), `choose_plan` turns the speeds into images, views, epochs and resolution (pure arithmetic, ruled by
`PlanRules`), and `subset_entries` / `write_train_list` / `plan_commands` / `save_plan` write what the plan needs.
torch is imported only by the measurements.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shlex
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd import EdgekdError
from edgekd._io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from edgekd.data.index import DatasetIndex, IndexEntry
    from edgekd.preprocess import Preprocess
    from edgekd.teacher.clip import Teacher

log = logging.getLogger(__name__)

FORMAT = "edgekd.plan"
VERSION = 1
TRAIN_LIST = "train.csv"
UNLABELED = "<unlabeled>"  # the group of label -1 rows in a dataset that also has labeled ones
_EPS = 1e-9  # float slack for floor/ceil of quotients that are integers on paper


@dataclass(frozen=True)
class PlanRules:
    """What the planner may choose, in one place.

    The values come from the fidelity study (benchmarks/results/fidelity, docs/distill.md "Defaults"): which views,
    resolution and epochs buy the most student-to-teacher fidelity per minute. One view (5,000 images x 1 view x 10
    epochs beat 2,000 x 2 views x 20 epochs at about the same wall time: retrieval@1 61.8% vs 54.8%); 128 px (64/96/128
    px: 8.7/10.9/14.6% with the old loss mix); at least 10 epochs, and up to 20 (the most the study measured) when the
    dataset runs out: at 2,000 images 20 epochs beat 10 (47.3% vs 31.4%). `margin` is the fraction of the budget
    held back for start-up (model builds, label-text embedding), the checkpoints, and timing noise: the study's check
    of a 60-minute plan (fidelity study `--plan-check 60`) took 60.1 minutes with 10% held back, its cache and
    training 9% and 12% slower than the seconds of timing predicted, so 15%. A plan smaller than `min_images` images
    (or `min_images_per_class` per class) is refused rather than made, unless the whole dataset is smaller.
    """

    views: int = 1
    img_size: int = 128
    min_epochs: int = 10
    max_epochs: int = 20
    margin: float = 0.15
    min_images: int = 100
    min_images_per_class: int = 10


@dataclass(frozen=True)
class Measurement:
    """A throughput measured on this machine: `images_per_s` over `images` timed in `seconds` (after a warm-up)."""

    what: str
    images_per_s: float
    images: int
    seconds: float
    batch_size: int
    device: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Images (of `dataset_images`), cached views, student epochs and resolution that fit the budget, with the
    estimated cache and training seconds. `per_class` = images taken per class (None for unlabeled data)."""

    images: int
    views: int
    epochs: int
    img_size: int
    est_cache_s: float
    est_train_s: float
    per_class: dict[str, int] | None
    reasons: list[str]
    dataset_images: int
    budget_s: float
    usable_s: float

    @property
    def subset(self) -> bool:
        return self.images < self.dataset_images


# --------------------------------------------------------------------------------------------------- measuring


def sample_paths(index: DatasetIndex, n: int) -> list[Path]:
    """`n` absolute image paths spread evenly over the (sorted) index, so every part of the dataset is timed."""
    total = len(index)
    picks = sorted({i * total // n for i in range(n)}) if total > n else range(total)
    return [index.abs_path(i) for i in picks]


def _render_teacher_views(teacher: Teacher, image_paths: Sequence[Path], count: int) -> tuple[list, float]:
    """`count` uint8 [H,W,3] eval views, rendered exactly as `edgekd cache` renders them (cycling when fewer images
    decode), and the mean seconds to decode + render one."""
    from edgekd.teacher.cache import ViewConfig, ViewDataset

    ds = ViewDataset(Path(), [str(p) for p in image_paths], 0, teacher.preprocess, ViewConfig(count=1))
    views, tried, t0 = [], 0, time.perf_counter()
    for row in range(len(ds)):
        item = ds[row]
        tried += 1
        if item["ok"]:
            views.append(item["pixels"][0])
        else:
            log.info("plan: skipped %s while timing the teacher: %s", image_paths[row], item["reason"])
        if len(views) == count:
            break
    render_s = (time.perf_counter() - t0) / max(1, tried)
    if not views:
        raise EdgekdError(f"none of the {len(ds)} images sampled from --data could be decoded; check the dataset")
    return [views[i % len(views)] for i in range(count)], render_s


def measure_teacher_ips(teacher: Teacher, image_paths: Sequence[Path], batch_size: int = 16,
                        batches: int = 2) -> Measurement:
    """Teacher image forwards per second on real images rendered with its own preprocessing (the cache's code path).

    The first batch is a warm-up; images/s comes from the other `batches - 1`. One forward = one cached view.
    """
    import numpy as np
    import torch

    from edgekd.teacher.cache import encode_views

    if batches < 2:
        raise EdgekdError("measure_teacher_ips: need at least 2 batches (the first is a warm-up)")
    views, render_s = _render_teacher_views(teacher, image_paths, batch_size * batches)
    chunks = [np.stack(views[i:i + batch_size]) for i in range(0, len(views), batch_size)]
    with torch.inference_mode():
        encode_views(teacher, chunks[0])  # returns numpy: the device is synced
        t0 = time.perf_counter()
        for pix in chunks[1:]:
            encode_views(teacher, pix)
        seconds = time.perf_counter() - t0
    n = batch_size * (batches - 1)
    size = teacher.preprocess.size
    return Measurement("teacher", n / seconds, n, seconds, batch_size, str(teacher.device),
                       {"model": teacher.spec.name, "input": list(size) if isinstance(size, tuple) else size,
                        "decode_render_s_per_image": round(render_s, 5)})


def measure_train_ips(student_name: str, img_size: int, embed_dim: int, batch_size: int = 64, steps: int = 4,
                      device: str = "cpu", preprocess: Preprocess | None = None) -> Measurement:
    """Student training images per second: the student `edgekd distill` builds (preset head, channels_last), AdamW
    and gradient clipping as distill's defaults, on synthetic [B,3,S,S] inputs. First step = warm-up."""
    import torch
    import torch.nn.functional as F

    from edgekd.devices import autocast, resolve_device
    from edgekd.distill.loop import build_optimizer
    from edgekd.students.model import create_student
    from edgekd.students.registry import resolve_student

    if steps < 2:
        raise EdgekdError("measure_train_ips: need at least 2 steps (the first is a warm-up)")
    dev = resolve_device(device)
    preset = resolve_student(student_name)
    torch.manual_seed(0)
    student = create_student(preset.arch, embed_dim, img_size, preset.head, preprocess=preprocess).to(dev)
    student.to(memory_format=torch.channels_last)
    student.train()
    opt = build_optimizer(student, lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, img_size, img_size, generator=g).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)
    target = F.normalize(torch.randn(batch_size, embed_dim, generator=g), dim=-1).to(dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(dev):
            s = student(x)
        (1 - (s.float() * target).sum(-1)).mean().backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        step()
    sync()
    seconds = time.perf_counter() - t0
    n = batch_size * (steps - 1)
    return Measurement("student", n / seconds, n, seconds, batch_size, str(dev),
                       {"model": preset.arch, "img_size": img_size, "channels_last": True})


# --------------------------------------------------------------------------------------------------- deciding


def class_counts(index: DatasetIndex) -> dict[str, int] | int:
    """Images per class name (label -1 rows of a labeled dataset as UNLABELED), or the image count if unlabeled."""
    if not index.classes:
        return len(index)
    return dict(sorted(Counter(_group(index, e.label) for e in index.entries).items()))


def _group(index: DatasetIndex, label: int) -> str:
    return index.classes[label] if label >= 0 else UNLABELED


def balanced_counts(counts: dict[str, int], n: int) -> dict[str, int]:
    """The same number k of images from every class (all of a smaller class), k as large as `n` images allow."""
    lo, hi = 0, max(counts.values())
    while lo < hi:  # largest k with sum(min(k, c)) <= n
        k = (lo + hi + 1) // 2
        lo, hi = (k, hi) if sum(min(k, c) for c in counts.values()) <= n else (lo, k - 1)
    return {name: min(lo, c) for name, c in counts.items()}


def minimum_images(available: dict[str, int] | int, rules: PlanRules) -> int:
    """The smallest subset worth training on: `min_images` and `min_images_per_class` per class, or all there is."""
    total = available if isinstance(available, int) else sum(available.values())
    classes = 0 if isinstance(available, int) else len(available)
    return min(total, max(rules.min_images, rules.min_images_per_class * classes))


def choose_plan(available: dict[str, int] | int, minutes: float, teacher_ips: float, train_ips: float,
                rules: PlanRules = PlanRules(), img_size: int | None = None, loader_s: float = 0.0) -> Plan:
    """Images, views, epochs and resolution that fit `minutes` at the measured speeds.

    available: images per class (or the total for unlabeled data); teacher_ips: teacher forwards (views) per second;
    train_ips: student training images per second at `img_size` (default `rules.img_size`). One image costs
    views/teacher_ips to cache and epochs/train_ips to train, plus `loader_s` (seconds to decode and render one view)
    per view cached and per epoch: on a CPU the data loading runs on the cores the models use, so it adds (on a GPU
    it overlaps the model: pass 0). As many images as fit at `min_epochs` are taken
    (balanced over classes); time the dataset leaves unused buys more epochs, up to `max_epochs`. Raises EdgekdError
    naming the minutes needed when not even `minimum_images` fit.
    """
    if minutes <= 0:
        raise EdgekdError(f"--minutes {minutes:g}: must be > 0")
    if teacher_ips <= 0 or train_ips <= 0:
        raise EdgekdError(f"speeds must be > 0 (teacher {teacher_ips:g}, student {train_ips:g} images/s)")
    img_size = img_size or rules.img_size
    labeled = not isinstance(available, int)
    counts = dict(available) if labeled else {"": int(available)}
    total = sum(counts.values())
    if total < 1:
        raise EdgekdError("the dataset holds no images")
    budget = minutes * 60.0
    usable = budget * (1 - rules.margin)
    cache_cost, epoch_cost = rules.views * (1 / teacher_ips + loader_s), 1 / train_ips + loader_s
    cost = cache_cost + rules.min_epochs * epoch_cost
    need = minimum_images(available, rules)
    fit = math.floor(usable / cost + _EPS)
    if fit < need:
        needed = math.ceil(need * cost / (1 - rules.margin) / 60 * 10 - _EPS) / 10
        raise EdgekdError(
            f"--minutes {minutes:g} is too short on this machine: the smallest plan ({need} images x {rules.views} "
            f"view(s), {rules.min_epochs} epochs) needs {needed:g} minutes; give --minutes {needed:g} or more")
    per_class = balanced_counts(counts, min(fit, total))
    images = sum(per_class.values())
    epochs = min(rules.max_epochs, math.floor((usable - images * cache_cost) / (images * epoch_cost) + _EPS))
    reasons = [
        f"budget {minutes:g} min = {budget:.0f} s, {rules.margin:.0%} held back for start-up, evaluation and noise "
        f"-> {usable:.0f} s",
        f"one image costs {rules.views} view(s) x {cache_cost / rules.views:.4g} s in the cache + {rules.min_epochs} "
        f"epochs x {epoch_cost:.4g} s in training = {cost:.4g} s -> {fit} images fit at {rules.min_epochs} epochs",
    ]
    if loader_s > 0:
        reasons.insert(1, f"decoding and rendering a view takes {loader_s:.4g} s on the same cores: added to each "
                          "cached view and each image-epoch")
    if fit < total:
        how = (f"balanced subset: the first {max(per_class.values())} sorted images of each of {len(counts)} classes"
               if labeled else "the first images in sorted order")
        reasons.append(f"the dataset has {total} images -> {images} ({how})")
    else:
        reasons.append(f"all {total} images of the dataset fit; the time left buys {epochs} epochs"
                       + (f" (capped at max_epochs {rules.max_epochs})" if epochs == rules.max_epochs else ""))
    est_cache, est_train = images * cache_cost, images * epochs * epoch_cost
    return Plan(images=images, views=rules.views, epochs=epochs, img_size=img_size, est_cache_s=round(est_cache, 1),
                est_train_s=round(est_train, 1), per_class=per_class if labeled else None, reasons=reasons,
                dataset_images=total, budget_s=budget, usable_s=round(usable, 1))


# --------------------------------------------------------------------------------------------------- writing


def subset_entries(index: DatasetIndex, plan: Plan) -> list[IndexEntry]:
    """The plan's images: the first per_class[c] sorted images of each class (unlabeled: the first `images`)."""
    if not plan.subset:
        return list(index.entries)
    if plan.per_class is None:
        return index.entries[:plan.images]
    taken: Counter[str] = Counter()
    out = []
    for e in index.entries:  # sorted by relative path, so sorted within each class too
        name = _group(index, e.label)
        if taken[name] < plan.per_class.get(name, 0):
            taken[name] += 1
            out.append(e)
    return out


def write_train_list(path: str | os.PathLike, index: DatasetIndex, entries: Sequence[IndexEntry]) -> Path:
    """A `path,label` CSV that `edgekd cache --data` reads (paths relative to the list's folder). Returns its path."""
    path = Path(path).absolute()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label"])
    for e in entries:
        rel = Path(os.path.relpath(index.root / e.path, path.parent)).as_posix()
        w.writerow([rel, index.classes[e.label] if e.label >= 0 else ""])
    atomic_write_text(path, buf.getvalue())
    return path


def camera_resize_method() -> str | None:
    """`cv2-area-linear` where OpenCV is installed, else None (distill's default, Pillow): the camera fast path.

    benchmarks/results/resize_fidelity_480-up480.md: on camera-sized frames it was as faithful as Pillow bicubic
    (retrieval@1 47.5% vs 46.7%) at a tenth of the per-frame resize cost (resize_methods.md)."""
    from edgekd._optional import is_available

    return "cv2-area-linear" if is_available("cv2") else None


def plan_commands(data: str, cache_dir: str, run_dir: str, plan: Plan, student: str, batch_size: int,
                  teacher_args: Sequence[str], device: str | None = None,
                  resize_method: str | None = None) -> list[list[str]]:
    """The `edgekd cache` and `edgekd distill` argv lists that carry the plan out."""
    dev = ["--device", device] if device and device != "auto" else []
    resize = ["--resize-method", resize_method] if resize_method else []
    return [
        ["edgekd", "cache", "--data", data, "--out", cache_dir, "--views", str(plan.views), *teacher_args, *dev],
        ["edgekd", "distill", "--cache", cache_dir, "--student", student, "--img-size", str(plan.img_size),
         "--epochs", str(plan.epochs), "--batch-size", str(batch_size), *resize, "--out", run_dir, *dev],
    ]


def save_plan(out: str | os.PathLike, doc: dict[str, Any], commands: list[list[str]]) -> None:
    """plan.json (`doc` + the commands) and commands.sh in `out`."""
    out = Path(out)
    lines = [shlex.join(c) for c in commands]
    atomic_write_json(out / "plan.json", {"format": FORMAT, "version": VERSION, **doc, "commands": lines})
    atomic_write_text(out / "commands.sh", "#!/usr/bin/env bash\n# written by `edgekd plan`; see plan.json\n"
                      "set -euo pipefail\n" + "\n".join(lines) + "\n")
