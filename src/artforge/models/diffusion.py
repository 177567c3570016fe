"""Denoising diffusion (Ho et al. 2020) with a small U-Net, a cosine schedule and DDIM sampling.

Training: pick a timestep t, noise an image x0 to x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
and regress the U-Net's output on the target: eps ("eps", the DDPM paper) or
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 ("v", Salimans & Ho 2022), which stays well
scaled at both ends of the schedule. abar follows the cosine schedule of Nichol & Dhariwal
(2021), discretised into ``timesteps`` steps.

Sampling: deterministic DDIM (Song et al. 2021, eta = 0) over ``steps`` evenly spaced
timesteps. The latent of an image is its starting noise x_T (C, H, W): the same noise gives
the same image, and a walk between two noises (slerp) is a smooth walk between images.

The U-Net works at any image size >= 8: its levels follow blocks.stage_sizes (ceil halving),
and each upsampling resizes to exactly the size of the skip it meets.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from artforge.config import MAX_SIDE, Range, bounded, check_bounds, check_choices
from artforge.models.base import GenerativeModel, Phase
from artforge.models.blocks import check_image_size, group_count, reject_options, stage_sizes
from artforge.text import TextFields, check_text_fields, condition_vectors, make_conditioner

from ..errors import ConfigError, InternalError

Prediction = Literal["eps", "v"]


@dataclass
class DiffusionConfig(TextFields):
    # bounded(default, max): settings that size memory; checked before anything is built
    height: int = bounded(64, MAX_SIDE)  # image size; any size >= 8 (a run gives its data size here)
    width: int = bounded(64, MAX_SIDE)
    channels: int = bounded(3, 16)  # image channels
    # U-Net width at full resolution (64+ on a GPU; 32 trains ~4x faster on a CPU)
    base_channels: int = bounded(32, 4096)
    channel_mult: tuple[int, ...] = bounded((1, 2, 2), 64)  # width multiplier per level; one level per entry
    res_blocks: int = bounded(1, 64)  # residual blocks per level on the way down (one more on the way up)
    attention: bool = True  # self-attention at the lowest level
    dropout: float = 0.0
    prediction: Prediction = "v"  # what the U-Net predicts: noise (eps) or velocity (v)
    timesteps: int = bounded(1000, 100_000)  # training noise levels
    sample_steps: int = 25  # default DDIM steps when sampling
    min_snr_gamma: float = 5.0  # loss weight min(SNR, gamma)-style (Hang et al. 2023); 0 = off
    guidance: float = 3.0  # text runs: default classifier-free guidance scale when sampling

    def __post_init__(self) -> None:
        check_bounds(self, "model")
        check_choices(self, "prediction")
        check_text_fields(self)
        check_image_size(self.height, self.width, self.channels)
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult must be positive integers, got {self.channel_mult}")
        levels = len(stage_sizes(self.height, self.width))
        if len(self.channel_mult) > levels:
            raise ConfigError(
                f"channel_mult has {len(self.channel_mult)} levels but a {self.width}x{self.height} "
                f"image allows at most {levels} (halving until a side is <= 4)"
            )
        for name in ("base_channels", "res_blocks", "timesteps", "sample_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sample_steps > self.timesteps:
            raise ConfigError(f"sample_steps ({self.sample_steps}) must be <= timesteps ({self.timesteps})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.min_snr_gamma < 0:
            raise ConfigError(f"min_snr_gamma must be >= 0, got {self.min_snr_gamma}")


# -- schedule -------------------------------------------------------------------------------


def cosine_alpha_bar(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """abar_t for t = 1..T (T,), float64: the cosine schedule with betas clipped at max_beta."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` indices into 0..T-1, from the noisiest (T-1) down, evenly spaced."""
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"steps must be in [1, {timesteps}], got {steps}")
    return [round(x) for x in torch.linspace(timesteps - 1, 0, steps).tolist()]


