"""The diffusion family's maths: schedule, targets, and DDIM that recovers an image exactly
when the denoiser is perfect. CPU, tiny widths."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from artforge.models import Diffusion, DiffusionConfig, make_model_config
from artforge.models.diffusion import cosine_alpha_bar, ddim_timesteps, timestep_embedding


def tiny(**extra: object) -> Diffusion:
    torch.manual_seed(0)
    fields = {"base_channels": 16, "channel_mult": (1, 2), "sample_steps": 5, **extra}
    model = Diffusion(make_model_config("diffusion", fields, height=12, width=20))
    assert isinstance(model, Diffusion)
    return model


class Oracle(nn.Module):
    """A perfect denoiser for a data set of one image: it knows x0, so its prediction is exact."""

    def __init__(self, x0: Tensor, alpha_bar: Tensor, prediction: str) -> None:
        super().__init__()
        self.x0, self.alpha_bar, self.prediction = x0, alpha_bar, prediction
        self.w = nn.Parameter(torch.zeros(()))  # GenerativeModel.device needs one parameter

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        abar = self.alpha_bar[t.long()][:, None, None, None]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        eps = (x_t - a * self.x0) / s
        return eps if self.prediction == "eps" else a * eps - s * self.x0


def test_cosine_schedule() -> None:
    abar = cosine_alpha_bar(1000)
    assert abar.shape == (1000,) and abar.dtype == torch.float64
    assert (abar[1:] < abar[:-1]).all()  # strictly more noise at each step
    assert 0.99999 > abar[0] > 0.9999 and abar[-1] < 1e-6
    # the middle of the cosine schedule keeps about half the signal power
    assert 0.45 < float(abar[499]) < 0.55


def test_ddim_timesteps() -> None:
    assert ddim_timesteps(1000, 1) == [999]
    assert ddim_timesteps(1000, 4) == [999, 666, 333, 0]
    ts = ddim_timesteps(1000, 25)
    assert len(ts) == 25 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        ddim_timesteps(1000, 0)


def test_timestep_embedding_distinguishes_steps() -> None:
    e = timestep_embedding(torch.tensor([0.0, 1.0, 999.0]), 15)
    assert e.shape == (3, 15)
    assert not torch.allclose(e[0], e[1]) and not torch.allclose(e[1], e[2])


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [1, 3, 25])
def test_ddim_with_perfect_denoiser_returns_the_image(prediction: str, steps: int) -> None:
    model = tiny(prediction=prediction).eval()
    x0 = torch.rand(1, 3, 12, 20) * 1.8 - 0.9  # inside (-1, 1): clipping must not change it
    model.unet = Oracle(x0, model.alpha_bar, prediction)  # type: ignore[assignment]
    noise = model.sample_latents(3, torch.Generator().manual_seed(0))
    out = model.decode(noise, steps=steps)
    assert out.shape == (3, 3, 12, 20)
    # eps prediction divides by sqrt(abar) ~ 5e-5 at the noisiest step, so float32 rounding is
    # amplified there; v prediction has no such division (one reason it is the default)
    atol = 1e-4 if prediction == "v" else 1 / 255
    torch.testing.assert_close(out, x0.expand(3, -1, -1, -1), atol=atol, rtol=0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_target_is_zero_loss_for_perfect_denoiser(prediction: str) -> None:
    model = tiny(prediction=prediction, min_snr_gamma=0.0)
    x0 = torch.rand(1, 3, 12, 20) * 2 - 1
    model.unet = Oracle(x0, model.alpha_bar, prediction)  # type: ignore[assignment]
    torch.manual_seed(0)
    out = model.training_step("main", x0.expand(6, -1, -1, -1), 0)
    assert float(out["loss"]) < 1e-8
    fresh = tiny(prediction=prediction, min_snr_gamma=0.0)  # an untrained U-Net is far off
    assert float(fresh.training_step("main", x0.expand(6, -1, -1, -1), 0)["loss"].detach()) > 0.1


def test_sampling_steps_option() -> None:
    model = tiny().eval()
    assert Diffusion.sample_options == ("steps", "prompt", "guidance", "cond") and Diffusion.ema_default
    g = torch.Generator
    a = model.sample(2, g().manual_seed(0))  # config.sample_steps = 5
    assert torch.equal(a, model.sample(2, g().manual_seed(0), steps=5))
    assert not torch.equal(a, model.sample(2, g().manual_seed(0), steps=2))
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        model.sample(2, steps=0)
    with pytest.raises(ValueError, match=r"unknown sample option 'truncation' for diffusion"):
        model.sample(2, truncation=0.5)


def test_latents_are_noise_images_and_interpolate() -> None:
    from artforge.sample import interpolation_path

    model = tiny().eval()
    keys = model.sample_latents(2, torch.Generator().manual_seed(1))
    assert keys.shape == (2, 3, 12, 20)
    path = interpolation_path(keys, 6, loop=False)
    assert path.shape == (6, 3, 12, 20)
    torch.testing.assert_close(path[0], keys[0]) and torch.testing.assert_close(path[-1], keys[1])
    frames = model.decode(path, steps=2)
    assert frames.shape == (6, 3, 12, 20) and torch.isfinite(frames).all()


def test_config_errors() -> None:
    with pytest.raises(ValueError, match=r"prediction must be one of \['eps', 'v'\]"):
        DiffusionConfig(prediction="x0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel_mult has 4 levels but a 8x8 image allows at most 2"):
        DiffusionConfig(height=8, width=8, channel_mult=(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"sample_steps \(50\) must be <= timesteps \(10\)"):
        DiffusionConfig(timesteps=10, sample_steps=50)
    cfg = make_model_config("diffusion", {"channel_mult": [1, 2]}, height=16, width=16)
    assert cfg.channel_mult == (1, 2)
    with pytest.raises(ValueError, match="channel_mult must be a list"):
        make_model_config("diffusion", {"channel_mult": 2}, height=16, width=16)
