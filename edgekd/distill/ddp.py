"""Data-parallel training without DistributedDataParallel's bucketing, so the math equals one process exactly.

Each rank gets a contiguous slice of the global batch (edgekd.distill.data.GlobalBatchSampler). In-batch terms need
the whole batch: `gather_with_local_grad` concatenates a tensor over ranks in rank order, keeping the autograd graph
of the local slice only. Every rank then computes the same global loss L, and its backward gives dL/dtheta through its
own samples; `allreduce_grads` sums those, which is exactly the single-process gradient of L.
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
