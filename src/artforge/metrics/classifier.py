"""Training a small judge from scratch: the loop shared by prompt faithfulness (faithfulness.py)
and the sound judge (evaluate_audio.py); and a linear probe on fixed features (``LinearProbe``,
prompt faithfulness's second judge, on the FID network's features).

Both fit a few-layer CNN on uint8 images of the real data to predict a label, with AdamW and a
one-cycle learning rate; they differ in how batches are drawn (class-balanced, or epochs of a
shuffled order) and in the augmentation, which the caller gives. Every random choice (the
weights, the batches, the augmentation) comes from ``seed``, and the caller's global RNG is
left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Net = TypeVar("Net", bound=nn.Module)

LR = 2e-3
WEIGHT_DECAY = 1e-4


def to_signed_unit(images: Tensor) -> Tensor:
    """uint8 images -> float in [-1, 1]; float images pass through (already in [-1, 1])."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def balanced_batches(
    labels: Tensor, n_classes: int, batch: int, steps: int, g: torch.Generator
) -> Iterator[Tensor]:
    """``steps`` batches of indices drawn with replacement, each class equally likely (so a
    label that is 60% of the data does not drown the small ones)."""
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).float()
    weights = (1 / counts)[labels]
    for _ in range(steps):
        yield torch.multinomial(weights, batch, replacement=True, generator=g)


def epoch_batches(n: int, batch: int, epochs: int, g: torch.Generator) -> Iterator[Tensor]:
    """Each epoch a new order of the ``n`` items, cut into batches (the last one may be short)."""
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            yield perm[i : i + batch]


def fit_classifier(
    make_net: Callable[[], Net],
    images: Tensor,
    labels: Tensor,
    steps: int,
    batches: Callable[[torch.Generator], Iterator[Tensor]],
    augment: Callable[[Tensor, torch.Generator], Tensor],
    seed: int = 0,
) -> Net:
    """Train ``make_net()`` (built with torch seeded to ``seed``) on ``images`` (N, C, H, W)
    uint8 and ``labels`` (N,) by cross-entropy for ``steps`` batches of ``batches(g)``, each
    augmented by ``augment(x, g)`` (x in [-1, 1]); returns it in eval mode. ``g`` is one
    generator seeded with ``seed``, so the batches and the augmentation draw in step order."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    net.train()
    for idx in batches(g):
        x = augment(to_signed_unit(images[idx]), g)  # (B, C, H, W)
        loss = F.cross_entropy(net(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


class LinearProbe:
    """Multinomial logistic regression on fixed features (a linear probe): the features are
    standardised with the training set's mean and spread, the classes weighted by inverse
    frequency (so a label that is 60% of the data does not decide the fit), with an L2 penalty;
    fitted by full-batch L-BFGS in float64, so the fit is a deterministic function of its data."""

    def __init__(
        self, features: Tensor, labels: Tensor, n_classes: int, *, l2: float = 1e-3, max_iter: int = 200
    ) -> None:
        x = torch.as_tensor(features, dtype=torch.float64)  # (N, D)
        y = torch.as_tensor(labels, dtype=torch.long)  # (N,)
        self.mean = x.mean(0)
        self.std = x.std(0).clamp(min=1e-6)
        x = (x - self.mean) / self.std
        counts = torch.bincount(y, minlength=n_classes).clamp(min=1).double()
        class_weight = len(y) / (n_classes * counts)  # (K,)
        self.weight = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        self.bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [self.weight, self.bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
        )

        def closure() -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(x @ self.weight + self.bias, y, weight=class_weight)
            loss = loss + l2 * (self.weight * self.weight).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    @torch.no_grad()
    def predict(self, features: Tensor) -> Tensor:
        """The most likely class (N,) of features (N, D)."""
        x = (torch.as_tensor(features, dtype=torch.float64) - self.mean) / self.std
        return (x @ self.weight + self.bias).argmax(1)
