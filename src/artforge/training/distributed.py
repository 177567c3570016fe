"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, NCCL on GPUs).

How it works, and why not the ``DistributedDataParallel`` wrapper: a family's training step is
a method with phases that train different parameter groups (D, then G through a frozen D),
not one ``forward``; the wrapper expects one forward per backward over a fixed parameter set.
So the Trainer averages each phase's gradients itself, in one flat all-reduce per phase, just
before its optimiser steps. Everything else follows from three rules:

- every rank starts from the same seed, so the same initial weights (rank 0's are broadcast
  anyway) and the same global RNG state;
- batch ``k`` is a pure function of (seed, k) and each rank takes an equal slice of it, and
  training noise is drawn for the global batch and sliced (``GenerativeModel.batch_randn``),
  so the global RNG advances identically on every rank;
- floating-point buffers (batch-norm statistics, the ADA probability) are averaged after each
  step, so the ranks' models stay identical, which every checkpoint verifies.

With families whose normalisation is per sample (VAE and diffusion use GroupNorm), N
processes compute the same updates as one process on the whole batch, to float rounding.
Batch norm (the GAN's generator) normalises each rank's slice, as DDP without SyncBatchNorm.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import InternalError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank of world, and its device's index on this node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """The one process that writes files, prints and draws progress bars."""
        return self.rank == 0


def from_env() -> Dist:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (a single process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(d: Dist, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device (cuda:LOCAL_RANK on GPUs)."""
    if not d.enabled:
        return device
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        log.info("rank %d of %d joined (%s on %s)", d.rank, d.world, backend, device)
    return device


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()  # drop collective work objects while the interpreter is fully alive


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_module(d: Dist, module: nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank."""
    if not d.enabled:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def average_grads(d: Dist, params: list[nn.Parameter], extra: Tensor) -> Tensor:
    """Average the gradients of ``params`` over ranks in one flat all-reduce; ``extra`` (a 1-D
    tensor of values to log, e.g. the loss) travels with them and comes back averaged."""
    if not d.enabled:
        return extra
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [extra.reshape(-1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    flat /= d.world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        if p.grad is None:
            p.grad = flat[offset : offset + n].view_as(p).clone()
        else:
            p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n
    return flat[offset:].to(extra.dtype)


def average_buffers(d: Dist, module: nn.Module) -> None:
    """Average floating-point buffers (batch-norm statistics, ...) over ranks."""
    if not d.enabled:
        return
    bufs = [b for b in module.buffers() if b.dtype.is_floating_point]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat)
    flat /= d.world
    offset = 0
    for b in bufs:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


def from_main(d: Dist, value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (e.g. the elapsed time, so all ranks see one clock)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def agree(d: Dist, flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on rank 0 (e.g. 'a checkpoint write failed')."""
    return bool(from_main(d, 1.0 if flag else 0.0, device)) if d.enabled else flag


def check_identical(d: Dist, module: nn.Module, device: torch.device) -> None:
    """Raise if the ranks' parameters differ (a bug, or a nondeterministic kernel)."""
    if not d.enabled:
        return
    with torch.no_grad():
        local = torch.stack(
            [torch.cat([p.detach().reshape(-1).double() for p in module.parameters()]).sum()]
            + [torch.cat([p.detach().reshape(-1).double().abs() for p in module.parameters()]).sum()]
        ).to(device)
        gathered = [torch.zeros_like(local) for _ in range(d.world)]
        dist.all_gather(gathered, local)
    if any(not torch.equal(g, gathered[0]) for g in gathered[1:]):
        raise InternalError(
            f"the {d.world} processes' weights differ ({[g.tolist() for g in gathered]}); "
            "this is a bug in data-parallel training, please report it"
        )
