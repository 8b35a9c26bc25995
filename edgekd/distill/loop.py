"""The training loop: AdamW + warm-up/cosine, accumulation, clipping, EMA, AMP, checkpoints, resume, DDP.

It knows nothing about the losses: `DistillTask(batch)` returns {"loss", parts...} and the loop minimises "loss" and
logs the parts. `train(cfg)` is what `edgekd distill` runs.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import EdgekdError
from edgekd._io import atomic_write_text
from edgekd.devices import autocast, resolve_device
from edgekd.distill import ddp
from edgekd.distill.augment import Augment
from edgekd.distill.checkpoint import TRAIN_STATE, load_train_state, rng_state, save_checkpoint, set_rng_state
from edgekd.distill.config import DistillConfig, resolve_weights
from edgekd.distill.data import CachedViewDataset, GlobalBatchSampler, worker_init
from edgekd.distill.task import DistillTask
from edgekd.preprocess import Preprocess

log = logging.getLogger(__name__)

METRICS = "metrics.csv"
# config keys that change the math: a resumed run must keep them (epochs/max_steps/workers/device may change)
RESUME_KEYS = ("student", "img_size", "head", "head_hidden", "batch_size", "lr", "weight_decay", "warmup",
               "min_lr_ratio", "grad_clip", "accum", "ema", "ema_decay", "seed", "online_teacher", "recipe",
               "label_text", "labels", "loss", "interpolation", "resize_method", "aug_crop", "aug_jitter")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    interrupted: bool = False
    rank: int = 0
    last: dict[str, float] = field(default_factory=dict)  # loss parts of the last step


def lr_at(step: int, total: int, base_lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from base_lr to base_lr * min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class _StopFlag:
    """SIGINT/SIGTERM -> finish the current step, checkpoint, stop. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %d: stopping after this step and saving a checkpoint (Ctrl-C again to abort)", signum)

    def __enter__(self) -> _StopFlag:
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        except ValueError:  # not the main thread: signals cannot be caught here
            self._old = {}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm/scale parameters (1-d tensors), the timm/open_clip convention."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The optimizer distill trains with (also what `edgekd plan` times): AdamW, no decay on 1-d parameters."""
    return torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        else:
            e.copy_(p)


def _select_label_pack(cfg: DistillConfig, cache: Any) -> Any:
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


def _check_resume(cfg: DistillConfig, state: dict[str, Any], out: Path) -> None:
    import json

    # a run saved before a key existed trained with that key's default
    saved = {**DistillConfig(cache="", student="", out="").to_dict(), **json.loads(state["config"])}
    now = cfg.to_dict()
    diff = [k for k in RESUME_KEYS if _json(saved.get(k)) != _json(now.get(k))]
    if diff:
        raise EdgekdError(f"--resume: {out} was trained with different {', '.join(diff)} "
                          f"({', '.join(f'{k}={saved.get(k)!r}' for k in diff[:3])}); use the same options or "
                          "another --out")


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop rows logged after the checkpoint (they will be logged again)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    buf = io.StringIO()
    csv.writer(buf).writerows(keep)
    atomic_write_text(path, buf.getvalue())


