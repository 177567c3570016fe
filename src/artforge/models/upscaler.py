"""Super-resolution for cascades: a residual conv net that enlarges images by 2, 4 or 8.

The run's size is the output; the input is size / factor. Training pairs are made inside the
training step from the real batch at the final size: the batch is downscaled as the data loader
makes a base model's training data (PIL's Lanczos with reducing_gap=3, ``pil_downscale``), then
a share of the inputs is degraded (blur, noise, JPEG-like blocking) so the network also takes a
generator's imperfect samples, not only clean downscales: the "conditioning augmentation"
cascaded diffusion found crucial (Ho et al. 2021, section 3.2).

The network predicts a residual over the bicubic enlargement (EDSR-like residual blocks at the
input size, then nearest x2 + conv stages; the last conv starts at zero, so an untrained model
is bicubic). The loss is L1 plus a light adversarial term from a small conditional patch
discriminator (hinge by default; ``adv_weight=0`` trains L1 alone, with no discriminator).

Sampling an upscaler alone: its "latents" are low-resolution inputs. The model keeps a bank of
``bank`` clean inputs from its first training batches (uint8 buffers, saved with the weights),
so ``sample_latents`` draws held-in images from it and ``decode`` upscales them: the sample
grids and ``artforge sample`` of an upscaler run show what it does to its own collection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from artforge.config import MAX_SIDE, Range, bounded, check_bounds, check_choices
from artforge.errors import ConfigError, InternalError
from artforge.losses import GanLoss, gan_d_loss, gan_g_loss
from artforge.models.base import GenerativeModel, Phase
from artforge.models.blocks import check_image_size, reject_options, spectral_norm_all_

FACTORS = (2, 4, 8)
MIN_INPUT_SIDE = 4  # pixels of the input's shorter side


@dataclass
class UpscalerConfig:
    # bounded(default, max): settings that size memory; checked before anything is built
    height: int = bounded(64, MAX_SIDE)  # output size (a run gives its data size here)
    width: int = bounded(64, MAX_SIDE)
    channels: int = bounded(3, 16)
    factor: int = 4  # 2, 4 or 8: the input is height / factor x width / factor
    base_channels: int = bounded(32, 1024)  # features at the input size; halved per x2 stage (min 16)
    blocks: int = bounded(4, 64)  # residual blocks at the input size
    adv_weight: float = 0.01  # weight of the adversarial term beside L1 (0: L1 only, no discriminator)
    loss: GanLoss = "hinge"  # the adversarial term's GAN loss
    d_channels: int = bounded(16, 1024)  # the patch discriminator's first width
    degrade: float = 0.5  # share of training inputs degraded (the rest are clean downscales)
    blur: float = 1.0  # largest Gaussian blur sigma, in input pixels (0: none)
    noise: float = 0.05  # largest noise std in [-1, 1] units (0: none)
    jpeg: int = 30  # lowest quality of the JPEG-like blocking (0: none; at most 95)
    bank: int = bounded(64, 4096)  # held-in inputs kept for sample grids and `artforge sample`

    def __post_init__(self) -> None:
        check_bounds(self, "model")
        check_choices(self, "loss")
        check_image_size(self.height, self.width, self.channels)
        if self.factor not in FACTORS:
            raise ConfigError(f"model.factor must be one of {list(FACTORS)}, got {self.factor!r}")
        input_size(self.height, self.width, self.factor)  # divisible, and not too small
        for name in ("base_channels", "blocks", "d_channels", "bank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.adv_weight < math.inf:
            raise ConfigError(f"model.adv_weight must be 0 or more, got {self.adv_weight}")
        if not 0 <= self.degrade <= 1:
            raise ConfigError(f"model.degrade must be a share in [0, 1], got {self.degrade}")
        if not 0 <= self.blur <= 8 or not 0 <= self.noise <= 1:
            raise ConfigError(
                f"model.blur must be in [0, 8] and model.noise in [0, 1], got {self.blur}, {self.noise}"
            )
        if not (self.jpeg == 0 or 1 <= self.jpeg <= 95):
            raise ConfigError(f"model.jpeg must be 0 (off) or a quality in [1, 95], got {self.jpeg}")


def input_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """(h, w) of the input of an upscaler to ``height`` x ``width`` by ``factor``; a ConfigError
    when the size is not divisible or the input would be under MIN_INPUT_SIDE."""
    if height % factor or width % factor:
        raise ConfigError(
            f"an upscaler by {factor} needs a size divisible by {factor}; {width}x{height} is not "
            f"(try {width // factor * factor}x{height // factor * factor}, or another model.factor)"
        )
    h, w = height // factor, width // factor
    if min(h, w) < MIN_INPUT_SIDE:
        raise ConfigError(
            f"an upscaler by {factor} to {width}x{height} would take {w}x{h} inputs; "
            f"the input needs at least {MIN_INPUT_SIDE} pixels a side"
        )
    return h, w


# -- resampling as the data loader does it (PIL), on tensors ----------------------------------


def _lanczos(x: Tensor) -> Tensor:
    """The Lanczos-3 kernel sinc(x) sinc(x / 3) on |x| < 3."""
    return torch.where(x.abs() < 3, torch.sinc(x) * torch.sinc(x / 3), torch.zeros_like(x))


def lanczos_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) weights of PIL's Lanczos resampling of one axis (libImaging/Resample.c,
    precompute_coeffs: support 3 x the scale, clipped at the edges and renormalised), float64."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    out = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        x = torch.arange(lo, hi, dtype=torch.float64)
        w = _lanczos((x - center + 0.5) / filterscale)
        out[i, lo:hi] = w / w.sum()
    return out


_MATRICES: dict[tuple[int, int], Tensor] = {}


def pil_downscale(x: Tensor, height: int, width: int) -> Tensor:
    """Images (B, C, H, W) -> (B, C, height, width) as ``Image.resize(..., LANCZOS,
    reducing_gap=3.0)`` (data/folder.py) makes them: a box reduction by int(scale / 3) first when
    that is 2 or more, then Lanczos. In float, so within a level of PIL's 8-bit result (two
    after a box pre-reduction: PIL rounds between its passes; tests/test_cascade.py measures it)."""
    b, c, hh, ww = x.shape
    ry, rx = max(1, int(hh / height / 3.0)), max(1, int(ww / width / 3.0))
    if (ry > 1 or rx > 1) and hh % ry == 0 and ww % rx == 0:
        x = F.avg_pool2d(x, (ry, rx))
        hh, ww = hh // ry, ww // rx
    mats = []
    for n_in, n_out in ((hh, height), (ww, width)):
        key = (n_in, n_out)
        if key not in _MATRICES:
            _MATRICES[key] = lanczos_matrix(n_in, n_out).float()
        mats.append(_MATRICES[key].to(x.device, x.dtype))
    return torch.einsum("yh,bchw,xw->bcyx", mats[0], x, mats[1])


def quantise(x: Tensor) -> Tensor:
    """[-1, 1] images rounded to 8 bits, as a PNG of them would hold them."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


