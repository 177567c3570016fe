"""Model families: shapes at odd sizes, the DCGAN reference, losses that fall, determinism,
registry errors and save/load. CPU, tiny widths."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from artforge.config import DataConfig, RunConfig
from artforge.errors import InternalError
from artforge.models import (
    DCGAN,
    GAN,
    MODELS,
    VAE,
    DCGANConfig,
    GANConfig,
    GenerativeModel,
    Phase,
    VAEConfig,
    list_models,
    make_model_config,
    model_class,
)
from artforge.models.base import load_state_into, load_weights, save_weights
from artforge.models.blocks import stage_sizes
from artforge.runs import build_model

TINY = {
    "gan": {"base_channels": 16, "max_channels": 64, "latent_dim": 16},
    "vae": {"base_channels": 16, "max_channels": 64, "latent_dim": 8},
    "dcgan": {"ngf": 8, "ndf": 8, "latent_dim": 16},
    "diffusion": {"base_channels": 16, "channel_mult": (1, 2), "sample_steps": 4},
}


def tiny(family: str, height: int, width: int, **extra: object) -> GenerativeModel:
    torch.manual_seed(0)
    cfg = make_model_config(family, {**TINY[family], **extra}, height=height, width=width)
    return model_class(family)(cfg)


def shapes_batch(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """n images (n, 3, size, size) in [-1, 1]: a coloured disc or bar on a flat background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        # saturated colours (each channel -1 or 1): the Bernoulli (bce) likelihood can reach 0 on them
        bg = torch.randint(0, 2, (3,), generator=g).float() * 2 - 1
        fg = bg.clone()
        fg[i % 3] *= -1  # differs from the background in one channel
        img = bg.view(3, 1, 1).repeat(1, size, size)
        c = size * (0.3 + 0.4 * torch.rand(2, generator=g))
        disc = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= (size / 4) ** 2
        mask = disc if i % 2 else (yy - c[1]).abs() <= size / 8  # a disc or a horizontal bar
        img[:, mask] = fg.view(3, 1)
        out[i] = img
    return out


def train_phase(
    model: GenerativeModel, phase: str, batch: torch.Tensor, steps: int = 40, opt: str = "adam", lr: float = 0
) -> list[float]:
    """The trainer's contract in miniature: only the phase's group requires grad; losses per step."""
    (ph,) = [p for p in model.phases() if p.name == phase]
    groups = model.param_groups()
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(name == ph.opt)
    d = model.default_optim()
    if opt == "adam":
        optim: torch.optim.Optimizer = torch.optim.Adam(groups[ph.opt], lr=lr or d["lr"], betas=d["betas"])
    else:
        optim = torch.optim.SGD(groups[ph.opt], lr=lr, momentum=0.9)
    frozen = {n: [(p.detach().clone(), p.grad) for p in ps] for n, ps in groups.items() if n != ph.opt}
    losses = []
    for step in range(steps):
        optim.zero_grad(set_to_none=True)
        out = model.training_step(phase, batch, step)
        out["loss"].backward()
        optim.step()
        assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values()), out
        losses.append(float(out["loss"].detach()))
    for n, before in frozen.items():  # the frozen group did not move and got no new gradients
        for p, (value, grad) in zip(groups[n], before, strict=True):
            assert p.grad is grad and torch.equal(p.detach(), value)
    return losses


def first_last(losses: list[float]) -> tuple[float, float]:
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5


# -- sizes and shapes -----------------------------------------------------------------------


def test_stage_sizes() -> None:
    assert stage_sizes(100, 100) == [(100, 100), (50, 50), (25, 25), (13, 13), (7, 7), (4, 4)]
    assert stage_sizes(48, 80) == [(48, 80), (24, 40), (12, 20), (6, 10), (3, 5)]
    assert stage_sizes(32, 32) == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert stage_sizes(28, 28) == [(28, 28), (14, 14), (7, 7), (4, 4)]


CASES = [("gan", 100, 100), ("gan", 48, 80), ("gan", 32, 32), ("gan", 28, 28), ("gan", 9, 21)]
CASES += [("vae", 100, 100), ("vae", 48, 80), ("vae", 32, 32), ("vae", 28, 28)]
CASES += [("dcgan", 32, 32), ("dcgan", 64, 64), ("dcgan", 16, 16)]
CASES += [("diffusion", 100, 100), ("diffusion", 48, 80), ("diffusion", 32, 32), ("diffusion", 9, 21)]


