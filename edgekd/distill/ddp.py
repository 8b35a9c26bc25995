"""Data-parallel training without DistributedDataParallel's bucketing, so the math equals one process
(for students without BatchNorm, or with --sync-bn).

Each rank gets a contiguous slice of the global batch (edgekd.distill.data.GlobalBatchSampler). In-batch terms need
the whole batch: `gather_with_local_grad` concatenates a tensor over ranks in rank order, keeping the autograd graph
of the local slice only. Every rank then computes the same global loss L, and its backward gives dL/dtheta through its
own samples; `allreduce_grads` sums those, which is the single-process gradient of L (up to float summation order).
That holds for students without BatchNorm. A BatchNorm layer normalises with the statistics of the batch it sees, so
under N processes each rank uses its own 1/N slice's mean and variance, and the run differs from one process. With
`--sync-bn` (`convert_sync_batchnorm`, CUDA/NCCL only) the layers use the global batch's statistics again: the
forward pass and the running statistics match one process, and SyncBatchNorm's backward all-reduces the gradient
sums, so the summed gradient is again the single-process one.
Launch with `torchrun --nproc_per_node N edgekd distill ...` (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgekd import EdgekdError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_dt.timedelta(minutes=30))
    log.info("distributed: rank %d of %d (%s)", rank, world, dist.get_backend())
    return DistEnv(rank, world, local)


def count_batchnorm(model: torch.nn.Module) -> int:
    """Number of BatchNorm layers (timm's BatchNormAct2d included) in `model`."""
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def convert_sync_batchnorm(model: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """BatchNorm layers -> SyncBatchNorm (timm's BatchNormAct2d -> SyncBatchNormAct, keeping its activation).

    Only meaningful under DDP on CUDA: torch's SyncBatchNorm refuses CPU tensors, so gloo on CPU cannot use it.
    """
    if not env.enabled:
        raise EdgekdError("--sync-bn synchronises BatchNorm statistics across processes, but this run has one "
                          "process; launch with torchrun --nproc_per_node N (N > 1) or drop --sync-bn")
    if device.type != "cuda":
        raise EdgekdError(f"--sync-bn needs CUDA devices (torch's SyncBatchNorm supports no {device.type} tensors, "
                          "so not gloo on CPU); run on GPUs or drop --sync-bn")
    from timm.layers import convert_sync_batchnorm as _convert

    n = count_batchnorm(model)
    if n == 0:
        log.info("--sync-bn: the student has no BatchNorm layer; nothing to synchronise")
        return model
    log.info("--sync-bn: %d BatchNorm layers now use the statistics of the global batch", n)
    return _convert(model)


def prepare_batchnorm(model: torch.nn.Module, env: DistEnv, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """`model` with SyncBatchNorm when `sync_bn`; under DDP without it, a warning for students with BatchNorm."""
    if sync_bn:
        return convert_sync_batchnorm(model, env, device)
    n = count_batchnorm(model) if env.enabled else 0
    if n:
        log.warning("the student has %d BatchNorm layers: each of the %d processes normalises with its own slice's "
                    "statistics, so this run differs from one process%s", n, env.world_size,
                    "; --sync-bn synchronises them" if device.type == "cuda" else "")
    return model


def gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """[b, ...] on each rank -> [W*b, ...] in rank order; only this rank's slice carries gradient."""
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts)


def allreduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks in one flat all-reduce (every rank has the same set of non-None grads)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any (e.g. a stop request seen by one rank only)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
