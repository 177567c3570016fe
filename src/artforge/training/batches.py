"""Batches from the decoded uint8 cache: seeded shuffling, optional flips, no decoding.

Batch ``step`` is a pure function of (seed, step), so a resumed run sees exactly the batches
an uninterrupted one would, with no loader state to save.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BatchStream:
    """Endless stream of shuffled batches: epoch e is a permutation seeded by (seed, e)."""

    def __init__(
        self,
        images: Tensor,
        batch_size: int,
        seed: int,
        hflip: bool = False,
        rank: int = 0,
        world: int = 1,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        assert images.dtype == torch.uint8 and images.dim() == 4, "expected uint8 (N, C, H, W)"
        if batch_size % world:
            raise ValueError(
                f"batch size {batch_size} must be divisible by the number of processes ({world})"
            )
        self.images = images
        self.n = images.shape[0]
        self.batch_size = batch_size  # the global batch; each of ``world`` ranks takes an equal slice
        self.seed = seed
        self.hflip = hflip
        self.rank, self.world = rank, world
        self.local_size = batch_size // world
        self.memory_format = memory_format  # channels_last when the model's weights are
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _perm_for(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, step: int) -> Tensor:
        """Dataset indices of batch ``step`` (crosses epoch boundaries; never a short batch)."""
        start = step * self.batch_size
        out = []
        pos = start
        while pos < start + self.batch_size:
            epoch, offset = divmod(pos, self.n)
            take = min(self.n - offset, start + self.batch_size - pos)
            out.append(self._perm_for(epoch)[offset : offset + take])
            pos += take
        return torch.cat(out)

    def local_indices(self, step: int) -> Tensor:
        """Dataset indices of this rank's slice of batch ``step``."""
        lo = self.rank * self.local_size
        return self.indices(step)[lo : lo + self.local_size]

    def batch(self, step: int, device: torch.device) -> Tensor:
        """This rank's float batch (B / world, C, H, W) in [-1, 1] on ``device``: its slice of
        global batch ``step``, so the ranks together see exactly what one process would."""
        lo, hi = self.rank * self.local_size, (self.rank + 1) * self.local_size
        x = self.images[self.indices(step)[lo:hi]]  # (b, C, H, W) uint8
        if device.type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
        x = x.to(device=device, dtype=torch.float32).mul_(2 / 255).sub_(1)
        if self.hflip:
            g = torch.Generator().manual_seed(self.seed * 7_919 + step)
            flip = (torch.rand(self.batch_size, generator=g) < 0.5)[lo:hi].to(device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x.contiguous(memory_format=self.memory_format)

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.n
