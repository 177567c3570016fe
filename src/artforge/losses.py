"""Loss functions of the model families: pure functions of their inputs.

GAN losses take discriminator logits (any shape, usually (B,)); reconstruction losses sum
over pixels and average over the batch, so they are log-likelihoods per image (VAE papers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError, InternalError

GanLoss = Literal["bce", "mse", "hinge", "wgan-gp", "rpgan"]
ReconLoss = Literal["mse", "bce"]

GAN_LOSSES: tuple[str, ...] = ("bce", "mse", "hinge", "wgan-gp", "rpgan")
RECON_LOSSES: tuple[str, ...] = ("mse", "bce")


def _check_kind(kind: str, choices: tuple[str, ...], what: str) -> None:
    if kind not in choices:
        raise ConfigError(f"unknown {what} {kind!r}; choose from {sorted(choices)}")


# -- GAN ------------------------------------------------------------------------------------


def gan_d_loss(kind: GanLoss | str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator (critic) loss for the GAN loss ``kind``: its term on real logits plus its
    term on fake ones; for "rpgan" one term on each (real, fake) pair (``rpgan_d_loss``)."""
    if kind == "rpgan":
        return rpgan_d_loss(real_logits, fake_logits)
    return gan_d_accept_loss(kind, real_logits) + gan_d_reject_loss(kind, fake_logits)


def rpgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Relativistic pairing D loss -log sigmoid(D(x_r) - D(x_f)) over pairs (RpGAN, Jolicoeur-
    Martineau 2019; R3GAN, Huang et al. 2025): D need only rank each real image above the fake
    it is paired with, so G cannot gain by moving every fake towards one region D likes, the
    mode dropping of the non-relativistic losses (R3GAN, section 2.1)."""
    return F.softplus(fake_logits - real_logits).mean()


def rpgan_g_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Relativistic pairing G loss -log sigmoid(D(x_f) - D(x_r)): its fakes ranked above the
    real images they are paired with."""
    return F.softplus(real_logits - fake_logits).mean()


def gan_d_accept_loss(kind: GanLoss | str, logits: Tensor) -> Tensor:
    """The part of D's loss for ``kind`` that pushes logits of real images towards "real"
    ("rpgan", whose terms are pairs, uses the non-saturating bce term here)."""
    _check_kind(kind, GAN_LOSSES, "GAN loss")
    if kind in ("bce", "rpgan"):  # -log D(x), D = sigmoid(logits) (Goodfellow et al. 2014)
        return F.softplus(-logits).mean()
    if kind == "mse":  # least squares 1/2 (D(x) - 1)^2, target b = 1 (Mao et al. 2017)
        return 0.5 * ((logits - 1) ** 2).mean()
    if kind == "hinge":  # max(0, 1 - D(x)) (Lim & Ye 2017; Miyato et al. 2018)
        return F.relu(1 - logits).mean()
    return -logits.mean()  # Wasserstein critic -D(x) (Arjovsky 2017; with gradient_penalty: Gulrajani 2017)


def gan_d_reject_loss(kind: GanLoss | str, logits: Tensor) -> Tensor:
    """The part of D's loss for ``kind`` that pushes logits towards "fake": on G's images, and on
    other negatives (a real image under a caption that is not its own; "rpgan", whose terms are
    pairs, uses the non-saturating bce term here)."""
    _check_kind(kind, GAN_LOSSES, "GAN loss")
    if kind in ("bce", "rpgan"):  # -log(1 - D(G(z)))
        return F.softplus(logits).mean()
    if kind == "mse":  # 1/2 D(G(z))^2, target a = 0
        return 0.5 * (logits**2).mean()
    if kind == "hinge":  # max(0, 1 + D(G(z)))
        return F.relu(1 + logits).mean()
    return logits.mean()  # D(G(z))


