"""Differentiable augmentation for GAN discriminators on small data sets.

DiffAugment (Zhao et al. 2020) shows D real *and* generated images through the same random,
differentiable transforms, so D cannot memorise the few real images while G still learns
the un-augmented distribution (gradients flow through the transforms). ADA (Karras et al.
2020) applies each transform with a probability p that rises while D looks overconfident on
real images and falls otherwise; ``adapt_p`` is that controller.

Every function takes and returns (B, C, H, W) in [-1, 1] and draws its randomness from the
global torch RNG, which the Trainer seeds and checkpoints, so runs stay reproducible. Under
data-parallel training (``shard`` = (rank, world size)) the numbers are drawn for the global
batch and each rank keeps its slice, like all training noise (models/base.py): two ranks
augment exactly as one process does on the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from artforge.models.base import rank_slice

from ..errors import ConfigError

Shard = tuple[int, int]  # (rank, world size)

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' -> (); unknown names are an error."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    for name in names:
        if name not in POLICIES:
            raise ConfigError(f"unknown augmentation {name!r}; choose from {list(POLICIES)}")
    return names


def _rand(x: Tensor, shard: Shard, *tail: int, dtype: torch.dtype | None = None) -> Tensor:
    """U[0, 1) of shape (B, *tail) for this rank's B images, drawn for the global batch."""
    b = x.shape[0]
    return rank_slice(torch.rand(b * shard[1], *tail, device=x.device, dtype=dtype), b, shard)


def _randint(x: Tensor, shard: Shard, low: int, high: int, *tail: int) -> Tensor:
    """Integers in [low, high) of shape (B, *tail) for this rank's images (global draw)."""
    b = x.shape[0]
    return rank_slice(torch.randint(low, high, (b * shard[1], *tail), device=x.device), b, shard)


def _chosen(x: Tensor, p: float | Tensor, shard: Shard = (0, 1)) -> Tensor:
    """(B, 1, 1, 1) bool: which images get this transform. A tensor ``p`` (ADA's, on the
    device) is never read on the host: every image draws, at p = 1 too."""
    if isinstance(p, Tensor):
        return _rand(x, shard, 1, 1, 1) < p
    return (
        (_rand(x, shard, 1, 1, 1) < p)
        if p < 1
        else torch.ones(x.shape[0], 1, 1, 1, dtype=torch.bool, device=x.device)
    )


def color(x: Tensor, shard: Shard = (0, 1)) -> Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5), per image."""
    r = _rand(x, shard, 3, 1, 1, 1, dtype=x.dtype)  # three draws per image
    x = x + (r[:, 0] - 0.5)  # brightness
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * (r[:, 1] * 2) + mean_c  # saturation
    mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean_all) * (r[:, 2] + 0.5) + mean_all  # contrast


def translation(x: Tensor, shard: Shard = (0, 1), ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ratio * size pixels in x and y; uncovered pixels are zero (grey)."""
    b, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(x, shard, -sy, sy + 1, 1, 1)
    dx = _randint(x, shard, -sx, sx + 1, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - dy  # (B, H, 1): source row of each row
    xs = torch.arange(w, device=x.device).view(1, 1, w) - dx  # (B, 1, W)
    valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)  # (B, 1, H, W)
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    out = x.permute(0, 2, 3, 1)[bi, ys.clamp(0, h - 1), xs.clamp(0, w - 1)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2) * valid


def cutout(x: Tensor, shard: Shard = (0, 1), ratio: float = 0.5) -> Tensor:
    """Zero (grey) one rectangle of ratio * size per image, at a random centre."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _randint(x, shard, 0, h, 1, 1) - ch // 2  # centre anywhere in the image
    left = _randint(x, shard, 0, w, 1, 1) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # (B, H, W)
    return x * (~inside).unsqueeze(1)


_TRANSFORMS: dict[str, Callable[[Tensor, Shard], Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def augment(x: Tensor, policy: tuple[str, ...], p: float | Tensor = 1.0, shard: Shard = (0, 1)) -> Tensor:
    """Apply each transform of ``policy`` in order, each to a random fraction p of the images.

    ``p`` a float: at p <= 0 nothing is drawn or applied. ``p`` a 0-d tensor on x's device
    (ADA's probability on a GPU): the transforms are always computed and drawn for, and the
    draw against p picks the images, so the host never waits for the device to learn p."""
    if not policy or (not isinstance(p, Tensor) and p <= 0):
        return x
    for name in policy:
        x = torch.where(_chosen(x, p, shard), _TRANSFORMS[name](x, shard), x)
    return x


def adapt_p_(p: Tensor, real_logits: Tensor, target: float, batch: int, speed_images: int) -> None:
    """``adapt_p`` on the device, in place on the () buffer ``p``, with no host sync: the same
    float64 arithmetic, so the new p is bit for bit the host controller's."""
    r = torch.sign(real_logits.detach()).mean().double()
    step = batch / speed_images
    up = (r > target).double() * (2 * step) - step  # +-step, exactly, in float64 on the device
    p.copy_((p.double() + up).clamp(0.0, 1.0))


def adapt_p(p: float, real_logits: Tensor, target: float, batch: int, speed_images: int) -> float:
    """ADA's controller: r = E[sign(D(real))]; above ``target`` D is overfitting, so raise p by
    batch / speed_images (p can go from 0 to 1 in ``speed_images`` images), else lower it."""
    r = float(torch.sign(real_logits.detach()).mean())
    step = batch / speed_images
    return min(max(p + (step if r > target else -step), 0.0), 1.0)
