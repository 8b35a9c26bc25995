"""The training loop: AdamW + warm-up/cosine, accumulation, clipping, EMA, AMP, checkpoints, resume, DDP.

It knows nothing about the losses: `DistillTask(batch)` returns {"loss", parts...} and the loop minimises "loss" and
logs the parts. `train(cfg)` is what `edgekd distill` runs: the set-up of edgekd.distill.trainer_setup, then the
optimizer and EMA (restored on --resume), then epochs of steps, each epoch ending in a checkpoint.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from edgekd import EdgekdError
from edgekd.devices import autocast
from edgekd.distill import ddp
from edgekd.distill.checkpoint import load_train_state, rng_state, save_checkpoint, set_rng_state
from edgekd.distill.config import DistillConfig
from edgekd.distill.data import GlobalBatchSampler
from edgekd.distill.task import DistillTask
from edgekd.distill.train_log import METRICS, StepWindow, log_metrics
from edgekd.distill.trainer_setup import (
    Schedule,
    create_loader,
    create_task,
    init_device,
    load_online_teacher,
    make_schedule,
    open_cache,
    prepare_run_dir,
    resolve_inputs,
    run_description,
    uses_channels_last,
)
from edgekd.students.model import Student

log = logging.getLogger(__name__)
_Forward = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]  # the DistillTask, or its torch.compile

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


@dataclass
class _Position:
    """Where the run is: optimizer steps done, the epoch, micro-batches done in it. Checkpoints save it."""

    step: int = 0
    epoch: int = 0
    micro: int = 0


@dataclass(frozen=True)
class _Run:
    """What the set-up built, as the steps use it."""

    cfg: DistillConfig
    out: Path
    device: torch.device
    env: ddp.DistEnv
    student: Student
    task: DistillTask
    teacher: Any  # the online teacher, or None
    optimizer: torch.optim.Optimizer
    ema: Student | None
    loader: torch.utils.data.DataLoader
    sampler: GlobalBatchSampler
    sched: Schedule
    description: dict[str, Any]  # config.json's run description (trainer_setup.run_description)
    writer: Any  # TensorBoard writer, or None
    channels_last: bool

    @cached_property
    def names(self) -> list[str]:
        """The logged parts: "loss" first, then the active terms."""
        return ["loss", *self.cfg.loss.active]

    @cached_property
    def params(self) -> list[torch.nn.Parameter]:
        """The trained parameters (clipped, and summed over ranks)."""
        return [p for p in self.student.parameters() if p.requires_grad]


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
    device, env = init_device(cfg)
    cache = open_cache(cfg, resume)
    cfg, inputs = resolve_inputs(cfg, cache)
    teacher = load_online_teacher(cache, device) if cfg.online_teacher else None
    torch.manual_seed(cfg.seed)
    student, task = create_task(cfg, cache, inputs, teacher, env, device)
    loader, sampler = create_loader(cfg, cache, student, teacher, inputs.rows, env, device)
    sched = make_schedule(cfg, len(inputs.rows))

    optimizer = build_optimizer(student, cfg.lr, cfg.weight_decay)
    ema = copy.deepcopy(student).eval().requires_grad_(False) if cfg.ema else None
    pos = _restore(cfg, device, student, optimizer, ema) if resume else _Position()
    writer = prepare_run_dir(cfg, cache, inputs, sched, env, pos.step if resume else None)
    run = _Run(cfg, Path(cfg.out), device, env, student, task, teacher, optimizer, ema, loader, sampler, sched,
               run_description(cfg, cache), writer, uses_channels_last(cfg))

    result = _fit(run, pos, progress, on_step)
    if writer is not None:
        writer.close()
    if env.enabled:
        ddp.barrier()
        ddp.cleanup()
    return result


def _restore(cfg: DistillConfig, device: torch.device, student: Student, optimizer: torch.optim.Optimizer,
             ema: Student | None) -> _Position:
    """--resume: weights, optimizer, EMA and RNG states from the run's train_state.pt, and where it stopped."""
    out = Path(cfg.out)
    state = load_train_state(out, map_location=device)
    _check_resume(cfg, state, out)
    student.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    pos = _Position(int(state["step"]), int(state["epoch"]), int(state["micro_in_epoch"]))
    log.info("resuming %s at epoch %d, step %d", out, pos.epoch, pos.step)
    return pos


def _fit(run: _Run, pos: _Position, progress: bool,
         on_step: Callable[[int, dict[str, float]], bool] | None) -> TrainResult:
    """Epochs from `pos` until the schedule's last step or a stop (signal or on_step), each ending in a
    checkpoint."""
    from tqdm.auto import tqdm

    compiled = torch.compile(run.task) if run.cfg.compile else run.task
    last: dict[str, float] = {}
    interrupted = False
    bar = tqdm(total=run.sched.total, initial=pos.step, desc="distill", unit="step",
               disable=not (progress and run.env.is_main), dynamic_ncols=True)
    run.task.train()
    if run.teacher is not None:
        run.teacher.model.eval()
    with _StopFlag() as stop:
        def should_stop(step: int, parts: dict[str, float]) -> bool:
            user_stop = bool(on_step(step, parts)) if on_step is not None else False
            return ddp.any_rank(stop.requested or user_stop, run.device)

        while pos.step < run.sched.total and not interrupted:
            interrupted, parts = _run_epoch(run, compiled, pos, bar, should_stop)
            last = parts or last  # parts of the epoch's last step ({} if it ran none)
            _end_epoch(run, pos, interrupted)
    bar.close()
    return TrainResult(run.out, pos.step, pos.epoch, interrupted, run.env.rank, last)