# -- degradations (the conditioning augmentation) ---------------------------------------------

_JPEG_LUMA = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def _dct_matrix(n: int = 8) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()  # orthonormal DCT-II: m @ m.T = I


_DCT = _dct_matrix()


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image of (B, C, H, W) by its own sigma (B,) in pixels (0: unchanged)."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(2.5 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, 2r+1)
    y = x.reshape(1, b * c, h, w)
    mode = "reflect" if min(h, w) > radius else "replicate"
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode=mode), k[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode=mode), k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def jpeg_blocking(x: Tensor, quality: Tensor) -> Tensor:
    """JPEG-like artefacts: each 8x8 block's DCT coefficients quantised with the standard luma
    table at ``quality`` (B,) (1-100, the libjpeg scaling), per channel, no chroma subsampling."""
    b, c, h, w = x.shape
    ph, pw = -h % 8, -w % 8
    y = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    hh, ww = h + ph, w + pw
    q = quality.to(x.dtype).clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)  # (B,) percent
    table = ((_JPEG_LUMA.to(x.device, x.dtype)[None] * scale[:, None, None] + 50) / 100).floor().clamp(min=1)
    table = table / 127.5  # pixel levels -> [-1, 1] units
    d = _DCT.to(x.device, x.dtype)
    blocks = y.reshape(b, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (B, C, bh, bw, 8, 8)
    coef = d @ blocks @ d.T
    t = table[:, None, None, None]
    coef = (coef / t).round() * t
    out = (d.T @ coef @ d).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hh, ww)
    return out[:, :, :h, :w]