@pytest.mark.parametrize(("family", "height", "width"), CASES)
def test_sample_shapes(family: str, height: int, width: int) -> None:
    model = tiny(family, height, width)
    for mode in (model.train, model.eval):
        mode()
        x = model.sample(4, torch.Generator().manual_seed(0))
        assert x.shape == (4, 3, height, width)
        assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    model.train()
    batch = torch.rand(2, 3, height, width) * 2 - 1
    for ph in model.phases():  # every phase runs at this size and back-propagates
        model.training_step(ph.name, batch, 0)["loss"].backward()


def test_vae_encode_reconstruct_shapes() -> None:
    model = tiny("vae", 48, 80)
    x = torch.rand(3, 3, 48, 80) * 2 - 1
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 8)
    r = model.reconstruct(x)
    assert r.shape == x.shape and r.min() >= -1 and r.max() <= 1


def test_dcgan_refuses_other_sizes() -> None:
    for h, w in [(48, 80), (100, 100), (8, 8), (32, 64)]:
        with pytest.raises(ValueError, match=r"dcgan needs a square power-of-two size >= 16.*--model gan"):
            make_model_config("dcgan", {}, height=h, width=w)
    with pytest.raises(ValueError, match="--model gan"):
        DCGANConfig(loss="wgan-gp")  # type: ignore[arg-type]


# -- DCGAN: the pytorch/examples reference --------------------------------------------------


def reference_dcgan(nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3) -> tuple[nn.Module, nn.Module]:
    """pytorch/examples dcgan/main.py ``Generator.main`` and ``Discriminator.main`` at 64x64."""
    g = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip
    d = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )  # fmt: skip
    return g, d


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_dcgan_matches_reference_64() -> None:
    ref_g, ref_d = reference_dcgan()
    # by hand: G convs 100*512*16 + 512*256*16 + 256*128*16 + 128*64*16 + 64*3*16 and BN 2*(512+256+128+64)
    assert n_params(ref_g) == 819_200 + 2_097_152 + 524_288 + 131_072 + 3_072 + 1_920 == 3_576_704
    # D convs 3*64*16 + 64*128*16 + 128*256*16 + 256*512*16 + 512*16 and BN 2*(128+256+512)
    assert n_params(ref_d) == 3_072 + 131_072 + 524_288 + 2_097_152 + 8_192 + 1_792 == 2_765_568
    model = DCGAN(DCGANConfig())
    assert n_params(model.G) == 3_576_704 and n_params(model.D) == 2_765_568
    # same layers in the same order: the reference loads our weights and computes the same function
    ref_g.load_state_dict(model.G.main.state_dict())
    ref_d.load_state_dict(model.D.main.state_dict())
    model.eval(), ref_g.eval(), ref_d.eval()
    z = torch.randn(2, 100)
    with torch.no_grad():
        assert torch.allclose(model.G(z), ref_g(z.view(2, 100, 1, 1)), atol=1e-6)
        x = torch.rand(2, 3, 64, 64) * 2 - 1
        assert torch.allclose(torch.sigmoid(model.D(x)), ref_d(x).view(-1), atol=1e-6)
    # DCGAN init: conv weights N(0, 0.02), BN weights N(1, 0.02), BN biases 0
    w = model.G.main[0].weight
    assert abs(float(w.detach().std()) - 0.02) < 0.002 and abs(float(w.detach().mean())) < 0.002
    bn = model.D.main[3]
    assert isinstance(bn, nn.BatchNorm2d) and abs(float(bn.weight.detach().mean()) - 1) < 0.01
    assert float(bn.bias.detach().abs().max()) == 0
    assert model.default_optim() == {"name": "adam", "lr": 2e-4, "betas": (0.5, 0.999)}


def test_dcgan_32_has_one_block_fewer() -> None:
    model = DCGAN(DCGANConfig(height=32, width=32))
    g = [m for m in model.G.main if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in g] == [(100, 256), (256, 128), (128, 64), (64, 3)]
    d = [m for m in model.D.main if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in d] == [(3, 64), (64, 128), (128, 256), (256, 1)]
    big = DCGAN(DCGANConfig(height=128, width=128, ngf=8, ndf=8))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in big.G.main) == 6
    assert big.sample(2).shape == (2, 3, 128, 128)
    assert big.D(torch.zeros(2, 3, 128, 128)).shape == (2,)