def _run_epoch(run: _Run, model: _Forward, pos: _Position, bar: Any,
               should_stop: Callable[[int, dict[str, float]], bool]) -> tuple[bool, dict[str, float]]:
    """Steps from `pos` to the end of its epoch or of the run, a metrics row every log_every steps and at the
    end. Returns (stopped, the last step's parts)."""
    cfg = run.cfg
    epoch_micro = run.sched.steps_per_epoch * cfg.accum  # micro-batches of the epoch's full steps
    run.sampler.set_epoch(pos.epoch, pos.micro)
    window = StepWindow(run.names)
    it = iter(run.loader)
    parts: dict[str, float] = {}
    while pos.micro + cfg.accum <= epoch_micro and pos.step < run.sched.total:
        lr = lr_at(pos.step, run.sched.total, cfg.lr, run.sched.warmup, cfg.min_lr_ratio)
        parts = _train_step(run, model, it, pos, lr)
        pos.micro += cfg.accum
        pos.step += 1
        window.add(parts, cfg.batch_size * cfg.accum)
        if pos.step % cfg.log_every == 0 or pos.step == run.sched.total or pos.micro + cfg.accum > epoch_micro:
            row = window.row(pos.step, pos.epoch, lr)
            if run.env.is_main:
                log_metrics(run.out / METRICS, row, run.writer)
            bar.set_postfix({k: f"{row[k]:.4g}" for k in run.names} | {"img/s": f"{row['images_per_s']:.0f}"})
            window.reset()
        bar.update(1)
        if should_stop(pos.step, parts):
            return True, parts
    return False, parts


def _train_step(run: _Run, model: _Forward, it: Any, pos: _Position, lr: float) -> dict[str, float]:
    """One optimizer step at `lr` over cfg.accum micro-batches of `it` (gradients summed over ranks, clipped;
    EMA updated). Returns the loss parts averaged over the micro-batches."""
    cfg = run.cfg
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    step_parts = dict.fromkeys(run.names, 0.0)
    for _ in range(cfg.accum):
        values = _forward_backward(run, model, next(it), pos)
        for k, v in zip(run.names, values):
            step_parts[k] += v / cfg.accum
    if run.env.enabled:
        ddp.allreduce_grads(run.params)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
    run.optimizer.step()
    if run.ema is not None:
        _ema_update(run.ema, run.student, cfg.ema_decay)
    return step_parts


def _forward_backward(run: _Run, model: _Forward, batch: dict[str, torch.Tensor], pos: _Position) -> list[float]:
    """The loss of one micro-batch (autocast), checked finite before its backward (divided by cfg.accum).
    Returns its parts in `run.names` order."""
    names = run.names
    b = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
    if run.channels_last:
        b["pixels"] = b["pixels"].contiguous(memory_format=torch.channels_last)
    with autocast(run.device):
        res = model(b)
    values = torch.stack([res[k].detach().float() for k in names]).cpu()
    if not bool(torch.isfinite(values).all()):
        bad = [k for k, v in zip(names, values.tolist()) if not math.isfinite(v)]
        bad_part = next((k for k in bad if k != "loss"), bad[0])
        raise EdgekdError(
            f"loss part {bad_part!r} is {values[names.index(bad_part)].item()} at step {pos.step} "
            f"(epoch {pos.epoch}); stopped without updating. The last good checkpoint is in {run.out}; try "
            "a lower --lr, --grad-clip, or check the cache")
    (res["loss"] / run.cfg.accum).backward()
    return values.tolist()


def _end_epoch(run: _Run, pos: _Position, interrupted: bool) -> None:
    """Checkpoint where the next step starts: the next epoch after a full one, else mid-epoch (--max-steps or a
    stop). A stop at an epoch's end saves the next epoch but leaves pos.epoch (what TrainResult reports)."""
    at_end = pos.micro + run.cfg.accum > run.sched.steps_per_epoch * run.cfg.accum
    if interrupted:
        _checkpoint(run, pos.step, pos.epoch + 1 if at_end else pos.epoch, 0 if at_end else pos.micro)
    elif at_end:
        pos.epoch, pos.micro = pos.epoch + 1, 0
        _checkpoint(run, pos.step, pos.epoch, 0)
    else:  # max_steps reached mid-epoch
        _checkpoint(run, pos.step, pos.epoch, pos.micro)


def _checkpoint(run: _Run, step: int, epoch: int, micro_in_epoch: int) -> None:
    """Rank 0: train_state.pt, then the published weights (EMA if on) and config.json."""
    if not run.env.is_main:
        return
    ema, student = run.ema, run.student
    state = {"model": student.state_dict(), "optimizer": run.optimizer.state_dict(),
             "ema": ema.state_dict() if ema is not None else {}, "rng": rng_state(), "step": step, "epoch": epoch,
             "micro_in_epoch": micro_in_epoch, "config": _json(run.cfg.to_dict())}
    save_checkpoint(run.out, ema if ema is not None else student, state,
                    {**run.description, "epoch": epoch, "step": step, "micro_in_epoch": micro_in_epoch})


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True)