def gan_g_loss(kind: GanLoss | str, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """Generator loss on the discriminator's logits for generated images; "rpgan" also needs
    the logits of the real images they are paired with."""
    _check_kind(kind, GAN_LOSSES, "GAN loss")
    if kind == "rpgan":
        if real_logits is None:
            raise InternalError("the rpgan generator loss needs the real logits of its pairs")
        return rpgan_g_loss(real_logits, fake_logits)
    g: dict[str, Callable[[Tensor], Tensor]] = {
        "bce": bce_g_loss,
        "mse": lsgan_g_loss,
        "hinge": hinge_g_loss,
        "wgan-gp": wasserstein_g_loss,
    }
    return g[kind](fake_logits)


def bce_g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
    return F.softplus(-fake_logits).mean()


def lsgan_g_loss(fake_logits: Tensor) -> Tensor:
    """Least squares generator loss 1/2 (D(G(z)) - 1)^2, target c=1 (Mao et al. 2017)."""
    return 0.5 * ((fake_logits - 1) ** 2).mean()


def lecam_penalty(real_logits: Tensor, fake_logits: Tensor, ema_real: Tensor, ema_fake: Tensor) -> Tensor:
    """LeCam regulariser (Tseng et al. 2021): pulls D's real logits towards the moving average of
    its fake logits and the fake towards the real average, only where they overshoot. It bounds
    how far D can separate the few training images from G's, the overfitting of small data."""
    return F.relu(real_logits - ema_fake).pow(2).mean() + F.relu(ema_real - fake_logits).pow(2).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Hinge generator loss -D(G(z)) (Lim & Ye 2017; Miyato et al. 2018)."""
    return -fake_logits.mean()


def wasserstein_g_loss(fake_logits: Tensor) -> Tensor:
    """Wasserstein generator loss -D(G(z)) (Arjovsky et al. 2017; Gulrajani et al. 2017)."""
    return -fake_logits.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, alpha: Tensor | None = None
) -> Tensor:
    """E[(||grad critic(x_hat)||_2 - 1)^2] at random interpolates x_hat (WGAN-GP, Gulrajani et al. 2017).

    ``alpha`` (B,) mixes real and fake per sample; drawn uniformly from the global RNG when None.
    """
    b = real.shape[0]
    if alpha is None:
        alpha = torch.rand(b, device=real.device, dtype=real.dtype)
    a = alpha.reshape(b, *([1] * (real.dim() - 1)))  # (B, 1, 1, 1)
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)  # (B, C, H, W)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)  # (B, C, H, W)
    norm = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norm - 1) ** 2).mean()


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """E[||grad_x D(x)||^2] on real images; weigh it by gamma/2 (R1, Mescheder et al. 2018).
    On generated images the same is R2 (R3GAN uses both with the rpgan loss).

    ``real`` must have had ``requires_grad_(True)`` before ``real_logits = D(real)``.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)  # (B, C, H, W)
    return grad.pow(2).flatten(1).sum(1).mean()


# -- VAE ------------------------------------------------------------------------------------


def kl_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, mean over batch (Kingma & Welling 2014)."""
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())  # (B, D)
    return kl.flatten(1).sum(1).mean()


def recon_loss(kind: ReconLoss | str, recon_or_logits: Tensor, target: Tensor) -> Tensor:
    """Reconstruction error summed over pixels, mean over batch (Kingma & Welling 2014, appendix C).

    "mse": squared error, a Gaussian negative log-likelihood with variance 1/2 up to a constant.
    "bce": binary cross-entropy of logits against targets in [0, 1] (a Bernoulli likelihood).
    """
    _check_kind(kind, RECON_LOSSES, "reconstruction loss")
    if recon_or_logits.shape != target.shape:
        raise InternalError(
            f"reconstruction shape {tuple(recon_or_logits.shape)} != target shape {tuple(target.shape)}"
        )
    if kind == "mse":
        err = (recon_or_logits - target).pow(2)  # (B, C, H, W)
    else:
        err = F.binary_cross_entropy_with_logits(recon_or_logits, target, reduction="none")
    return err.flatten(1).sum(1).mean()
