"""Loss functions against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from artforge.errors import InternalError
from artforge.losses import (
    gan_d_accept_loss,
    gan_d_loss,
    gan_d_reject_loss,
    gan_g_loss,
    gradient_penalty,
    kl_normal,
    lecam_penalty,
    r1_penalty,
    recon_loss,
)

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 0.5])


def close(t: torch.Tensor, value: float) -> bool:
    return math.isclose(float(t.detach()), value, rel_tol=1e-6, abs_tol=1e-6)


def test_hinge() -> None:
    # relu(1 - real) = [0, 0.5, 2]; relu(1 + fake) = [0, 1, 1.5]; each mean 2.5/3
    assert close(gan_d_loss("hinge", REAL, FAKE), 5 / 3)
    assert close(gan_g_loss("hinge", FAKE), 0.5)  # -mean(fake) = -(-1.5 / 3)


def test_d_loss_is_its_accept_term_on_real_plus_its_reject_term_on_fake() -> None:
    # REAL as logits D should call fake: hinge relu(1 + x) = [3, 1.5, 0]
    assert close(gan_d_reject_loss("hinge", REAL), 1.5)
    assert close(gan_d_reject_loss("mse", REAL), 0.5 * (4 + 0.25 + 1) / 3)
    assert close(gan_d_reject_loss("wgan-gp", REAL), 0.5)  # mean(x) = 1.5 / 3
    # FAKE as logits D should call real: hinge relu(1 - x) = [3, 1, 0.5]
    assert close(gan_d_accept_loss("hinge", FAKE), 4.5 / 3)
    assert close(gan_d_accept_loss("mse", FAKE), 0.5 * (9 + 1 + 0.25) / 3)
    assert close(gan_d_accept_loss("wgan-gp", FAKE), 0.5)  # -mean(x) = 1.5 / 3
    assert close(gan_d_accept_loss("bce", torch.zeros(3)), math.log(2))  # -log(1/2)
    for kind in ("bce", "mse", "hinge", "wgan-gp"):  # D's loss = a term on real + this on fake
        real_half = [gan_d_loss(kind, REAL, f) - gan_d_reject_loss(kind, f) for f in (FAKE, REAL, -REAL)]
        assert all(close(h, float(real_half[0])) for h in real_half), (kind, real_half)
    for term in (gan_d_accept_loss, gan_d_reject_loss):
        with pytest.raises(ValueError, match="GAN loss"):
            term("l1", REAL)


def test_lecam() -> None:
    # averages real 0.5, fake -0.5: relu(real - (-0.5)) = [2.5, 1, 0] -> mean of squares 7.25/3;
    # relu(0.5 - fake) = [2.5, 0.5, 0] -> 6.5/3
    assert close(lecam_penalty(REAL, FAKE, torch.tensor(0.5), torch.tensor(-0.5)), 13.75 / 3)
    # nothing to pull when real logits sit below the fake average and fake above the real one
    low_real, high_fake = torch.tensor([-1.0]), torch.tensor([1.0])
    assert close(lecam_penalty(low_real, high_fake, torch.tensor(0.5), torch.tensor(0.0)), 0)
    real = REAL.clone().requires_grad_(True)
    lecam_penalty(real, FAKE, torch.tensor(0.5), torch.tensor(-0.5)).backward()
    assert real.grad is not None and (real.grad[:2] > 0).all()  # gradient descent lowers the real logits


def test_bce() -> None:
    zero = torch.zeros(4)
    assert close(gan_d_loss("bce", zero, zero), 2 * math.log(2))  # -log(1/2) twice
    assert close(gan_g_loss("bce", zero), math.log(2))
    # sigmoid(ln 3) = 3/4: -log(3/4) for the real term; fake logit -ln 3: -log(1 - 1/4)
    r, f = torch.tensor([math.log(3)]), torch.tensor([-math.log(3)])
    assert close(gan_d_loss("bce", r, f), 2 * math.log(4 / 3))
    assert close(gan_g_loss("bce", r), math.log(4 / 3))  # non-saturating: -log D(G(z))
    # the same as torch's BCE on probabilities
    expect = F.binary_cross_entropy(torch.sigmoid(REAL), torch.ones(3)) + F.binary_cross_entropy(
        torch.sigmoid(FAKE), torch.zeros(3)
    )
    assert close(gan_d_loss("bce", REAL, FAKE), float(expect))


def test_least_squares() -> None:
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # 1/2 mean((real - 1)^2) + 1/2 mean(fake^2) = 1/2 * 1/2 + 1/2 * 1/2
    assert close(gan_d_loss("mse", real, fake), 0.5)
    assert close(gan_g_loss("mse", fake), 0.25)  # 1/2 mean((fake - 1)^2) = 1/2 * 1/2
    assert close(gan_d_loss("mse", torch.ones(3), torch.zeros(3)), 0.0)


def test_wasserstein() -> None:
    assert close(gan_d_loss("wgan-gp", REAL, FAKE), -0.5 - 0.5)  # mean(fake) - mean(real)
    assert close(gan_g_loss("wgan-gp", FAKE), 0.5)


@pytest.mark.parametrize("fn", [lambda k: gan_d_loss(k, REAL, FAKE), lambda k: gan_g_loss(k, FAKE)])
def test_unknown_gan_kind(fn) -> None:  # noqa: ANN001
    msg = r"unknown GAN loss 'wgan'; choose from \['bce', 'hinge', 'mse', 'rpgan', 'wgan-gp'\]"
    with pytest.raises(ValueError, match=msg):
        fn("wgan")


def test_gradient_penalty_of_linear_critic() -> None:
    torch.manual_seed(0)
    w = torch.randn(3 * 4 * 4)
    w = (w / w.norm() * 3.0).requires_grad_(True)  # ||w|| = 3, so ||grad|| = 3 everywhere

    def critic(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ w  # (B,)

    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    assert math.isclose(float(gp.detach()), 4.0, rel_tol=1e-5)  # (3 - 1)^2
    gp2 = gradient_penalty(critic, real, fake, alpha=torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0]))
    assert math.isclose(float(gp2.detach()), 4.0, rel_tol=1e-5)
    # create_graph: the penalty differentiates w.r.t. the critic's weights, d/dw = 2 (|w| - 1) w / |w|
    gp.backward()
    assert torch.allclose(w.grad, 2 * (3 - 1) * w.detach() / 3, atol=1e-5)


def test_r1_penalty_of_linear_critic() -> None:
    w = torch.full((2, 2, 2), 0.5)  # ||w||^2 = 8 * 0.25 = 2
    real = torch.randn(3, 2, 2, 2).requires_grad_(True)
    logits = (real * w).flatten(1).sum(1)
    assert math.isclose(float(r1_penalty(logits, real).detach()), 2.0, rel_tol=1e-6)


def test_kl_normal() -> None:
    assert close(kl_normal(torch.zeros(4, 8), torch.zeros(4, 8)), 0.0)  # N(0, 1) against itself
    # per dim 1/2 (mu^2 + e^lv - 1 - lv): [1, 0 | 0, ln 2] -> 1/2 + 1/2 (1 - ln 2); second row 0
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2)], [0.0, 0.0]])
    assert close(kl_normal(mu, logvar), (1 - 0.5 * math.log(2)) / 2)  # mean over the batch
    assert float(kl_normal(torch.randn(3, 5), torch.randn(3, 5))) > 0


def test_recon_mse_sums_pixels_means_batch() -> None:
    target = torch.zeros(2, 3, 2, 2)
    recon = torch.ones(2, 3, 2, 2)
    recon[1] *= 2  # image 0: 12 * 1; image 1: 12 * 4
    assert close(recon_loss("mse", recon, target), (12 + 48) / 2)


def test_recon_bce_with_logits() -> None:
    logits, target = torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 0.5)
    assert close(recon_loss("bce", logits, target), 12 * math.log(2))
    x, t = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    expect = F.binary_cross_entropy(torch.sigmoid(x), t, reduction="sum") / 2
    assert math.isclose(float(recon_loss("bce", x, t)), float(expect), rel_tol=1e-5)


def test_recon_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown reconstruction loss 'l1'; choose from \['bce', 'mse'\]"):
        recon_loss("l1", torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(InternalError, match="shape"):  # the models' own mismatch: a bug, not input
        recon_loss("mse", torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
