"""The one interface every model family implements, and its save/load (written once).

A family is an ``nn.Module`` that knows its parameter groups (one per optimiser), its
training phases, how to compute one phase's loss on a batch, and how to turn latents into
images. The Trainer owns backward, precision, clipping, EMA and checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from artforge.config import Range
from artforge.io import load_safetensors, save_safetensors

from ..errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the run-folder layout changes incompatibly


@dataclass(frozen=True)
class Phase:
    """One optimisation phase of a training step (stylegan2-ada's Gmain/Dmain/... idea)."""

    name: str  # "main" | "D" | "G"; used as the log prefix
    opt: str  # key into param_groups(): which optimiser steps after this phase
    every: int = 1  # run when step % every == 0


def rank_slice(full: Tensor, n: int, shard: tuple[int, int]) -> Tensor:
    """This rank's n rows of noise drawn for the global batch of n * world rows."""
    rank, world = shard
    return full if world == 1 else full[rank * n : (rank + 1) * n]


class GenerativeModel(nn.Module):
    """Base class of the model families. Subclasses set ``family`` and ``config_class``.

    Images are float tensors (B, C, H, W) in [-1, 1]. Latents are sampled on the CPU from an
    explicit ``torch.Generator`` so a seed gives the same images on every device.
    """

    family: ClassVar[str]
    config_class: ClassVar[type]
    optim_defaults: ClassVar[dict[str, Any]] = {}  # preferred OptimConfig fields; "groups": per group
    ema_groups: ClassVar[tuple[str, ...]] = ("main",)  # groups whose weights make the samples
    sample_options: ClassVar[tuple[str, ...]] = ()  # keyword options decode()/sample() take
    # the numeric ones' ranges, checked by decode() and served to the studio's page
    option_ranges: ClassVar[dict[str, Range]] = {}
    ema_default: ClassVar[bool] = False  # keep an EMA of ema_groups unless train.ema says otherwise

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.shard = (0, 1)  # (rank, world size) under data-parallel training; see batch_randn

    # -- training noise -------------------------------------------------------------------
    # Training noise is drawn for the *global* batch from the global RNG (which every rank
    # seeds alike) and each rank keeps its own slice. So a run on N processes sees the same
    # noise as one process on the whole batch, and the ranks' RNGs never drift apart.
    def _slice(self, full: Tensor, n: int) -> Tensor:
        return rank_slice(full, n, self.shard)

    def batch_randn(self, n: int, *shape: int, device: torch.device) -> Tensor:
        """Standard normal (n, *shape) for this rank's n images."""
        return self._slice(torch.randn(n * self.shard[1], *shape, device=device), n)

    def batch_randint(self, high: int, n: int, device: torch.device) -> Tensor:
        """Integers in [0, high) (n,) for this rank's n images."""
        return self._slice(torch.randint(0, high, (n * self.shard[1],), device=device), n)

    def training_captions(self, text: list[str] | None, n: int, drop: float) -> list[str]:
        """This rank's n captions with a share ``drop`` replaced by "" (the unconditional input
        classifier-free guidance contrasts with), drawn for the global batch like all noise."""
        if text is None:
            raise DataError("a text-conditioned model trains on captions; none were given")
        keep = self._slice(torch.rand(n * self.shard[1]), n)
        return [t if float(u) >= drop else "" for t, u in zip(text, keep, strict=True)]

    # -- training -----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": list(self.parameters())}

    def default_optim(self) -> dict[str, Any]:
        """OptimConfig fields this model prefers (may depend on its config)."""
        return dict(self.optim_defaults)

    def phases(self) -> list[Phase]:
        return [Phase(name, name) for name in self.param_groups()]

    def training_step(self, phase: str, batch: Tensor, step: int) -> dict[str, Tensor]:
        """Loss of one phase on a batch (B, C, H, W) in [-1, 1]; the dict holds "loss"."""
        raise NotImplementedError

    # -- sampling -----------------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n latents on the CPU (the caller moves them to the model's device)."""
        raise NotImplementedError

    def decode(self, latents: Tensor, **options: Any) -> Tensor:
        """Latents -> images (n, C, H, W) in [-1, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        z = self.sample_latents(n, generator).to(self.device)
        return self.decode(z, **options)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


# -- save / load ----------------------------------------------------------------------------


def save_weights(module: nn.Module, path: str | Path) -> None:
    """Write the module's state dict as safetensors, via a temporary name and a rename."""
    save_safetensors(module.state_dict(), path, metadata={"format": "pt"})


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is refused, never run."""
    return load_safetensors(path)


def load_state_into(model: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """load_state_dict(strict) with a message that names the file and the mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise DataError(
            f"{source}: weights do not match the model "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise DataError(
                f"{source}: tensor {k!r} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
            )
        if v.dtype != own[k].dtype:
            raise DataError(f"{source}: tensor {k!r} has dtype {v.dtype}, the model expects {own[k].dtype}")
    model.load_state_dict(state, strict=True)