# -- losses fall ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bce", "mse", "hinge", "wgan-gp", "rpgan"])
def test_gan_d_loss_falls_with_g_frozen(kind: str) -> None:
    model = tiny("gan", 16, 16, loss=kind)
    first, last = first_last(train_phase(model, "D", shapes_batch()))
    assert last < first - 0.2 * abs(first), (first, last)


@pytest.mark.parametrize("kind", ["bce", "mse", "hinge", "wgan-gp", "rpgan"])
def test_gan_g_loss_falls_with_d_frozen(kind: str) -> None:
    # without augmentation: with a frozen D, its random views make G's 40-step loss too noisy
    model = tiny("gan", 16, 16, loss=kind, augment="")
    batch = shapes_batch()
    train_phase(model, "D", batch, steps=10)  # a discriminator with an opinion
    first, last = first_last(train_phase(model, "G", batch, lr=2e-4))
    assert last < first - 0.1 * max(abs(first), 1.0), (first, last)


def test_gan_depth_adds_same_size_convs_that_learn() -> None:
    one, two = tiny("gan", 16, 16), tiny("gan", 16, 16, depth=2)

    def convs(m: nn.Module) -> int:
        return sum(isinstance(x, nn.Conv2d) for x in m.modules())

    stages = len(stage_sizes(16, 16)) - 1  # 16 -> 8 -> 4: 2 halvings
    assert convs(two.G) - convs(one.G) == stages - 1  # G: one per upsampling stage
    assert convs(two.D) - convs(one.D) == stages  # D: one after each stride-2 conv
    assert two.sample(2).shape == (2, 3, 16, 16)
    first, last = first_last(train_phase(two, "D", shapes_batch()))
    assert last < first - 0.2 * abs(first), (first, last)


def test_gan_generator_width_is_its_own() -> None:
    same, wide = tiny("gan", 16, 16), tiny("gan", 16, 16, g_base_channels=32)

    def widths(m: nn.Module) -> list[int]:
        return [x.out_channels for x in m.modules() if isinstance(x, nn.Conv2d)]

    assert widths(wide.D) == widths(same.D)  # D keeps base_channels
    assert max(widths(wide.G)) == 2 * max(widths(same.G))  # tiny base_channels is 16: G doubles
    assert wide.sample(2).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="g_base_channels must be >= 0"):
        tiny("gan", 16, 16, g_base_channels=-1)


def test_gan_skip_excitation_gates_the_large_stages() -> None:
    plain, sle = tiny("gan", 16, 20), tiny("gan", 16, 20, sle=True)
    # 16x20 -> 8x10 -> 4x5: maps at 4x5 (after fc), 8x10, 16x20; one gate, 4x5 -> 16x20
    assert len(sle.G.net.excite) == 1 and plain.G.net.excite is None
    assert set(plain.G.state_dict()) < set(sle.G.state_dict())  # runs without it keep their keys
    sle.eval()
    z = torch.randn(2, 16)
    before = sle.G(z)
    assert before.shape == (2, 3, 16, 20)
    with torch.no_grad():  # the gate's last conv to zero: sigmoid 0.5 everywhere instead
        sle.G.net.excite[0].net[3].weight.zero_()
    assert not torch.allclose(sle.G(z), before)
    sle.train()
    batch = shapes_batch(size=16)
    model = tiny("gan", 16, 16, sle=True, augment="")
    train_phase(model, "D", batch, steps=10)
    first, last = first_last(train_phase(model, "G", batch, lr=2e-4))
    assert last < first - 0.1 * max(abs(first), 1.0), (first, last)


