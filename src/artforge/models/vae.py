"""Variational autoencoder (Kingma & Welling 2014) for any image size.

An encoder maps an image to a Gaussian q(z|x) = N(mu, exp(logvar)); a decoder maps z back to
an image. Training minimises reconstruction error + beta * KL(q(z|x) || N(0, I)) (beta-VAE,
Higgins et al. 2017); new images decode z drawn from the prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from artforge.config import MAX_SIDE, Range, bounded, check_bounds, check_choices
from artforge.losses import kl_normal, recon_loss
from artforge.models.base import GenerativeModel, Phase
from artforge.models.blocks import (
    DownStack,
    UpStack,
    check_image_size,
    reject_options,
    stage_channels,
    stage_sizes,
)
from artforge.text import TextFields, check_text_fields, condition_vectors, make_conditioner

from ..errors import ConfigError, InternalError

Recon = Literal["mse", "bce"]
VNorm = Literal["group", "batch", "none"]


@dataclass
class VAEConfig(TextFields):
    # bounded(default, max): settings that size memory; checked before anything is built
    height: int = bounded(64, MAX_SIDE)  # image size; any size >= 8 (a run gives its data size here)
    width: int = bounded(64, MAX_SIDE)
    channels: int = bounded(3, 16)  # image channels
    latent_dim: int = bounded(128, 8192)  # size of z
    base_channels: int = bounded(64, 4096)  # channels after the encoder's first halving; doubled per halving
    max_channels: int = bounded(512, 4096)  # cap on the doubling
    recon: Recon = "mse"  # mse: Gaussian likelihood with std `sigma`; bce: Bernoulli on (x+1)/2
    sigma: float = 1.0  # std of the Gaussian p(x|z) in [-1, 1] pixel units (mse only); see below
    beta: float = 1.0  # KL weight (beta-VAE); 1 is the evidence lower bound
    norm: VNorm = "group"  # feature norm; group needs no running statistics for eval-mode samples

    # Why sigma = 1: the mse recon term is sum((x - x_hat)^2) / (2 sigma^2), the negative
    # log-likelihood of a Gaussian p(x|z) with std sigma, up to a constant (the plain summed
    # squared error is sigma = 0.71). A smaller sigma buys sharper reconstructions with more nats
    # of KL; on a few hundred images and a short run that turns q(z|x) into tight islands that
    # prior samples miss, and samples come out as colourful mixtures of several images (measured
    # on discs and bars at 32x32, 600 steps: sigma 0.1-0.5 gives mixtures, 0.7 still mostly
    # mixtures, 1.0 whole soft shapes on flat backgrounds with ~18 of 128 latent dimensions in
    # use). Lower it (0.3-0.5) for long runs on larger collections, when sharpness matters more.

    def __post_init__(self) -> None:
        check_bounds(self, "model")
        check_choices(self, "recon", "norm")
        check_text_fields(self)
        check_image_size(self.height, self.width, self.channels)
        for name in ("latent_dim", "base_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_channels < self.base_channels:
            raise ConfigError(
                f"max_channels ({self.max_channels}) must be >= base_channels ({self.base_channels})"
            )
        if not self.sigma > 0:
            raise ConfigError(f"sigma must be positive, got {self.sigma}")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")


class Encoder(nn.Module):
    """Image -> stride-2 convs + GroupNorm + SiLU -> linear heads for mu and logvar."""

    def __init__(self, c: VAEConfig, cond_dim: int = 0) -> None:
        super().__init__()
        sizes = stage_sizes(c.height, c.width)
        chans = stage_channels(len(sizes) - 1, c.base_channels, c.max_channels)
        self.body = DownStack(c.channels, sizes, chans, norm=c.norm, act="silu")
        h, w = sizes[-1]
        self.head = nn.Linear(chans[-1] * h * w + cond_dim, 2 * c.latent_dim)  # q(z | x, caption)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        feats = self.body(x).flatten(1)
        if cond is not None:
            feats = torch.cat([feats, cond.to(feats.dtype)], dim=1)
        mu, logvar = self.head(feats).chunk(2, dim=1)  # (B, D) each
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """z -> linear to the smallest map -> (resize up + conv3x3 + GroupNorm + SiLU) per stage, the
    last at (H, W) -> conv3x3 to the output."""

    def __init__(self, c: VAEConfig, cond_dim: int = 0) -> None:
        super().__init__()
        sizes = stage_sizes(c.height, c.width)
        chans = stage_channels(len(sizes) - 1, c.base_channels, c.max_channels)
        self.net = UpStack(
            c.latent_dim + cond_dim,  # p(x | z, caption)
            sizes,
            chans,
            c.channels,
            norm=c.norm,
            act="silu",
            full_res_channels=max(c.base_channels // 2, 1),  # one conv at (H, W) before the output conv
            fc_norm=False,  # the scale of z must reach the decoder (temperature, prior vs posterior)
        )

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            z = torch.cat([z, cond.to(z.dtype)], dim=1)
        return self.net(z)  # (B, C, H, W): means (mse) or logits (bce)


class VAE(GenerativeModel):
    """Convolutional VAE for any size; GroupNorm by default, so eval-mode samples need no running stats."""

    family: ClassVar[str] = "vae"
    config_class: ClassVar[type] = VAEConfig
    optim_defaults: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "betas": (0.9, 0.999)}
    ema_groups: ClassVar[tuple[str, ...]] = ("main",)
    sample_options: ClassVar[tuple[str, ...]] = ("temperature", "prompt", "cond")
    option_ranges: ClassVar[dict[str, Range]] = {
        "temperature": Range(0.0, 2.0, open_lo=True, default=1.0, help="VAE: scales the prior samples"),
    }
    config: VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        self.text = make_conditioner(config)  # text runs: a conditional VAE (Sohn et al. 2015)
        cond_dim = self.text.dim if self.text is not None else 0
        self.encoder = Encoder(config, cond_dim)
        self.decoder = Decoder(config, cond_dim)

    @property
    def conditional(self) -> bool:
        return self.text is not None

    def condition(self, prompt: str | list[str] | None, n: int) -> Tensor | None:
        """(n, text_dim) vectors from a prompt (or one per image); None if unconditional."""
        return condition_vectors(self.text if self.conditional else None, prompt, n, self.device)

    def default_optim(self) -> dict[str, Any]:
        """The preferred OptimConfig fields for this config."""
        return dict(self.optim_defaults)

    def phases(self) -> list[Phase]:
        return [Phase("main", "main")]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> (mu, logvar), each (B, latent_dim)."""
        return self.encoder(x)

    def _to_image(self, out: Tensor) -> Tensor:
        if self.config.recon == "bce":
            return torch.sigmoid(out) * 2 - 1  # logits -> [-1, 1]
        return out.clamp(-1.0, 1.0)

    def training_step(
        self, phase: str, batch: Tensor, step: int, text: list[str] | None = None
    ) -> dict[str, Tensor]:
        if phase != "main":
            raise InternalError(f"unknown phase {phase!r}; this model has ['main']")
        cond = None
        if self.text is not None:
            captions = self.training_captions(text, batch.shape[0], self.config.cond_drop)
            cond = self.text(captions, batch.device)
        mu, logvar = self.encoder(batch) if cond is None else self.encoder(batch, cond)  # (B, D) each
        eps = self.batch_randn(mu.shape[0], mu.shape[1], device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation
        out = self.decoder(z) if cond is None else self.decoder(z, cond)  # (B, C, H, W)
        if self.config.recon == "bce":
            recon = recon_loss("bce", out, (batch + 1) / 2)
        else:  # Gaussian negative log-likelihood up to a constant
            recon = recon_loss("mse", out, batch) / (2 * self.config.sigma**2)
        kl = kl_normal(mu, logvar)
        mse = (self._to_image(out.detach()) - batch).pow(2).mean()  # per pixel, for the log
        return {"loss": recon + self.config.beta * kl, "recon": recon.detach(), "kl": kl.detach(), "mse": mse}

    @torch.no_grad()
    def reconstruct(self, x: Tensor, prompt: str | list[str] | None = None) -> Tensor:
        """Images -> their reconstructions (decoding mu), in [-1, 1]."""
        cond = self.condition(prompt, x.shape[0])
        mu, _ = self.encoder(x, cond)
        return self._to_image(self.decoder(mu, cond))

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator)  # (n, D), on the CPU

    def decode(
        self,
        latents: Tensor,
        temperature: float = 1.0,
        prompt: str | list[str] | None = None,
        cond: Tensor | None = None,
        **options: Any,
    ) -> Tensor:
        """z (n, D) -> images (n, C, H, W) in [-1, 1]; ``temperature`` scales prior samples
        (< 1: closer to the typical image, less varied). Text runs take a ``prompt`` or
        precomputed ``cond`` vectors."""
        reject_options(self, options)
        self.option_ranges["temperature"].check("temperature", temperature)
        z = latents.reshape(latents.shape[0], -1).to(self.device)  # (n, D)
        if cond is None:
            cond = self.condition(prompt, z.shape[0])
        elif self.text is None:
            raise ConfigError("this run was trained without captions, so it takes no condition")
        z = z * temperature
        return self._to_image(self.decoder(z) if cond is None else self.decoder(z, cond.to(self.device)))
