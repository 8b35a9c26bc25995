"""What a distillation run is built from, before its first step: the device and process group, the teacher cache
and the --out/--resume check, the label pack and loss weights, the student and its DistillTask, the data loader and
step schedule, and the run directory's config.yaml, labels.npz and metrics.csv as the run starts.

`edgekd.distill.loop.train` calls these in order; the optimizer, EMA, resume and the steps are the loop's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import EdgekdError
from edgekd._io import atomic_write_text
from edgekd.devices import resolve_device
from edgekd.distill import ddp
from edgekd.distill.augment import Augment
from edgekd.distill.checkpoint import TRAIN_STATE
from edgekd.distill.config import DistillConfig, resolve_weights
from edgekd.distill.data import CachedViewDataset, GlobalBatchSampler, worker_init
from edgekd.distill.task import DistillTask
from edgekd.distill.train_log import METRICS, open_tensorboard, trim_metrics
from edgekd.preprocess import Preprocess
from edgekd.students.model import Student, create_student
from edgekd.students.registry import StudentPreset, resolve_student


@dataclass(frozen=True)
class Inputs:
    """What the cache gives the run: the rows it trains on, their labels and the class texts."""

    preset: StudentPreset
    rows: np.ndarray  # [N] indices of the cache's valid rows
    labels: np.ndarray  # [N] class index per row, -1 = unlabeled
    pack: Any  # LabelPack ordered like the cache's classes, or None


@dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    total: int  # optimizer steps of the whole run
    warmup: int  # steps of linear warm-up


def init_device(cfg: DistillConfig) -> tuple[torch.device, ddp.DistEnv]:
    """The device, and the process group when torchrun started several processes (one GPU per rank)."""
    device = resolve_device(cfg.device)
    env = ddp.init_distributed(device)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    return device, env


def open_cache(cfg: DistillConfig, resume: bool) -> Any:
    """The teacher cache with its images checked; refuses an --out that holds a run unless --resume, and the
    reverse."""
    from edgekd.teacher.cache import TeacherCache

    out = Path(cfg.out)
    cache = TeacherCache.open(cfg.cache, cfg.data_root)
    cache.check_images("--data-root")
    if (out / TRAIN_STATE).is_file() and not resume:
        raise EdgekdError(f"--out {out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (out / TRAIN_STATE).is_file():
        raise EdgekdError(f"--resume: {out} has no {TRAIN_STATE} to resume from; drop --resume to start a new run")
    return cache


def resolve_inputs(cfg: DistillConfig, cache: Any) -> tuple[DistillConfig, Inputs]:
    """The student preset, the rows and labels, the label pack, and `cfg` with the loss weights the data allows."""
    preset = resolve_student(cfg.student)
    valid_rows = np.flatnonzero(cache.valid)
    labels = cache.labels[valid_rows]
    labeled = bool((labels >= 0).any())
    pack = select_label_pack(cfg, cache)
    has_caps = cache.caption_embeds is not None and bool(np.asarray(cache.caption_mask).any())
    explicit = set(cfg.loss.weights) if cfg.recipe == "default" else set()
    loss_cfg = resolve_weights(cfg.loss, cfg.recipe, explicit, labeled, pack is not None, has_caps)
    return replace(cfg, loss=loss_cfg), Inputs(preset, valid_rows, labels, pack)


def select_label_pack(cfg: DistillConfig, cache: Any) -> Any:
    """The class-text embeddings, ordered like the cache's classes and checked against the cache's teacher."""
    from edgekd.labelpack import load_label_pack

    if cfg.labels:
        pack, where = load_label_pack(cfg.labels), f"--labels {cfg.labels}"
    elif cfg.label_text == "simple":
        pack, where = cache.label_pack_simple, f"{cache.path}/labels_simple.npz"
    else:
        pack, where = cache.label_pack, f"{cache.path}/labels.npz"
    if pack is None:
        return None
    if pack.teacher_id and pack.teacher_id != cache.teacher_id:
        raise EdgekdError(f"{where} was made by teacher {pack.teacher_id} but the cache {cache.path} by "
                          f"{cache.teacher_id}; make the label pack with the cache's teacher (`edgekd labels`)")
    pack.check_compatible(cache.teacher_id, cache.embed_dim, what=f"the cache {cache.path}")
    classes = cache.class_names
    if classes:
        missing = [c for c in classes if c not in pack.class_names]
        if missing:
            raise EdgekdError(f"{where} lacks {len(missing)} of the cache's classes (e.g. {', '.join(missing[:3])}); "
                              "make a label pack for the dataset's classes")
        pack = pack.subset(classes)
    return pack


def load_online_teacher(cache: Any, device: torch.device) -> Any:
    """The cache's teacher, rebuilt from its manifest description and checked to be the same weights."""
    from edgekd.teacher.clip import load_teacher

    t = cache.teacher
    teacher = load_teacher(t["name"], pretrained=t.get("pretrained"), weights=t.get("weights_file"),
                           random_init=bool(t.get("random_init")), device=device)
    cache.check_teacher(teacher.teacher_id)
    return teacher