def test_gan_self_supervised_discriminator_learns_to_reconstruct() -> None:
    plain, model = tiny("gan", 16, 16), tiny("gan", 16, 16, recon_weight=1.0, augment="")
    assert plain.D.decoder is None and set(plain.D.state_dict()) < set(model.D.state_dict())
    with pytest.raises(InternalError, match="no decoder"):
        plain.D(torch.zeros(2, 3, 16, 16), recon=True)
    logits, recon = model.D(torch.zeros(2, 3, 16, 16), recon=True)
    assert logits.shape == (2,) and recon.shape == (2, 3, 8, 8)  # half size
    batch = shapes_batch()
    optim = torch.optim.Adam(model.D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    recons = []
    for step in range(60):
        optim.zero_grad(set_to_none=True)
        out = model.training_step("D", batch, step)
        assert "recon" in out and "recon" not in plain.training_step("D", batch, step)
        out["loss"].backward()
        optim.step()
        recons.append(float(out["recon"]))
    first, last = first_last(recons)
    assert last < 0.7 * first, (first, last)


def test_dcgan_losses_fall() -> None:
    model = tiny("dcgan", 16, 16)
    batch = shapes_batch()
    first, last = first_last(train_phase(model, "D", batch))
    assert last < 0.7 * first, (first, last)
    first, last = first_last(train_phase(model, "G", batch))
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("recon", ["mse", "bce"])
def test_vae_loss_falls(recon: str) -> None:
    model = tiny("vae", 16, 16, recon=recon)
    losses = train_phase(model, "main", shapes_batch())
    first, last = first_last(losses)
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_diffusion_loss_falls(prediction: str) -> None:
    model = tiny("diffusion", 16, 16, prediction=prediction)
    torch.manual_seed(0)  # the timesteps and noise of each step come from the global RNG
    losses = train_phase(model, "main", shapes_batch(), steps=60, lr=2e-3)
    first, last = sum(losses[:15]) / 15, sum(losses[-15:]) / 15  # noisy: t is random per step
    assert last < 0.7 * first, (first, last)


def test_vae_loss_falls_with_sgd() -> None:
    model = tiny("vae", 16, 16)
    first, last = first_last(train_phase(model, "main", shapes_batch(), opt="sgd", lr=1e-4))
    assert last < 0.7 * first, (first, last)


def test_vae_step_reports_recon_and_kl() -> None:
    model = tiny("vae", 16, 16, beta=2.0)
    torch.manual_seed(1)
    out = model.training_step("main", shapes_batch(), 0)
    assert set(out) == {"loss", "recon", "kl", "mse"}
    assert math.isclose(float(out["loss"].detach()), float(out["recon"] + 2.0 * out["kl"]), rel_tol=1e-5)


def test_wgan_gp_step_reports_penalty() -> None:
    model = tiny("gan", 16, 16, loss="wgan-gp", d_norm="none")
    out = model.training_step("D", shapes_batch(), 0)
    assert {"loss", "d_real", "d_fake", "gp"} <= set(out) and float(out["gp"]) > 0
    assert model.default_optim() == {"name": "adam", "lr": 1e-4, "betas": (0.0, 0.9)}
    assert tiny("gan", 16, 16).default_optim() == GAN.optim_defaults


def test_r1_phase() -> None:
    model = tiny("gan", 16, 16, r1_gamma=1.0, r1_every=4)
    assert [p for p in model.phases() if p.name == "D_reg"] == [Phase("D_reg", "D", every=4)]
    train_phase(model, "D_reg", shapes_batch(), steps=2)
    with pytest.raises(InternalError, match="unknown phase 'D_reg'"):  # a bug: no such phase here
        tiny("gan", 16, 16).training_step("D_reg", shapes_batch(), 0)


# -- determinism and options ----------------------------------------------------------------


@pytest.mark.parametrize("family", ["gan", "dcgan", "vae", "diffusion"])
def test_decode_and_sample_are_deterministic(family: str) -> None:
    model = tiny(family, 16, 16).eval()
    z = model.sample_latents(4, torch.Generator().manual_seed(3))
    assert z.device.type == "cpu"
    with torch.no_grad():
        assert torch.equal(model.decode(z), model.decode(z))
    a = model.sample(4, torch.Generator().manual_seed(0))
    b = model.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, model.sample(4, torch.Generator().manual_seed(1)))


