"""Batches from the decoded uint8 cache: seeded shuffling, optional flips, no decoding.

Batch ``step`` is a pure function of (seed, step), so a resumed run sees exactly the batches
an uninterrupted one would, with no loader state to save. With per-image ``weights``
(``group_weights``: rare groups drawn more often) each batch is drawn with replacement from a
generator seeded by (seed, step), so that holds as well.

On a GPU the uint8 cache is copied to the device once when it fits (``place``), and each
batch is gathered there: the host only draws the indices and flips, for a chunk of steps at
a time, and sends them in one non-blocking copy. When the cache does not fit it stays in
pinned host memory and each batch is gathered on the host and copied without waiting.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError


def group_weights(groups: Sequence[Hashable | None], mode: str) -> Tensor:
    """Per-image sampling weights (N,) float64 summing to 1 from each image's group (None: the
    images without a group form one group of their own). "group": every group equally likely;
    "sqrt": a group's share in proportion to the square root of its size (between uniform
    images and uniform groups: rare groups drawn more often, the common ones still most)."""
    if mode not in ("group", "sqrt"):
        raise ConfigError(f"group sampling must be 'group' or 'sqrt', got {mode!r}")
    if not groups:
        raise ConfigError("group sampling needs at least one image")
    counts: dict[Hashable | None, int] = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    n = torch.tensor([counts[g] for g in groups], dtype=torch.float64)  # (N,) size of my group
    w = 1 / n if mode == "group" else 1 / n.sqrt()
    return w / w.sum()


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
        weights: Tensor | None = None,
    ):
        assert images.dtype == torch.uint8 and images.dim() == 4, "expected uint8 (N, C, H, W)"
        if weights is not None and weights.shape != (images.shape[0],):
            raise ConfigError(f"{tuple(weights.shape)} sampling weights for {images.shape[0]} images")
        if batch_size % world:
            raise ConfigError(
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
        self.weights = weights  # (N,) per-image probabilities, or None: epochs of permutations
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)
        self.cache = images  # where batches are gathered from (place() may move it)
        self.plan_steps = 64  # steps whose indices and flips are drawn and sent together
        self._plan: tuple[int, Tensor, Tensor] | None = None  # (first step, (K, b) indices, (K, b) flips)

    def place(self, device: torch.device, budget: float = 0.5) -> str:
        """Keep the uint8 cache on ``device`` when it takes at most ``budget`` of the device's
        free memory (CUDA), else in pinned host memory. Returns where it went, for the log."""
        if device.type != "cuda":
            self.cache = self.images
            return "host"
        free, _ = torch.cuda.mem_get_info(device)
        if self.images.numel() <= budget * free:
            self.cache = self.images.to(device)
            return "device"
        self.cache = self.images.pin_memory()
        return "pinned host"

    def _perm_for(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, step: int) -> Tensor:
        """Dataset indices of batch ``step`` (crosses epoch boundaries; never a short batch);
        with ``weights``, drawn with replacement from a generator seeded by (seed, step)."""
        if self.weights is not None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 500_009 + step * 7_919)
            return torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g)
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

    def _flips(self, step: int) -> Tensor:
        """(batch_size,) bool: which images of global batch ``step`` are mirrored."""
        g = torch.Generator().manual_seed(self.seed * 7_919 + step)
        return torch.rand(self.batch_size, generator=g) < 0.5

    def planned(self, step: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """This rank's (indices, flips) of batch ``step`` on ``device``, drawn on the host for
        ``plan_steps`` steps at once and sent in one non-blocking copy (no host sync)."""
        if (
            self._plan is None
            or not 0 <= step - self._plan[0] < self._plan[1].shape[0]
            or self._plan[1].device.type != device.type  # "cuda" and "cuda:0" are one device here
        ):
            lo, hi = self.rank * self.local_size, (self.rank + 1) * self.local_size
            steps = range(step, step + self.plan_steps)
            idx = torch.stack([self.indices(s)[lo:hi] for s in steps])  # (K, b)
            if self.hflip:
                flips = torch.stack([self._flips(s)[lo:hi] for s in steps])  # (K, b)
            else:
                flips = torch.zeros(len(steps), self.local_size, dtype=torch.bool)
            if device.type == "cuda":  # pinned, so the copy runs while the host moves on
                idx, flips = (
                    idx.pin_memory().to(device, non_blocking=True),
                    flips.pin_memory().to(device, non_blocking=True),
                )
            self._plan = (step, idx, flips)
        k = step - self._plan[0]
        return self._plan[1][k], self._plan[2][k]

    def batch(self, step: int, device: torch.device) -> Tensor:
        """This rank's float batch (B / world, C, H, W) in [-1, 1] on ``device``: its slice of
        global batch ``step``, so the ranks together see exactly what one process would."""
        idx, flip = self.planned(step, device)
        if self.cache.device == idx.device:  # gathered where the cache lives: no copy
            x = self.cache[idx]  # (b, C, H, W) uint8
        else:  # the cache stays on the host (pinned): gather there, copy without waiting
            x = self.cache[self.local_indices(step)]
            x = x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x.to(device)
        x = x.to(device=device, dtype=torch.float32).mul_(2 / 255).sub_(1)
        if self.hflip:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x.contiguous(memory_format=self.memory_format)

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.n