def student_preprocess(cfg: DistillConfig, cache: Any) -> Preprocess:
    """The cache's (teacher's) preprocessing with the student's --interpolation / --resize-method, if given."""
    preprocess = cache.preprocess
    if cfg.interpolation is not None:
        preprocess = Preprocess.from_dict({**preprocess.to_dict(), "interpolation": cfg.interpolation})
    if cfg.resize_method is not None:
        from edgekd.resize import check_available

        check_available(cfg.resize_method, "--resize-method")
        preprocess = Preprocess.from_dict({**preprocess.to_dict(), "resize_method": cfg.resize_method})
    return preprocess


def uses_channels_last(cfg: DistillConfig) -> bool:
    # on CPU too: depthwise-conv backward in NCHW is ~20x slower there (mobilenetv4 at 128, torch 2.x)
    return cfg.channels_last if cfg.channels_last is not None else True


def create_task(cfg: DistillConfig, cache: Any, inputs: Inputs, teacher: Any, env: ddp.DistEnv,
                device: torch.device) -> tuple[Student, DistillTask]:
    """The student (BatchNorm prepared for the process group, channels_last) and the DistillTask around it."""
    head = cfg.head if cfg.head != "linear" else inputs.preset.head
    preprocess = student_preprocess(cfg, cache)
    student = create_student(inputs.preset.arch, cache.embed_dim, cfg.img_size, head, cfg.head_hidden,
                             preprocess=preprocess, teacher_id=cache.teacher_id,
                             trunk_weights=cfg.student_weights)
    student = ddp.prepare_batchnorm(student, env, device, cfg.sync_bn)
    class_counts = None
    label_embeds = None
    pack, labels = inputs.pack, inputs.labels
    if pack is not None:
        label_embeds = torch.from_numpy(pack.embeddings)
        class_counts = torch.from_numpy(np.bincount(labels[labels >= 0], minlength=len(pack)).astype(np.float32))
    task = DistillTask(student, cfg.loss, label_embeds, class_counts, teacher,
                       gather=ddp.gather_with_local_grad if env.enabled else None).to(device)
    if uses_channels_last(cfg):
        student.to(memory_format=torch.channels_last)
    return student, task


def create_loader(cfg: DistillConfig, cache: Any, student: Student, teacher: Any, rows: np.ndarray,
                  env: ddp.DistEnv, device: torch.device) -> tuple[torch.utils.data.DataLoader, GlobalBatchSampler]:
    """Cached views rendered for the student (and the online teacher), this rank's slice of each global batch."""
    dataset = CachedViewDataset(cache, student.cfg.get_preprocess(), cfg.seed,
                                teacher.preprocess if teacher is not None else None,
                                augment=Augment(cfg.aug_crop, cfg.aug_jitter))
    sampler = GlobalBatchSampler(rows, cfg.batch_size, cfg.seed, env.rank, env.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
        worker_init_fn=worker_init, pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed))
    return loader, sampler


def make_schedule(cfg: DistillConfig, num_rows: int) -> Schedule:
    """Full steps of batch x accum per epoch (the tail is dropped), capped by --max-steps; warm-up as a fraction."""
    micro_per_epoch = num_rows // cfg.batch_size
    steps_per_epoch = micro_per_epoch // cfg.accum
    if steps_per_epoch < 1:
        raise EdgekdError(f"{num_rows} images make no full step of --batch-size {cfg.batch_size} x --accum "
                          f"{cfg.accum}; lower them")
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    return Schedule(steps_per_epoch, total, int(cfg.warmup * total))


def run_description(cfg: DistillConfig, cache: Any) -> dict[str, Any]:
    """What config.json records beside every checkpoint's weights: the teacher, the cache, the loss, EMA."""
    return {"teacher": cache.teacher, "cache": {"path": str(Path(cfg.cache).resolve()),
                                                "index_sha256": cache.index_sha256,
                                                "manifest_sha256": cache.manifest_sha256},
            "loss": cfg.loss.active, "ema": cfg.ema}


def prepare_run_dir(cfg: DistillConfig, cache: Any, inputs: Inputs, sched: Schedule, env: ddp.DistEnv,
                    resume_step: int | None) -> Any:
    """Rank 0: config.yaml (options + what they resolved to), labels.npz, and metrics.csv cut back to the resumed
    checkpoint's step (or removed for a new run). Returns the TensorBoard writer, or None."""
    if not env.is_main:
        return None
    import yaml

    out = Path(cfg.out)
    run_info = {"arch": inputs.preset.arch, "world_size": env.world_size, "steps_per_epoch": sched.steps_per_epoch,
                "total_steps": sched.total, "warmup_steps": sched.warmup, "num_images": int(len(inputs.rows)),
                "teacher_id": cache.teacher_id, "loss_weights": cfg.loss.active}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump({**cfg.to_dict(), "resolved": run_info}, sort_keys=False))
    if inputs.pack is not None:
        inputs.pack.save(out / "labels.npz")
    if resume_step is not None:
        trim_metrics(out / METRICS, resume_step)
    else:  # a run killed before its first checkpoint left rows of steps that will be logged again
        (out / METRICS).unlink(missing_ok=True)
    return open_tensorboard(out)