# -- networks ---------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU - conv3x3, added to the input (EDSR: no normalisation)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRNet(nn.Module):
    """Input (B, C, h, w) -> residual over its bicubic enlargement (B, C, h*f, w*f)."""

    def __init__(self, c: UpscalerConfig) -> None:
        super().__init__()
        ch = c.base_channels
        self.head = nn.Conv2d(c.channels, ch, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(ch) for _ in range(c.blocks)], nn.Conv2d(ch, ch, 3, padding=1))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(c.factor))):  # nearest x2 + conv: no checkerboard (Odena et al. 2016)
            nxt = max(16, ch // 2)
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, nxt, 3, padding=1)]
            ups.append(nn.LeakyReLU(0.2, inplace=True))
            ch = nxt
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(ch, c.channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # an untrained upscaler is bicubic
        nn.init.zeros_(self.tail.bias)
        self.size = (c.height, c.width)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.head(x)
        feats = feats + self.body(feats)
        residual = self.tail(self.up(feats))
        return bicubic(x, self.size) + residual


def bicubic(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


class PatchD(nn.Module):
    """Conditional patch discriminator: (image, bicubic input) at the output size -> a map of
    logits, one per overlapping patch (pix2pix's PatchGAN, smaller), spectrally normalised."""

    def __init__(self, c: UpscalerConfig) -> None:
        super().__init__()
        d = c.d_channels
        self.net = nn.Sequential(
            nn.Conv2d(2 * c.channels, d, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(d, 2 * d, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * d, 2 * d, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * d, 1, 3, padding=1),
        )
        spectral_norm_all_(self)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return self.net(torch.cat([x, cond], dim=1)).flatten(1)  # (B, patches)


# -- the family -------------------------------------------------------------------------------


class Upscaler(GenerativeModel):
    """Enlarges images by ``factor``; ``upscale(images)`` is the operation, ``decode`` the same
    on latents (which are input-size images)."""

    family: ClassVar[str] = "upscaler"
    config_class: ClassVar[type] = UpscalerConfig
    optim_defaults: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 5e-4, "betas": (0.9, 0.99)}
    ema_groups: ClassVar[tuple[str, ...]] = ("G",)
    ema_default: ClassVar[bool] = True
    sample_options: ClassVar[tuple[str, ...]] = ()
    option_ranges: ClassVar[dict[str, Range]] = {}
    config: UpscalerConfig
    bank_images: Tensor
    bank_count: Tensor

    def __init__(self, config: UpscalerConfig) -> None:
        super().__init__(config)
        self.in_size = input_size(config.height, config.width, config.factor)
        self.G = SRNet(config)
        self.D = PatchD(config) if config.adv_weight > 0 else None
        self.register_buffer(
            "bank_images", torch.zeros(config.bank, config.channels, *self.in_size, dtype=torch.uint8)
        )
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"G": list(self.G.parameters())}
        if self.D is not None:
            groups["D"] = list(self.D.parameters())
        return groups

    def phases(self) -> list[Phase]:
        return [Phase("D", "D"), Phase("G", "G")] if self.D is not None else [Phase("G", "G")]

    # -- training pairs -----------------------------------------------------------------------
    def downscale(self, hr: Tensor) -> Tensor:
        """Final-size images -> clean inputs, as the loader would have made them (8-bit)."""
        return quantise(pil_downscale(hr.float(), *self.in_size)).to(hr.dtype)

    def _batch_rand(self, n: int, k: int, device: torch.device) -> Tensor:
        """Uniform (n, k) for this rank's n images, drawn for the global batch like all noise."""
        return self._slice(torch.rand(n * self.shard[1], k, device=device), n)

    def degrade(self, lr: Tensor) -> Tensor:
        """A share ``degrade`` of the inputs blurred, noised and/or JPEG-blocked (each with
        probability 1/2, strengths uniform up to the config's), then rounded to 8 bits."""
        c = self.config
        n = lr.shape[0]
        u = self._batch_rand(n, 7, lr.device)  # drawn whatever the settings: one RNG stream
        noise = self.batch_randn(n, *lr.shape[1:], device=lr.device)
        on = u[:, 0] < c.degrade
        x = lr.float()
        if c.blur > 0:
            sigma = torch.where(
                on & (u[:, 1] < 0.5), 0.2 + (c.blur - 0.2) * u[:, 2], torch.zeros_like(u[:, 2])
            )
            if bool((sigma > 0).any()):
                x = torch.where((sigma > 0)[:, None, None, None], gaussian_blur(x, sigma.clamp(min=0.05)), x)
        if c.noise > 0:
            std = torch.where(on & (u[:, 3] < 0.5), c.noise * u[:, 4], torch.zeros_like(u[:, 4]))
            x = x + std[:, None, None, None] * noise.float()
        if c.jpeg > 0:
            quality = c.jpeg + (95 - c.jpeg) * u[:, 6]
            use = on & (u[:, 5] < 0.5)
            if bool(use.any()):
                x = torch.where(use[:, None, None, None], jpeg_blocking(x, quality), x)
        return quantise(x).to(lr.dtype)

    @torch.no_grad()
    def _remember(self, lr: Tensor) -> None:
        """Keep the first ``bank`` clean inputs seen in training for sampling."""
        have = int(self.bank_count)
        take = min(self.config.bank - have, lr.shape[0])
        if take > 0:
            u8 = ((lr[:take].float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            self.bank_images[have : have + take] = u8
            self.bank_count.fill_(have + take)

    def training_step(
        self, phase: str, batch: Tensor, step: int, text: list[str] | None = None
    ) -> dict[str, Tensor]:
        clean = self.downscale(batch)  # (B, C, h, w)
        lr = self.degrade(clean)
        if phase == "D":
            assert self.D is not None
            with torch.no_grad():
                fake = self.G(lr)
            cond = bicubic(lr, self.G.size)
            real_logits, fake_logits = self.D(batch, cond), self.D(fake, cond)
            loss = gan_d_loss(self.config.loss, real_logits, fake_logits)
            return {
                "loss": loss,
                "d_real": real_logits.detach().mean(),
                "d_fake": fake_logits.detach().mean(),
            }
        if phase != "G":
            raise InternalError(f"unknown phase {phase!r}; this model has {[p.name for p in self.phases()]}")
        self._remember(clean)
        fake = self.G(lr)
        l1 = (fake - batch).abs().mean()
        out = {"l1": l1.detach()}
        loss = l1
        if self.D is not None:
            adv = gan_g_loss(self.config.loss, self.D(fake, bicubic(lr, self.G.size)))
            loss = l1 + self.config.adv_weight * adv
            out["adv"] = adv.detach()
        with torch.no_grad():  # PSNR of this batch in dB ([-1, 1] images: peak-to-peak 2)
            mse = (fake.detach().float().clamp(-1, 1) - batch.float()).pow(2).mean()
            out["psnr"] = 10 * torch.log10(4 / mse.clamp(min=1e-10))
        return {"loss": loss, **out}

    # -- sampling -----------------------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n input-size images (n, C, h, w) in [-1, 1] on the CPU: consecutive held-in inputs
        of the bank from a random start (or random pixels while the bank is empty)."""
        c, (h, w) = self.config.channels, self.in_size
        count = int(self.bank_count)
        start = torch.randint(0, max(count, 1), (1,), generator=generator)
        if count == 0:
            return torch.rand(n, c, h, w, generator=generator) * 2 - 1
        idx = (start + torch.arange(n)) % count
        return self.bank_images[idx.to(self.bank_images.device)].cpu().float() / 127.5 - 1

    def decode(self, latents: Tensor, **options: Any) -> Tensor:
        reject_options(self, options)
        return self.upscale(latents)

    def upscale(self, images: Tensor) -> Tensor:
        """Images (n, C, h, w) in [-1, 1] at the input size -> (n, C, H, W) in [-1, 1]; rounded
        to 8 bits first, as the training inputs are."""
        c, (h, w) = self.config.channels, self.in_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (c, h, w):
            raise ConfigError(
                f"this upscaler takes images of {w}x{h} ({c} channels) and makes "
                f"{self.config.width}x{self.config.height}; got shape {tuple(images.shape)}"
            )
        x = quantise(images.to(self.device, torch.float32))
        if self.G.head.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.G(x).clamp(-1, 1)