def test_sample_options() -> None:
    gan, vae = tiny("gan", 16, 16).eval(), tiny("vae", 16, 16).eval()
    assert GAN.sample_options == ("truncation", "prompt", "cond")
    assert DCGAN.sample_options == ("truncation",)
    assert VAE.sample_options == ("temperature", "prompt", "cond")

    def seed() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    assert not torch.equal(gan.sample(2, seed(), truncation=0.5), gan.sample(2, seed()))
    assert not torch.equal(vae.sample(2, seed(), temperature=0.5), vae.sample(2, seed()))
    with pytest.raises(
        ValueError,
        match=r"unknown sample option 'temperature' for gan; it takes \['truncation', 'prompt', 'cond'\]",
    ):
        gan.sample(2, temperature=0.5)
    with pytest.raises(ValueError, match="unknown sample option 'truncation' for vae"):
        vae.decode(torch.zeros(2, 8), truncation=0.5)
    for bad in (0.0, -1.0, 2.5):
        with pytest.raises(ValueError, match="truncation"):
            gan.sample(2, truncation=bad)
        with pytest.raises(ValueError, match="temperature"):
            vae.sample(2, temperature=bad)


def test_phases_and_groups() -> None:
    model = tiny("gan", 16, 16, d_steps=5)
    assert model.phases() == [Phase("D", "D", every=1), Phase("G", "G", every=5)]
    groups = model.param_groups()
    assert set(groups) == {"G", "D"}
    assert sum(p.numel() for ps in groups.values() for p in ps) == n_params(model)
    assert GAN.ema_groups == DCGAN.ema_groups == ("G",) and VAE.ema_groups == ("main",)
    assert tiny("vae", 16, 16).phases() == [Phase("main", "main")]
    assert tiny("dcgan", 16, 16, d_steps=3).phases() == [Phase("D", "D"), Phase("G", "G", every=3)]


# -- registry and configs -------------------------------------------------------------------


def test_registry() -> None:
    assert list_models() == ["dcgan", "diffusion", "gan", "upscaler", "vae"]
    assert MODELS["gan"] is GAN and model_class("vae") is VAE
    with pytest.raises(
        ValueError,
        match=r"unknown model 'gann'; choose from \['dcgan', 'diffusion', 'gan', 'upscaler', 'vae'\]",
    ):
        model_class("gann")
    with pytest.raises(ValueError, match=r"unknown model 'gann'"):
        make_model_config("gann", {}, height=32, width=32)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown model setting 'latnt_dim' for gan; known: .*latent_dim"):
        make_model_config("gan", {"latnt_dim": 8}, height=32, width=32)
    with pytest.raises(
        ValueError, match=r"loss must be one of \['bce', 'mse', 'hinge', 'wgan-gp', 'rpgan'\], got"
    ):
        make_model_config("gan", {"loss": "wgan"}, height=32, width=32)
    with pytest.raises(ValueError, match=r"d_norm must be one of \['spectral', 'batch', 'none'\]"):
        GANConfig(d_norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wgan-gp.*batch norm"):
        GANConfig(loss="wgan-gp", d_norm="batch")
    with pytest.raises(ValueError, match=r"recon must be one of \['mse', 'bce'\]"):
        VAEConfig(recon="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latent_dim must be an integer"):
        make_model_config("vae", {"latent_dim": "big"}, height=32, width=32)
    with pytest.raises(ValueError, match="height=48 disagrees"):
        make_model_config("gan", {"height": 48}, height=32, width=32)
    with pytest.raises(ValueError, match="at least 8x8"):
        GANConfig(height=4)
    cfg = make_model_config("gan", {"height": 32, "loss": "bce"}, height=32, width=40)
    assert (cfg.height, cfg.width, cfg.loss) == (32, 40, "bce")


@pytest.mark.parametrize("family", ["gan", "dcgan", "vae", "diffusion"])
def test_config_dict_and_weights_roundtrip(family: str, tmp_path: Path) -> None:
    model = tiny(family, 32, 32)
    train_phase(model, model.phases()[0].name, shapes_batch(size=32), steps=2)  # non-initial weights
    model.eval()
    fields = dataclasses.asdict(model.config)
    assert fields["height"] == fields["width"] == 32 and fields["channels"] == 3
    save_weights(model, tmp_path / "model.safetensors")
    # what loading a run does: its config.json's model table (sizes included) rebuilds the model
    again = build_model(RunConfig(family=family, model=fields, data=DataConfig(height=32, width=32)))
    load_state_into(again, load_weights(tmp_path / "model.safetensors"), tmp_path)
    again.eval()
    assert again.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    g = torch.Generator
    assert torch.equal(model.sample(4, g().manual_seed(0)), again.sample(4, g().manual_seed(0)))