def train(
    cfg: DistillConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], bool] | None = None,
) -> TrainResult:
    """Distill a student from the teacher cache `cfg.cache` into the run directory `cfg.out`.

    on_step(step, parts) is called after every optimizer step; returning True stops the run as Ctrl-C would
    (checkpoint, then return with interrupted=True).
    """
    from tqdm.auto import tqdm

    from edgekd.students.model import create_student
    from edgekd.students.registry import resolve_student
    from edgekd.teacher.cache import TeacherCache

    device = resolve_device(cfg.device)
    env = ddp.init_distributed(device)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    out = Path(cfg.out)
    cache = TeacherCache.open(cfg.cache, cfg.data_root)
    cache.check_images("--data-root")
    if (out / TRAIN_STATE).is_file() and not resume:
        raise EdgekdError(f"--out {out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (out / TRAIN_STATE).is_file():
        raise EdgekdError(f"--resume: {out} has no {TRAIN_STATE} to resume from; drop --resume to start a new run")

    # data and losses
    preset = resolve_student(cfg.student)
    valid_rows = np.flatnonzero(cache.valid)
    labels = cache.labels[valid_rows]
    labeled = bool((labels >= 0).any())
    pack = _select_label_pack(cfg, cache)
    has_caps = cache.caption_embeds is not None and bool(np.asarray(cache.caption_mask).any())
    explicit = set(cfg.loss.weights) if cfg.recipe == "default" else set()
    loss_cfg = resolve_weights(cfg.loss, cfg.recipe, explicit, labeled, pack is not None, has_caps)
    cfg = replace(cfg, loss=loss_cfg)
    teacher = None
    if cfg.online_teacher:
        teacher = _load_online_teacher(cache, device)

    torch.manual_seed(cfg.seed)
    head = cfg.head if cfg.head != "linear" else preset.head
    preprocess = cache.preprocess
    if cfg.interpolation is not None:
        preprocess = Preprocess.from_dict({**preprocess.to_dict(), "interpolation": cfg.interpolation})
    if cfg.resize_method is not None:
        from edgekd.resize import check_available

        check_available(cfg.resize_method, "--resize-method")
        preprocess = Preprocess.from_dict({**preprocess.to_dict(), "resize_method": cfg.resize_method})
    student = create_student(preset.arch, cache.embed_dim, cfg.img_size, head, cfg.head_hidden,
                             preprocess=preprocess, teacher_id=cache.teacher_id,
                             trunk_weights=cfg.student_weights)
    student = ddp.prepare_batchnorm(student, env, device, cfg.sync_bn)
    class_counts = None
    label_embeds = None
    if pack is not None:
        label_embeds = torch.from_numpy(pack.embeddings)
        class_counts = torch.from_numpy(np.bincount(labels[labels >= 0], minlength=len(pack)).astype(np.float32))
    task = DistillTask(student, loss_cfg, label_embeds, class_counts, teacher,
                       gather=ddp.gather_with_local_grad if env.enabled else None).to(device)
    # channels_last on CPU too: depthwise-conv backward in NCHW is ~20x slower there (mobilenetv4 at 128, torch 2.x)
    channels_last = cfg.channels_last if cfg.channels_last is not None else True
    if channels_last:
        student.to(memory_format=torch.channels_last)

    dataset = CachedViewDataset(cache, student.cfg.get_preprocess(), cfg.seed,
                                teacher.preprocess if teacher is not None else None,
                                augment=Augment(cfg.aug_crop, cfg.aug_jitter))
    rows = valid_rows
    batch = cfg.batch_size
    sampler = GlobalBatchSampler(rows, batch, cfg.seed, env.rank, env.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
        worker_init_fn=worker_init, pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed))
    micro_per_epoch = len(rows) // batch
    steps_per_epoch = micro_per_epoch // cfg.accum
    if steps_per_epoch < 1:
        raise EdgekdError(f"{len(rows)} images make no full step of --batch-size {batch} x --accum {cfg.accum}; "
                          "lower them")
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = int(cfg.warmup * total)

    optimizer = build_optimizer(student, cfg.lr, cfg.weight_decay)
    ema = copy.deepcopy(student).eval().requires_grad_(False) if cfg.ema else None
    step, epoch, start_micro = 0, 0, 0
    if resume:
        state = load_train_state(out, map_location=device)
        _check_resume(cfg, state, out)
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        step, epoch, start_micro = int(state["step"]), int(state["epoch"]), int(state["micro_in_epoch"])
        log.info("resuming %s at epoch %d, step %d", out, epoch, step)

    run_info = {"arch": preset.arch, "world_size": env.world_size, "steps_per_epoch": steps_per_epoch,
                "total_steps": total, "warmup_steps": warmup, "num_images": int(len(rows)),
                "teacher_id": cache.teacher_id, "loss_weights": loss_cfg.active}
    extra_base = {"teacher": cache.teacher, "cache": {"path": str(Path(cfg.cache).resolve()),
                                                      "index_sha256": cache.index_sha256,
                                                      "manifest_sha256": cache.manifest_sha256},
                  "loss": loss_cfg.active, "ema": cfg.ema}
    writer = None
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        atomic_write_text(out / "config.yaml", yaml.safe_dump({**cfg.to_dict(), "resolved": run_info},
                                                               sort_keys=False))
        if pack is not None:
            pack.save(out / "labels.npz")
        if resume:
            _trim_metrics(out / METRICS, step)
        else:  # a run killed before its first checkpoint left rows of steps that will be logged again
            (out / METRICS).unlink(missing_ok=True)
        writer = _tensorboard(out)

    def checkpoint(micro_in_epoch: int, ep: int) -> None:
        if not env.is_main:
            return
        state = {"model": student.state_dict(), "optimizer": optimizer.state_dict(),
                 "ema": ema.state_dict() if ema is not None else {}, "rng": rng_state(), "step": step, "epoch": ep,
                 "micro_in_epoch": micro_in_epoch, "config": _json(cfg.to_dict())}
        save_checkpoint(out, ema if ema is not None else student, state,
                        {**extra_base, "epoch": ep, "step": step, "micro_in_epoch": micro_in_epoch})

    compiled = torch.compile(task) if cfg.compile else task
    params = [p for p in student.parameters() if p.requires_grad]
    parts_names: list[str] = ["loss", *loss_cfg.active]
    last: dict[str, float] = {}
    interrupted = False
    bar = tqdm(total=total, initial=step, desc="distill", unit="step", disable=not (progress and env.is_main),
               dynamic_ncols=True)
    task.train()
    if teacher is not None:
        teacher.model.eval()
    with _StopFlag() as stop:
        while step < total and not interrupted:
            sampler.set_epoch(epoch, start_micro)
            micro = start_micro
            window_t, window_imgs = time.perf_counter(), 0
            sums = dict.fromkeys(parts_names, 0.0)
            n_logged = 0
            it = iter(loader)
            while micro + cfg.accum <= steps_per_epoch * cfg.accum and step < total:
                lr = lr_at(step, total, cfg.lr, warmup, cfg.min_lr_ratio)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                step_parts = dict.fromkeys(parts_names, 0.0)
                for _ in range(cfg.accum):
                    b = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
                    if channels_last:
                        b["pixels"] = b["pixels"].contiguous(memory_format=torch.channels_last)
                    with autocast(device):
                        res = compiled(b)
                    values = torch.stack([res[k].detach().float() for k in parts_names]).cpu()
                    if not bool(torch.isfinite(values).all()):
                        bad = [k for k, v in zip(parts_names, values.tolist()) if not math.isfinite(v)]
                        bad_part = next((k for k in bad if k != "loss"), bad[0])
                        raise EdgekdError(
                            f"loss part {bad_part!r} is {values[parts_names.index(bad_part)].item()} at step {step} "
                            f"(epoch {epoch}); stopped without updating. The last good checkpoint is in {out}; try "
                            "a lower --lr, --grad-clip, or check the cache")
                    (res["loss"] / cfg.accum).backward()
                    for k, v in zip(parts_names, values.tolist()):
                        step_parts[k] += v / cfg.accum
                    micro += 1
                    window_imgs += batch
                if env.enabled:
                    ddp.allreduce_grads(params)
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                if ema is not None:
                    _ema_update(ema, student, cfg.ema_decay)
                step += 1
                for k in parts_names:
                    sums[k] += step_parts[k]
                n_logged += 1
                last = step_parts
                if step % cfg.log_every == 0 or step == total or micro + cfg.accum > steps_per_epoch * cfg.accum:
                    dt = time.perf_counter() - window_t
                    ips = window_imgs / dt if dt > 0 else 0.0
                    row = {"step": step, "epoch": epoch, "lr": lr, **{k: sums[k] / n_logged for k in parts_names},
                           "images_per_s": ips}
                    if env.is_main:
                        _log_metrics(out / METRICS, row, writer)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in parts_names} | {"img/s": f"{ips:.0f}"})
                    window_t, window_imgs, n_logged = time.perf_counter(), 0, 0
                    sums = dict.fromkeys(parts_names, 0.0)
                bar.update(1)
                user_stop = bool(on_step(step, step_parts)) if on_step is not None else False
                if ddp.any_rank(stop.requested or user_stop, device):
                    interrupted = True
                    break
            if interrupted:
                at_end = micro + cfg.accum > steps_per_epoch * cfg.accum
                checkpoint(0 if at_end else micro, epoch + 1 if at_end else epoch)
                break
            epoch_done = micro + cfg.accum > steps_per_epoch * cfg.accum
            if epoch_done:
                epoch, start_micro = epoch + 1, 0
                checkpoint(0, epoch)
            else:  # max_steps reached mid-epoch
                start_micro = micro
                checkpoint(micro, epoch)
    bar.close()
    if writer is not None:
        writer.close()
    if env.enabled:
        ddp.barrier()
        ddp.cleanup()
    return TrainResult(out, step, epoch, interrupted, env.rank, last)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True)


def _load_online_teacher(cache: Any, device: torch.device) -> Any:
    """The cache's teacher, rebuilt from its manifest description and checked to be the same weights."""
    from edgekd.teacher.clip import load_teacher

    t = cache.teacher
    teacher = load_teacher(t["name"], pretrained=t.get("pretrained"), weights=t.get("weights_file"),
                           random_init=bool(t.get("random_init")), device=device)
    cache.check_teacher(teacher.teacher_id)
    return teacher


def _log_metrics(path: Path, row: dict[str, Any], writer: Any) -> None:
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    if writer is not None:
        for k, v in row.items():
            if k not in ("step", "epoch"):
                writer.add_scalar(f"train/{k}", v, row["step"])


def _tensorboard(out: Path) -> Any:
    from edgekd._optional import is_available

    if not is_available("tensorboard"):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))