# -- U-Net ----------------------------------------------------------------------------------


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (B,) float timesteps -> (B, dim) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _zero_(conv: nn.Conv2d) -> None:
    """Zero a layer's weight and bias, so a residual branch starts as nothing."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, time FiLM (scale, shift), GroupNorm-SiLU-dropout-conv, plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(group_count(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        _zero_(self.conv2)  # each block starts as the identity
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a small map, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        _zero_(self.out)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)  # (B, HW, C)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """(x_t (B, C, H, W), t (B,)) -> prediction (B, C, H, W)."""

    def __init__(self, c: DiffusionConfig, cond_dim: int = 0) -> None:
        super().__init__()
        self.sizes = stage_sizes(c.height, c.width)[: len(c.channel_mult)]
        widths = [c.base_channels * m for m in c.channel_mult]
        emb_dim = 4 * c.base_channels
        self.base = c.base_channels
        self.time_mlp = nn.Sequential(
            nn.Linear(c.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # text: the caption's vector joins the time embedding, so it reaches every block's FiLM
        self.cond_mlp = (
            nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if cond_dim
            else None
        )
        self.stem = nn.Conv2d(c.channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [widths[0]]
        ch = widths[0]
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(c.res_blocks):
                blocks.append(ResBlock(ch, w, emb_dim, c.dropout))
                ch = w
                skips.append(ch)
            self.down.append(blocks)
            if level < len(widths) - 1:  # stride-2 conv to exactly the next (ceil-halved) size
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, c.dropout)
        self.mid_attn = SelfAttention(ch) if c.attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim, c.dropout)
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for level in reversed(range(len(widths))):
            blocks = nn.ModuleList()
            for _ in range(c.res_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), widths[level], emb_dim, c.dropout))
                ch = widths[level]
            self.up.append(blocks)
            if level > 0:
                self.upconv.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_norm = nn.GroupNorm(group_count(ch), ch)
        self.out = nn.Conv2d(ch, c.channels, 3, padding=1)
        _zero_(self.out)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base))  # (B, E)
        if self.cond_mlp is not None:
            if cond is None:
                raise InternalError("this U-Net is text-conditioned: pass cond (B, text_dim)")
            emb = emb + self.cond_mlp(cond)
        h = self.stem(x)
        hs = [h]
        for level, blocks in enumerate(self.down):
            for block in typing.cast(nn.ModuleList, blocks):
                h = block(h, emb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, blocks in enumerate(self.up):
            for block in typing.cast(nn.ModuleList, blocks):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upconv):  # nearest resize to exactly the skip's size, then a conv
                h = self.upconv[i](F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


# -- the family -----------------------------------------------------------------------------


class Diffusion(GenerativeModel):
    """DDPM training, DDIM sampling; latents are the starting noise (n, C, H, W)."""

    family: ClassVar[str] = "diffusion"
    config_class: ClassVar[type] = DiffusionConfig
    optim_defaults: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 3e-4, "betas": (0.9, 0.99)}
    ema_groups: ClassVar[tuple[str, ...]] = ("main",)
    sample_options: ClassVar[tuple[str, ...]] = ("steps", "prompt", "guidance", "cond")
    option_ranges: ClassVar[dict[str, Range]] = {
        # at most the run's timesteps (ddim_timesteps checks): no fixed upper end here
        "steps": Range(
            1, integer=True, default=DiffusionConfig.sample_steps, help="diffusion: more is slower and finer"
        ),
        "guidance": Range(
            0.0, 30.0, default=DiffusionConfig.guidance, help="text diffusion: how hard to follow the prompt"
        ),
    }
    ema_default: ClassVar[bool] = True  # GroupNorm only: EMA weights need no running statistics
    config: DiffusionConfig
    alpha_bar: Tensor  # (timesteps,) float32 buffer

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__(config)
        self.text = make_conditioner(config)  # None: unconditional
        self.unet = UNet(config, self.text.dim if self.text is not None else 0)
        # a schedule, not state: rebuilt from the config, never saved
        self.register_buffer("alpha_bar", cosine_alpha_bar(config.timesteps).float(), persistent=False)

    def phases(self) -> list[Phase]:
        return [Phase("main", "main")]

    def _coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        abar = self.alpha_bar[t][:, None, None, None]  # (B, 1, 1, 1)
        return abar.sqrt(), (1 - abar).sqrt()

    @property
    def conditional(self) -> bool:
        return self.text is not None

    def training_step(
        self, phase: str, batch: Tensor, step: int, text: list[str] | None = None
    ) -> dict[str, Tensor]:
        if phase != "main":
            raise InternalError(f"unknown phase {phase!r}; this model has ['main']")
        b = batch.shape[0]
        t = self.batch_randint(self.config.timesteps, b, device=batch.device)
        eps = self.batch_randn(b, *batch.shape[1:], device=batch.device)
        cond = None
        if self.text is not None:
            cond = self.text(self.training_captions(text, b, self.config.cond_drop), batch.device)
        a, s = self._coeffs(t)
        x_t = a * batch + s * eps
        pred = self.unet(x_t, t.float()) if cond is None else self.unet(x_t, t.float(), cond)
        target = eps if self.config.prediction == "eps" else a * eps - s * batch
        per_image = (pred - target).pow(2).flatten(1).mean(1)  # (B,)
        if self.config.min_snr_gamma > 0:
            snr = self.alpha_bar[t] / (1 - self.alpha_bar[t])
            clipped = snr.clamp(max=self.config.min_snr_gamma)
            # min-SNR-gamma on the x0 error: eps loss * min(snr, g) / snr, v loss * min(snr, g) / (snr + 1)
            weight = clipped / snr if self.config.prediction == "eps" else clipped / (snr + 1)
            loss = (weight * per_image).mean()
        else:
            loss = per_image.mean()
        return {"loss": loss, "mse": per_image.detach().mean()}

    def _predict_x0_eps(
        self, x_t: Tensor, t: int, cond: Tensor | None = None, guidance: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        tt = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        if cond is None or guidance == 1.0:
            out = self.unet(x_t, tt) if cond is None else self.unet(x_t, tt, cond)
        else:  # classifier-free guidance (Ho & Salimans 2022): push away from the caption-less output
            both = self.unet(
                torch.cat([x_t, x_t]), torch.cat([tt, tt]), torch.cat([cond, torch.zeros_like(cond)])
            )
            out_c, out_u = both.chunk(2)
            out = out_u + guidance * (out_c - out_u)
        abar = self.alpha_bar[t]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        if self.config.prediction == "eps":
            x0 = ((x_t - s * out) / a).clamp(-1, 1)
        else:
            x0 = (a * x_t - s * out).clamp(-1, 1)
        eps = (x_t - a * x0) / s  # re-derived from the clipped x0, so steps stay consistent
        return x0, eps

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        c = self.config
        return torch.randn(n, c.channels, c.height, c.width, generator=generator)  # x_T, on the CPU

    def condition(self, prompt: str | list[str] | None, n: int) -> Tensor | None:
        """(n, text_dim) vectors for a prompt (or one per image); None for unconditional runs.
        A text run sampled without a prompt gets "" (what it learned from dropped captions)."""
        return condition_vectors(self.text if self.conditional else None, prompt, n, self.device)

    def decode(
        self,
        latents: Tensor,
        steps: int | None = None,
        prompt: str | list[str] | None = None,
        guidance: float | None = None,
        cond: Tensor | None = None,
        **options: Any,
    ) -> Tensor:
        """x_T (n, C, H, W) -> images (n, C, H, W) in [-1, 1] by deterministic DDIM in ``steps`` steps.

        Text runs take a ``prompt`` (or precomputed ``cond`` vectors, e.g. a blend of two
        prompts) and a classifier-free ``guidance`` scale (1 = none; default from the config).
        """
        reject_options(self, options)
        steps = self.config.sample_steps if steps is None else int(steps)
        ts = ddim_timesteps(self.config.timesteps, steps)
        c = self.config
        x = latents.reshape(latents.shape[0], c.channels, c.height, c.width).to(self.device)
        cond, g = self.guided_condition(x.shape[0], prompt, guidance, cond)
        return self.denoise(x, ts, cond, g)

    def guided_condition(
        self,
        n: int,
        prompt: str | list[str] | None = None,
        guidance: float | None = None,
        cond: Tensor | None = None,
    ) -> tuple[Tensor | None, float]:
        """The condition vectors (n, text_dim) or None and the guidance scale to sample with:
        the config's scale unless given, 1 (none) when there is no prompt to push towards."""
        if cond is None:
            cond = self.condition(prompt, n)
        elif self.text is None:
            raise ConfigError("this run was trained without captions, so it takes no condition")
        g = self.config.guidance if guidance is None else float(guidance)
        self.option_ranges["guidance"].check("guidance", g)
        if cond is not None:
            cond = cond.to(self.device)
            if not (prompt or cond.abs().sum() > 0):
                g = 1.0  # no prompt: guidance has nothing to push towards
        return cond, g

    def add_noise(self, x0: Tensor, t: int, eps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps: an image noised to timestep t."""
        abar = self.alpha_bar[t]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def predict(
        self, x_t: Tensor, t: int, cond: Tensor | None = None, guidance: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """The model's (x0, eps) at timestep t (x0 clipped to [-1, 1], eps re-derived from it)."""
        return self._predict_x0_eps(x_t, t, cond, guidance)

    def ddim_step(self, x0: Tensor, eps: Tensor, t_next: int) -> Tensor:
        """Deterministic DDIM (eta = 0): the x_{t_next} of a prediction (x0, eps)."""
        abar_next = self.alpha_bar[t_next]
        return abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps

    def denoise(
        self, x: Tensor, timesteps: list[int], cond: Tensor | None = None, guidance: float = 1.0
    ) -> Tensor:
        """DDIM from x at timesteps[0] through the given (decreasing) timesteps -> x0 in [-1, 1].
        ``decode`` starts from pure noise at T-1; img2img (SDEdit) starts lower."""
        x0 = x
        for i, t in enumerate(timesteps):
            x0, eps = self._predict_x0_eps(x, t, cond, guidance)
            if i + 1 < len(timesteps):
                x = self.ddim_step(x0, eps, timesteps[i + 1])
        return x0
