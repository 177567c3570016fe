"""Optimisers by name, per-group settings, and an EMA of the sampling weights."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from .config import OptimConfig, RunConfig, from_dict
from .errors import ConfigError

# What each optimiser uses when neither the family nor the user says otherwise.
_BASE = {"name": "adam", "lr": 2e-4, "betas": (0.9, 0.999), "momentum": 0.0, "weight_decay": 0.0}


def resolve_optim(cfg: RunConfig, groups: list[str], family_defaults: dict[str, Any]) -> dict[str, dict]:
    """Concrete optimiser settings per group:
    base <- family <- family["groups"][g] <- cfg.optim <- cfg.optim_groups[g]."""
    unknown = sorted(set(cfg.optim_groups) - set(groups))
    if unknown:
        raise ConfigError(
            f"optim_groups names {unknown[0]!r}, but this model's parameter groups are {groups}"
        )
    user = {k: v for k, v in dataclasses.asdict(cfg.optim).items() if v is not None}
    family = dict(family_defaults)
    family_groups: dict[str, dict[str, Any]] = family.pop("groups", {})
    out = {}
    for g in groups:
        merged = {
            **_BASE,
            "clip": 0.0,
            **family,
            **family_groups.get(g, {}),
            **user,
            **{k: v for k, v in cfg.optim_groups.get(g, {}).items() if v is not None},  # None: default
        }
        oc: OptimConfig = from_dict(OptimConfig, merged, f"optim_groups.{g}")
        out[g] = dataclasses.asdict(oc)
    return out


def build_optimizer(
    params: list[nn.Parameter], settings: dict[str, Any], impl: str = "auto", device: str = "cpu"
) -> torch.optim.Optimizer:
    """``impl`` picks the kernels: ``fused`` (one kernel for all parameters), ``foreach``
    (batched per-op), ``loop`` (one parameter at a time), or ``auto``: fused on CUDA, torch's
    default elsewhere (on this 2-core CPU fused, foreach and loop were within 3% of each
    other, benchmarks/RESULTS.md). All give the same state dict, so resuming may switch."""
    name, lr, wd = settings["name"], settings["lr"], settings["weight_decay"]
    if impl == "auto":
        impl = "fused" if device == "cuda" else "default"
    kernels: dict[str, Any] = {
        "fused": {"fused": True},
        "foreach": {"foreach": True},
        "loop": {"foreach": False},
        "default": {},
    }[impl]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=settings["momentum"], weight_decay=wd, **kernels)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(settings["betas"]), weight_decay=wd, **kernels)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(settings["betas"]), weight_decay=wd, **kernels)
    raise ConfigError(f"unknown optimizer {name!r}; choose from ['adam', 'adamw', 'sgd']")


def ema_beta(half_life_images: float, batch_size: int) -> float:
    """Per-step decay so the average halves every ``half_life_images`` images (stylegan2)."""
    if half_life_images <= 0:
        return 0.0
    return 0.5 ** (batch_size / half_life_images)


class EMA:
    """Exponential moving average of a model's sampling weights (the groups in ema_groups).

    The half-life ramps up with training (5% of images seen, stylegan2-ada), so short runs
    are not dominated by their random initialisation.
    """

    def __init__(self, model: nn.Module, param_names: set[str], half_life: int, rampup: float = 0.05):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.names = param_names
        self.half_life = half_life
        self.rampup = rampup
        self._cache: tuple[nn.Module, tuple[list[Tensor], ...]] | None = None  # see _pairs

    @torch.no_grad()
    def update(self, model: nn.Module, images_seen: int, batch_size: int) -> None:
        half_life = min(self.half_life, images_seen * self.rampup)
        beta = ema_beta(half_life, batch_size)
        avg_dst, avg_src, copy_dst, copy_src = self._pairs(model)
        if avg_dst:  # batched: a few kernels for all tensors instead of one per tensor
            torch._foreach_lerp_(avg_dst, avg_src, 1.0 - beta)
        if copy_dst:
            torch._foreach_copy_(copy_dst, copy_src)

    def _pairs(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """(averaged EMA tensors, their sources, copied EMA tensors, their sources), built once
        per source model: loading a checkpoint copies into the same tensors, so they stay valid."""
        if self._cache is not None and self._cache[0] is model:
            return self._cache[1]
        src = dict(model.named_parameters())
        avg_dst, avg_src, copy_dst, copy_src = [], [], [], []
        for name, p in self.model.named_parameters():
            if name in self.names:
                avg_dst.append(p)
                avg_src.append(src[name])
            else:
                copy_dst.append(p)
                copy_src.append(src[name])
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            copy_dst.append(b_ema)
            copy_src.append(b)
        self._cache = (model, (avg_dst, avg_src, copy_dst, copy_src))
        return self._cache[1]
