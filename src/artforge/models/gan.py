"""GANs: a generator G and a discriminator D trained against each other (Goodfellow et al. 2014).

Two families share the training logic in ``_Adversarial``:
- ``GAN`` ("gan"): convolutional G and D that adapt to any image size (blocks.stage_sizes),
  spectral-normalised D and the hinge loss by default.
- ``DCGAN`` ("dcgan"): exactly the pytorch/examples DCGAN (Radford et al. 2016) for square
  power-of-two sizes, 64x64 being the reference.

The "k discriminator steps per generator step" of Goodfellow et al. (2014, Algorithm 1) is
``d_steps``: D trains every step (each on a fresh batch), G every ``d_steps``-th step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from artforge.config import MAX_SIDE, Range, bounded, check_bounds, check_choices
from artforge.losses import (
    gan_d_loss,
    gan_d_reject_loss,
    gan_g_loss,
    gradient_penalty,
    lecam_penalty,
    r1_penalty,
)
from artforge.models.augment import adapt_p_, augment, parse_policy
from artforge.models.base import GenerativeModel, Phase
from artforge.models.blocks import (
    DownStack,
    UpStack,
    check_image_size,
    dcgan_init_,
    reject_options,
    spectral_norm_all_,
    stage_channels,
    stage_sizes,
)
from artforge.text import TextFields, check_text_fields, condition_vectors, make_conditioner

from ..errors import ConfigError, InternalError

GanLoss = Literal["bce", "mse", "hinge", "wgan-gp", "rpgan"]
DNorm = Literal["spectral", "batch", "none"]
GNorm = Literal["batch", "pixel", "none"]
DCGANLoss = Literal["bce", "mse", "hinge"]


# -- configs --------------------------------------------------------------------------------


@dataclass
class GANConfig(TextFields):
    # bounded(default, max): settings that size memory; checked before anything is built
    height: int = bounded(64, MAX_SIDE)  # image size; any size >= 8 (a run gives its data size here)
    width: int = bounded(64, MAX_SIDE)
    channels: int = bounded(3, 16)  # image channels
    latent_dim: int = bounded(100, 8192)  # size of z (100 as in DCGAN, Radford et al. 2016)
    base_channels: int = bounded(32, 4096)  # channels after D's first halving; doubled per halving
    # G's widths (its full-size stage has this many); 0 = base_channels
    g_base_channels: int = bounded(0, 4096)
    max_channels: int = bounded(512, 4096)  # cap on the doubling
    d_norm: DNorm = "spectral"  # D's normalisation; "batch" is not allowed with wgan-gp
    g_norm: GNorm = "batch"  # G's feature norm; "pixel" has no running statistics (EMA-friendly)
    # bce (non-saturating), mse (LSGAN), hinge, wgan-gp, rpgan (relativistic pairing with R1 + R2:
    # R3GAN, Huang et al. 2025)
    loss: GanLoss = "hinge"
    d_steps: int = 1  # D steps per G step (WGAN-GP's paper uses 5)
    gp_weight: float = 10.0  # gradient-penalty weight, wgan-gp only (lambda in Gulrajani 2017)
    r1_gamma: float = 0.0  # R1 penalty gamma on real images (Mescheder 2018); 0 = off
    r1_every: int = 16  # lazy R1: a "D_reg" phase every this many steps (StyleGAN2)
    # rpgan only: gamma of its R1 (real images) and R2 (generated images) penalties, each
    # gamma/2 E||grad D||^2, lazily every r1_every steps (R3GAN uses both; 0.05 on CIFAR-10)
    rp_gamma: float = 0.05
    # DiffAugment transforms shown to D ("" = none): on emoji at 32x32 for 5 minutes, FID 121 -> 90
    augment: str = "color,translation,cutout"
    augment_p: float = 1.0  # probability of each transform per image (the start value with ADA)
    ada_target: float = 0.0  # > 0: adapt the probability so E[sign(D(real))] stays near this (ADA: 0.6)
    ada_images: int = 50_000  # ADA speed: images for the probability to go from 0 to 1
    depth: int = bounded(1, 64)  # 3x3 convs per resolution in G and D (more than 1 adds same-size convs)
    lecam_weight: float = 0.0  # LeCam regulariser on D (Tseng et al. 2021; 0.3 in their CIFAR runs); 0 = off
    lecam_decay: float = 0.99  # decay of the moving averages of D's real and fake logits it uses
    # mode seeking (MSGAN, Mao et al. 2019): G's step pairs two z with one caption and rewards
    # images that differ in proportion; against text runs' rows of look-alikes. 0 = off
    mode_seeking: float = 0.0
    # text runs: the caption also scales and shifts G's features after every stage's norm
    # (conditional batch norm, as BigGAN), not only through the input vector
    cond_norm: bool = True
    # text runs: D also sees real images under another image's caption as fake (matching-aware
    # D, Reed et al. 2016), so it must check the match, not only the realism; weight, 0 = off.
    # With cond_norm, on emoji at 15 minutes: faithfulness 0.655 -> 0.903 (benchmarks/RESULTS.md)
    mismatch_weight: float = 1.0
    # FastGAN's two small-data ideas (Liu et al. 2021). sle: skip-layer excitation in G, each
    # stage's channels gated by the output two stages earlier
    sle: bool = False
    # self-supervised D: a small decoder rebuilds each real image at half size from D's last
    # features (mean squared error, this weight, in D's loss), so D must describe the whole
    # image rather than memorise a few cues; 0 = off
    recon_weight: float = 0.0
    # minibatch standard deviation (Karras et al. 2018, StyleGAN2's D): D's last feature map
    # gains one channel, the mean over features of their standard deviation across groups of
    # this many images, so D can tell a batch of look-alikes from a varied real one and G is
    # pushed to cover more of the data (4 in StyleGAN2); 0 = off
    mbstd: int = bounded(0, 256)

    def __post_init__(self) -> None:
        check_bounds(self, "model")
        check_choices(self, "d_norm", "g_norm", "loss")
        check_text_fields(self)
        check_image_size(self.height, self.width, self.channels)
        if self.loss == "wgan-gp" and self.d_norm == "batch":
            raise ConfigError(
                "loss 'wgan-gp' needs a discriminator without batch norm (the gradient penalty is "
                "per sample); use d_norm 'spectral' or 'none'"
            )
        _check_positive(self, "latent_dim", "base_channels", "max_channels", "d_steps", "r1_every", "depth")
        if self.max_channels < self.base_channels:
            raise ConfigError(
                f"max_channels ({self.max_channels}) must be >= base_channels ({self.base_channels})"
            )
        if self.g_base_channels < 0:
            raise ConfigError(f"g_base_channels must be >= 0 (0 = base_channels), got {self.g_base_channels}")
        weights = (
            *("gp_weight", "r1_gamma", "rp_gamma", "lecam_weight"),
            *("mode_seeking", "mismatch_weight", "recon_weight"),
        )
        if min(getattr(self, name) for name in weights) < 0:
            raise ConfigError(f"{', '.join(weights)} must each be >= 0")
        if self.mbstd < 0:
            raise ConfigError(f"mbstd is a group size (0 = off), got {self.mbstd}")
        if not 0 <= self.lecam_decay < 1:
            raise ConfigError(f"lecam_decay must be in [0, 1), got {self.lecam_decay}")
        parse_policy(self.augment)
        if not 0 <= self.augment_p <= 1:
            raise ConfigError(f"augment_p must be in [0, 1], got {self.augment_p}")
        if not 0 <= self.ada_target < 1:
            raise ConfigError(f"ada_target must be in [0, 1), got {self.ada_target}")
        if self.ada_images < 1:
            raise ConfigError(f"ada_images must be at least 1, got {self.ada_images}")


@dataclass
class DCGANConfig:
    # square power of two >= 16; 64 is the reference (a run gives its data size here)
    height: int = bounded(64, MAX_SIDE)
    width: int = bounded(64, MAX_SIDE)
    channels: int = bounded(3, 16)  # nc
    latent_dim: int = bounded(100, 8192)  # nz
    ngf: int = bounded(64, 4096)  # generator width
    ndf: int = bounded(64, 4096)  # discriminator width
    loss: DCGANLoss = "bce"  # bce is the original (non-saturating); mse, hinge also work
    d_steps: int = 1  # D steps per G step

    def __post_init__(self) -> None:
        check_bounds(self, "model")
        if self.loss == "wgan-gp":
            raise ConfigError("dcgan's discriminator uses batch norm, so no wgan-gp; use --model gan")
        check_choices(self, "loss")
        s = self.height
        if self.height != self.width or s < 16 or s & (s - 1):
            raise ConfigError(
                f"dcgan needs a square power-of-two size >= 16 (16, 32, 64, 128, ...), got "
                f"{self.width}x{self.height} (width x height); use --model gan for other sizes"
            )
        if self.channels < 1:
            raise ConfigError(f"channels must be at least 1, got {self.channels}")
        _check_positive(self, "latent_dim", "ngf", "ndf", "d_steps")


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(obj, name)}")


# -- shared training logic ------------------------------------------------------------------


def mode_seeking_ratio(images: Tensor, z: Tensor) -> Tensor:
    """MSGAN's ratio (Mao et al. 2019): mean |G(z1) - G(z2)| / mean |z1 - z2| over the pairs
    (first half, second half) of a batch; G maximises it so that different noise gives
    different images under one condition."""
    half = images.shape[0] // 2
    num = (images[:half] - images[half : 2 * half]).abs().mean()
    return num / (z[:half] - z[half : 2 * half]).abs().mean().to(num.dtype)


class _Adversarial(GenerativeModel):
    """Phases, losses and sampling common to GAN and DCGAN; subclasses build ``G`` and ``D``."""

    optim_defaults: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 2e-4, "betas": (0.5, 0.999)}
    ema_groups: ClassVar[tuple[str, ...]] = ("G",)
    sample_options: ClassVar[tuple[str, ...]] = ("truncation",)
    option_ranges: ClassVar[dict[str, Range]] = {
        "truncation": Range(
            0.0, 2.0, open_lo=True, default=1.0, help="GAN: below 1 is safer, above is wilder"
        ),
    }

    G: nn.Module  # (B, latent_dim) -> (B, C, H, W) in [-1, 1]
    D: nn.Module  # (B, C, H, W) -> logits (B,)

    def default_optim(self) -> dict[str, Any]:
        """The preferred OptimConfig fields for this config."""
        return dict(self.optim_defaults)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"G": list(self.G.parameters()), "D": list(self.D.parameters())}

    def phases(self) -> list[Phase]:
        return [Phase("D", "D"), Phase("G", "G", every=self.config.d_steps)]

    @property
    def conditional(self) -> bool:
        return getattr(self.G, "text", None) is not None

    def _conds(
        self, text: list[str] | None, n: int, device: torch.device, paired: bool = False
    ) -> tuple[Any, Any]:
        """Text runs: G's and D's condition vectors for this rank's captions (some dropped to "").
        ``paired``: the second half of the batch repeats the first half's captions."""
        if not self.conditional:
            return None, None
        captions = self.training_captions(text, n, self.config.cond_drop)
        if paired:
            half = n // 2
            captions = captions[:half] * 2 + captions[2 * half :]
        return self.G.text(captions, device), self.D.text(captions, device)

    def _g(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self.G(z) if cond is None else self.G(z, cond)

    def _d(self, x: Tensor, cond: Tensor | None) -> Tensor:
        return self.D(x) if cond is None else self.D(x, cond)

    def training_step(
        self, phase: str, batch: Tensor, step: int, text: list[str] | None = None
    ) -> dict[str, Tensor]:
        if phase not in ("D", "G"):
            return self._extra_step(phase, batch, step, text)
        kind = self.config.loss
        z = self.batch_randn(batch.shape[0], self.config.latent_dim, device=batch.device)  # (B, D)
        seek = phase == "G" and getattr(self.config, "mode_seeking", 0) > 0 and batch.shape[0] >= 2
        cg, cd = self._conds(text, batch.shape[0], batch.device, paired=seek)
        if phase == "D":
            with torch.no_grad():  # G is frozen in this phase
                fake = self._g(z, cg)  # (B, C, H, W)
            real, fake = self._augment(batch), self._augment(fake)
            real_logits, extra = self._d_real(real, cd)  # (B,), {name: weighted term}
            fake_logits = self._d(fake, cd)  # (B,)
            loss = gan_d_loss(kind, real_logits, fake_logits)
            out = {"d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}
            if kind == "wgan-gp":
                gp = gradient_penalty(lambda x: self._d(x, cd), real, fake)
                loss = loss + self.config.gp_weight * gp
                out["gp"] = gp.detach()
            out.update(self._adapt(real_logits))
            extra.update(self._regularise(real, real_logits, fake_logits, cd))
            for name, term in extra.items():
                loss = loss + term
                out[name] = term.detach()
            return {"loss": loss, **out}
        fake = self._g(z, cg)  # (B, C, H, W)
        fake_logits = self._d(self._augment(fake), cd)  # (B,)
        real_logits = None
        if kind == "rpgan":  # G ranks each fake against the real image it is paired with
            with torch.no_grad():  # D is frozen in this phase; the real side does not depend on G
                real_logits = self._d(self._augment(batch), cd)  # (B,)
        loss = gan_g_loss(kind, fake_logits, real_logits)
        out = {"d_fake": fake_logits.detach().mean()}
        if seek:
            ratio = mode_seeking_ratio(fake, z)
            loss = loss + self.config.mode_seeking / (ratio + 1e-5)
            out["ms_ratio"] = ratio.detach()
        return {"loss": loss, **out}

    def _augment(self, x: Tensor) -> Tensor:
        """What D sees of an image batch; the identity unless a subclass augments."""
        return x

    def _d_real(self, real: Tensor, cond: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """D's logits on the real batch, and any extra (weighted) loss terms from the same pass."""
        return self._d(real, cond), {}

    def _adapt(self, real_logits: Tensor) -> dict[str, Tensor]:
        """Update any adaptive state after a D step; values to log."""
        return {}

    def _regularise(
        self, real: Tensor, real_logits: Tensor, fake_logits: Tensor, cond: Tensor | None
    ) -> dict[str, Tensor]:
        """Extra terms for D's loss (already weighted), by the name they are logged under;
        ``real`` is the batch as D saw it, ``cond`` D's condition vectors (text runs)."""
        return {}

    def _extra_step(
        self, phase: str, batch: Tensor, step: int, text: list[str] | None = None
    ) -> dict[str, Tensor]:
        raise InternalError(f"unknown phase {phase!r}; this model has {[p.name for p in self.phases()]}")

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator)  # (n, D), on the CPU

    def condition(self, prompt: str | list[str] | None, n: int) -> Tensor | None:
        """(n, text_dim) vectors for G from a prompt (or one per image); None if unconditional.
        A text run sampled without a prompt gets "" (what it learned from dropped captions)."""
        return condition_vectors(self.G.text if self.conditional else None, prompt, n, self.device)

    def decode(
        self,
        latents: Tensor,
        truncation: float = 1.0,
        prompt: str | list[str] | None = None,
        cond: Tensor | None = None,
        **options: Any,
    ) -> Tensor:
        """z (n, D) -> images (n, C, H, W) in [-1, 1].

        ``truncation`` psi scales z (the simple truncation trick, Brock et al. 2019 / Marchesi 2017):
        psi < 1 keeps samples near the centre of the prior, trading variety for fidelity. Text
        runs take a ``prompt`` or precomputed ``cond`` vectors (e.g. a blend of two prompts).
        """
        reject_options(self, options)
        self.option_ranges["truncation"].check("truncation", truncation)
        z = latents.reshape(latents.shape[0], -1).to(self.device)  # (n, D); accepts (n, D, 1, 1)
        if cond is None:
            cond = self.condition(prompt, z.shape[0])
        elif not self.conditional:
            raise ConfigError("this run was trained without captions, so it takes no condition")
        return self._g(z * truncation, None if cond is None else cond.to(self.device))


# -- GAN: any size ------------------------------------------------------------------------------


class Generator(nn.Module):
    """z -> linear to the smallest map -> (resize up + conv3x3 + BN + ReLU) per stage, the last
    at (H, W) -> conv3x3 to RGB -> tanh."""

    def __init__(self, c: GANConfig) -> None:
        super().__init__()
        sizes = stage_sizes(c.height, c.width)
        base = c.g_base_channels or c.base_channels
        chans = stage_channels(len(sizes) - 1, base, max(c.max_channels, base))
        full = max(base // 2, 1)  # one conv at (H, W) before RGB: smooths nearest-resize blocks
        self.text = make_conditioner(c)  # text runs: the caption's vector is appended to z
        cond_dim = self.text.dim if self.text is not None else 0
        self.cond_norm = bool(cond_dim and c.cond_norm)  # ... and modulates every stage
        self.net = UpStack(
            c.latent_dim + cond_dim,
            sizes,
            chans,
            c.channels,
            norm=c.g_norm,
            act="relu",
            full_res_channels=full,
            depth=c.depth,
            cond_dim=cond_dim if self.cond_norm else 0,
            sle=c.sle,
        )

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            cond = cond.to(z.dtype)
            z = torch.cat([z, cond], dim=1)
        return torch.tanh(self.net(z, cond if self.cond_norm else None))  # (B, C, H, W)


class Discriminator(nn.Module):
    """Image -> stride-2 convs + LeakyReLU(0.2) (ceil halving) -> linear head on the flat map."""

    def __init__(self, c: GANConfig) -> None:
        super().__init__()
        sizes = stage_sizes(c.height, c.width)
        chans = stage_channels(len(sizes) - 1, c.base_channels, c.max_channels)
        self.body = DownStack(c.channels, sizes, chans, norm=c.d_norm, act="lrelu", depth=c.depth)
        h, w = sizes[-1]
        feat_dim = chans[-1] * h * w
        self.mbstd = c.mbstd
        self.head = nn.Linear(feat_dim + (h * w if c.mbstd else 0), 1)
        # text runs: a projection discriminator (Miyato & Koyama 2018) adds <embed(caption), features>
        self.text = make_conditioner(c)
        self.embed = nn.Linear(self.text.dim, feat_dim, bias=False) if self.text is not None else None
        self.decoder = _decoder(sizes, chans, c.channels) if c.recon_weight > 0 else None

    def forward(
        self, x: Tensor, cond: Tensor | None = None, recon: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B,); with ``recon``, also the decoder's half-size image (B, C, h1, w1)."""
        fmap = self.body(x)  # (B, C_k, h_k, w_k)
        feats = fmap.flatten(1)  # (B, F)
        if self.mbstd:
            spread = minibatch_std(fmap, self.mbstd).flatten(1)  # (B, h_k * w_k)
            out = self.head(torch.cat([feats, spread], 1)).squeeze(1)  # (B,)
        else:
            out = self.head(feats).squeeze(1)  # (B,)
        if self.embed is not None and cond is not None:
            out = out + (self.embed(cond.to(feats.dtype)) * feats).sum(1)
        if recon:
            if self.decoder is None:
                raise InternalError("this discriminator has no decoder (recon_weight is 0)")
            return out, self.decoder(fmap)
        return out


def minibatch_std(fmap: Tensor, group: int) -> Tensor:
    """(B, 1, h, w): for each image, the standard deviation of every feature across its group
    of images (consecutive images; the largest divisor of B up to ``group``), averaged over the
    channels (StyleGAN2's layer with one channel). One image alone scores 0."""
    b, c, h, w = fmap.shape
    g = max(d for d in range(1, min(group, b) + 1) if b % d == 0)
    y = fmap.float().reshape(g, b // g, c, h, w)  # (G, M, C, h, w): image i is in group i % M
    y = (y.var(0, unbiased=False) + 1e-8).sqrt()  # (M, C, h, w)
    y = y.mean(1, keepdim=True)  # (M, 1, h, w)
    return y.repeat(g, 1, 1, 1).to(fmap.dtype)  # (B, 1, h, w)


def _decoder(sizes: list[tuple[int, int]], chans: list[int], out_channels: int) -> nn.Sequential:
    """D's smallest map -> an image at sizes[1] (half size): per stage nearest-resize + 3x3 conv
    (half D's width there, at least 8) + LeakyReLU, then a 3x3 conv to the image channels + tanh."""
    layers: list[nn.Module] = []
    c_prev = chans[-1]
    for i in range(len(chans) - 1, 0, -1):  # chans[i] at sizes[i + 1] -> sizes[i]
        c = max(chans[i - 1] // 2, 8)
        layers += [
            nn.Upsample(size=sizes[i], mode="nearest"),
            nn.Conv2d(c_prev, c, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        c_prev = c
    layers += [nn.Conv2d(c_prev, out_channels, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


class GAN(_Adversarial):
    """Convolutional GAN for any image size; hinge loss + spectral-norm D by default (Miyato 2018).

    Defaults measured on the built-in shapes at 32x32 with 2.5 minutes on 2 CPU cores
    (benchmarks/RESULTS.md): base_channels 32 trains 3x more steps per minute than 64 and
    makes clearer shapes in that time; Adam with beta1 = 0 (as SN-GAN / BigGAN / StyleGAN2)
    and a discriminator learning rate twice the generator's (TTUR, Heusel et al. 2017) gave
    flat backgrounds and varied palettes where (0.5, 0.999) at one rate gave one palette.
    """

    family: ClassVar[str] = "gan"
    config_class: ClassVar[type] = GANConfig
    sample_options: ClassVar[tuple[str, ...]] = ("truncation", "prompt", "cond")
    config: GANConfig
    aug_p: Tensor  # () buffer, only with adaptive augmentation
    optim_defaults: ClassVar[dict[str, Any]] = {
        "name": "adam",
        "lr": 4e-4,
        "betas": (0.0, 0.99),
        "groups": {"D": {"lr": 8e-4}},  # TTUR: D learns twice as fast; --lr sets both
    }

    def __init__(self, config: GANConfig) -> None:
        super().__init__(config)
        self.G = Generator(config)
        self.D = Discriminator(config)
        dcgan_init_(self)
        if config.d_norm == "spectral":
            spectral_norm_all_(self.D)
        self.policy = parse_policy(config.augment)
        if self.policy and config.ada_target > 0:  # saved with the weights, so a resume continues it
            self.register_buffer("aug_p", torch.tensor(config.augment_p))
        if config.lecam_weight > 0:  # moving averages of D's (real, fake) logits; averaged over ranks
            self.register_buffer("lecam_ema", torch.zeros(2))

    def _augment(self, x: Tensor) -> Tensor:
        if not self.policy:
            return x
        if not hasattr(self, "aug_p"):
            return augment(x, self.policy, self.config.augment_p, self.shard)
        # ADA's p lives on the device: read on the host where that is free (the CPU); on a GPU
        # the draw compares against the tensor, so the step never waits for the device
        p = float(self.aug_p) if self.aug_p.device.type == "cpu" else self.aug_p
        return augment(x, self.policy, p, self.shard)

    def _adapt(self, real_logits: Tensor) -> dict[str, Tensor]:
        if not hasattr(self, "aug_p"):
            return {}
        c = self.config
        # in place on the device, bit for bit the host controller (augment.adapt_p)
        adapt_p_(self.aug_p, real_logits, c.ada_target, real_logits.shape[0], c.ada_images)
        return {"aug_p": self.aug_p.detach().clone()}

    def _d_real(self, real: Tensor, cond: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        if self.D.decoder is None:
            return super()._d_real(real, cond)
        logits, recon = self.D(real, cond, recon=True)
        target = F.adaptive_avg_pool2d(real, recon.shape[-2:])  # the batch D saw, at half size
        return logits, {"recon": self.config.recon_weight * F.mse_loss(recon.float(), target.float())}

    def _regularise(
        self, real: Tensor, real_logits: Tensor, fake_logits: Tensor, cond: Tensor | None
    ) -> dict[str, Tensor]:
        c, out = self.config, {}
        if c.lecam_weight > 0:
            with torch.no_grad():
                means = torch.stack([real_logits.mean(), fake_logits.mean()]).float()  # fp32 under autocast
                self.lecam_ema.lerp_(means, 1 - c.lecam_decay)
            ema_real, ema_fake = self.lecam_ema.to(real_logits.dtype)
            out["lecam"] = c.lecam_weight * lecam_penalty(real_logits, fake_logits, ema_real, ema_fake)
        if c.mismatch_weight > 0 and cond is not None:
            out["mismatch"] = c.mismatch_weight * self._mismatch(real, cond)
        return out

    def _mismatch(self, real: Tensor, cond: Tensor) -> Tensor:
        """D's loss on real images each under the next image's caption, counted as fake; pairs
        whose captions agree, or where either was dropped (""), do not count."""
        wrong = cond.roll(1, dims=0)  # (B, T)
        keep = (wrong != cond).any(1) & (cond != 0).any(1) & (wrong != 0).any(1)  # (B,)
        if not bool(keep.any()):
            return real.new_zeros(())
        return gan_d_reject_loss(self.config.loss, self._d(real[keep], wrong[keep]))

    def default_optim(self) -> dict[str, Any]:
        if self.config.loss == "wgan-gp":  # Gulrajani et al. 2017, Algorithm 1
            return {"name": "adam", "lr": 1e-4, "betas": (0.0, 0.9)}
        return dict(self.optim_defaults)

    def _regularised(self) -> bool:
        c = self.config
        return c.r1_gamma > 0 or (c.loss == "rpgan" and c.rp_gamma > 0)

    def phases(self) -> list[Phase]:
        phases = [Phase("D", "D")]
        if self._regularised():
            phases.append(Phase("D_reg", "D", every=self.config.r1_every))
        return [*phases, Phase("G", "G", every=self.config.d_steps)]

    def _extra_step(
        self, phase: str, batch: Tensor, step: int, text: list[str] | None = None
    ) -> dict[str, Tensor]:
        if phase != "D_reg" or not self._regularised():
            return super()._extra_step(phase, batch, step, text)
        c = self.config
        cg, cd = self._conds(text, batch.shape[0], batch.device)
        real = self._augment(batch).detach().requires_grad_(True)  # (B, C, H, W)
        r1 = r1_penalty(self._d(real, cd), real)
        # gamma/2 * R1, times the interval so lazy regularisation keeps its strength (StyleGAN2)
        gamma = c.r1_gamma + (c.rp_gamma if c.loss == "rpgan" else 0.0)
        loss = 0.5 * gamma * r1 * c.r1_every
        out = {"r1": r1.detach()}
        if c.loss == "rpgan" and c.rp_gamma > 0:  # R2: the same penalty on generated images
            z = self.batch_randn(batch.shape[0], c.latent_dim, device=batch.device)  # (B, D)
            with torch.no_grad():
                fake = self._g(z, cg)  # (B, C, H, W)
            fake = self._augment(fake).detach().requires_grad_(True)
            r2 = r1_penalty(self._d(fake, cd), fake)
            loss = loss + 0.5 * c.rp_gamma * r2 * c.r1_every
            out["r2"] = r2.detach()
        return {"loss": loss, **out}


# -- DCGAN: the pytorch/examples reference --------------------------------------------------


def _dcgan_depth(size: int) -> int:
    """Middle (conv + BN) blocks of G and of D: log2(size) - 3; 64 -> 3 (the reference), 32 -> 2."""
    return int(math.log2(size)) - 3


class DCGANGenerator(nn.Module):
    """pytorch/examples dcgan ``Generator``: ConvTranspose2d stack from (nz, 1, 1) to (nc, S, S)."""

    def __init__(self, c: DCGANConfig) -> None:
        super().__init__()
        nz, ngf, nc = c.latent_dim, c.ngf, c.channels
        m = c.height // 8  # channel multiplier at 4x4: 8 for 64x64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, ngf * m, 4, 1, 0, bias=False),  # (B, ngf*m, 4, 4)
            nn.BatchNorm2d(ngf * m),
            nn.ReLU(True),
        ]
        for _ in range(_dcgan_depth(c.height)):  # each doubles the size, halves the channels
            layers += [
                nn.ConvTranspose2d(ngf * m, ngf * m // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * m // 2),
                nn.ReLU(True),
            ]
            m //= 2
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]  # (B, nc, S, S)
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z.reshape(z.shape[0], -1, 1, 1))  # (B, nc, S, S)


class DCGANDiscriminator(nn.Module):
    """pytorch/examples dcgan ``Discriminator`` returning logits (its final Sigmoid moves into the loss)."""

    def __init__(self, c: DCGANConfig) -> None:
        super().__init__()
        ndf, nc = c.ndf, c.channels
        layers: list[nn.Module] = [
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),  # (B, ndf, S/2, S/2)
            nn.LeakyReLU(0.2, inplace=True),
        ]
        m = 1
        for _ in range(_dcgan_depth(c.height)):  # each halves the size, doubles the channels
            layers += [
                nn.Conv2d(ndf * m, ndf * m * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * m * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            m *= 2
        layers.append(nn.Conv2d(ndf * m, 1, 4, 1, 0, bias=False))  # (B, 1, 1, 1)
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).view(-1)  # (B,)


class DCGAN(_Adversarial):
    """The pytorch/examples DCGAN (Radford et al. 2016): same layers, init, loss and Adam settings."""

    family: ClassVar[str] = "dcgan"
    config_class: ClassVar[type] = DCGANConfig
    config: DCGANConfig

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__(config)
        self.G = DCGANGenerator(config)
        self.D = DCGANDiscriminator(config)
        dcgan_init_(self)
