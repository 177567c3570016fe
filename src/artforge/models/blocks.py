"""Pieces shared by the model families: feature-map sizes for any image size, down/up
convolution stacks that follow them exactly, norms, init and config validation.

Networks here handle any (height, width) >= 8, not only powers of two: the sizes of the
feature maps are the image size halved with ceil until the smaller side is at most 4
(100x100 -> 50, 25, 13, 7, 4; 48x80 -> 24x40, 12x20, 6x10, 3x5). Down convolutions pad so
they land on exactly these sizes, and up stacks resize to exactly them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from artforge.config import MIN_SIDE

from ..errors import ConfigError

Norm = Literal["batch", "group", "pixel", "spectral", "none"]
Act = Literal["relu", "lrelu", "silu"]


def reject_options(model: Any, options: dict[str, Any]) -> None:
    """ValueError for sample/decode options the family does not take (a typo must not pass silently)."""
    if options:
        name = sorted(options)[0]
        raise ConfigError(
            f"unknown sample option {name!r} for {model.family}; it takes {list(model.sample_options)}"
        )


def check_image_size(height: int, width: int, channels: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ConfigError(
            f"image size must be at least {MIN_SIDE}x{MIN_SIDE}, got {width}x{height} (width x height)"
        )
    if channels < 1:
        raise ConfigError(f"channels must be at least 1, got {channels}")


# -- sizes ----------------------------------------------------------------------------------


def stage_sizes(height: int, width: int, min_side: int = 4) -> list[tuple[int, int]]:
    """[(H, W), ...]: halve both sides (ceil) until the smaller side is <= min_side."""
    if height < 1 or width < 1 or min_side < 1:
        raise ConfigError(f"bad size {height}x{width} or min_side {min_side}")
    h, w = height, width
    sizes = [(h, w)]
    while min(h, w) > min_side:
        h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def stage_channels(n: int, base: int, max_channels: int) -> list[int]:
    """Channels after each of n halvings: base, 2 base, 4 base, ... capped at max_channels."""
    return [min(base * 2**i, max_channels) for i in range(n)]


# -- layers ---------------------------------------------------------------------------------


def group_count(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """Largest group count <= max_groups dividing channels with >= min_per_group channels each."""
    g = max(1, min(max_groups, channels // min_per_group))
    while channels % g:
        g -= 1
    return g


class PixelNorm(nn.Module):
    """Each pixel's feature vector scaled to unit RMS (ProGAN, Karras et al. 2018): no running
    statistics, so an EMA copy of the weights samples exactly like the weights it averages."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x.pow(2).mean(dim=1, keepdim=True).add(1e-8).rsqrt()


def norm2d(kind: Norm, channels: int) -> nn.Module:
    """Feature norm for a conv output; "spectral" and "none" normalise weights or nothing."""
    if kind == "pixel":
        return PixelNorm()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    return nn.Identity()


def activation(kind: Act) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "lrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    return nn.SiLU(inplace=True)


class SpectralNormFP32(_SpectralNorm):
    """torch's spectral norm with its power iteration and sigma always in float32: under
    bf16/fp16 autocast, ``torch.mv`` would otherwise run in half precision, and sigma, which
    divides every weight, would carry its rounding (~1e-2 relative in bf16). Without autocast
    it is torch's own computation, bit for bit; the state-dict keys are the same."""

    def forward(self, weight: Tensor) -> Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight.float() if weight.dtype != torch.float32 else weight)


def spectral_norm_all_(module: nn.Module) -> None:
    """Spectral normalisation of every conv/linear weight in module (Miyato et al. 2018), as
    ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per step) but in
    float32 under mixed precision (SpectralNormFP32).

    Call it after initialising the weights: it estimates each weight's norm at that moment.
    """
    for m in list(module.modules()):
        # not on the meta device: the size guard (runs.check_size) builds models there only to
        # count parameters, which this does not change, and the power method on meta tensors
        # costs ~50 ms a layer
        if isinstance(m, nn.Conv2d | nn.Linear) and not m.weight.is_meta:
            parametrize.register_parametrization(m, "weight", SpectralNormFP32(m.weight, 1, 0, 1e-12))


def same_res_convs(channels: int, n: int, norm: Norm, act: Act) -> list[nn.Module]:
    """n x (3x3 conv + norm + activation) keeping channels and size: depth within a stage."""
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm != "batch"),
            norm2d(norm, channels),
            activation(act),
        ]
    return layers


def down_conv(c_in: int, c_out: int, size: tuple[int, int], bias: bool = True) -> nn.Sequential:
    """4x4 stride-2 conv from a (h, w) map to exactly (ceil(h/2), ceil(w/2)).

    Odd sides get one extra zero row/column at the bottom/right.
    """
    h, w = size
    if h % 2 == 0 and w % 2 == 0:  # the common case: plain padding, no extra copy
        return nn.Sequential(nn.Identity(), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=bias))
    return nn.Sequential(
        nn.ZeroPad2d((1, 1 + w % 2, 1, 1 + h % 2)),  # (left, right, top, bottom)
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=0, bias=bias),
    )


class DownStack(nn.Module):
    """Image (B, C, H, W) -> smallest feature map (B, C_k, h_k, w_k) through stride-2 convs.

    norm="spectral" adds no feature norm here; the owner calls spectral_norm_all_ after init.
    """

    def __init__(
        self,
        in_channels: int,
        sizes: list[tuple[int, int]],
        channels: list[int],
        norm: Norm,
        act: Act = "lrelu",
        depth: int = 1,
    ) -> None:
        super().__init__()
        assert len(channels) == len(sizes) - 1
        assert depth >= 1
        layers: list[nn.Module] = []
        c_prev = in_channels
        for i, c in enumerate(channels):
            layers.append(down_conv(c_prev, c, sizes[i], bias=norm != "batch"))
            if i > 0:  # no feature norm on the first layer (DCGAN, Radford et al. 2016)
                layers.append(norm2d(norm, c))
            layers.append(activation(act))
            layers += same_res_convs(c, depth - 1, norm, act)
            c_prev = c
        self.net = nn.Sequential(*layers)
        self.out_channels = c_prev

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, C_k, h_k, w_k)


class Modulate(nn.Module):
    """Per-sample scale and shift of feature maps from a condition vector:
    x * (1 + gamma(c)) + beta(c). After a batch norm this is conditional batch norm (de Vries
    et al. 2017; BigGAN's generator, Brock et al. 2019): the condition acts at every stage
    instead of only through the input."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)  # starts as the identity (a family's own init may perturb it)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.proj(cond.to(x.dtype)).chunk(2, dim=1)  # (B, C) each
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class SkipExcite(nn.Module):
    """Skip-layer excitation (FastGAN, Liu et al. 2021): a small map gates the channels of a
    map two stages larger, x_high * sigmoid(f(pool4(x_low))), so coarse structure reaches the
    fine stages in one step and each image gets its own channel weighting."""

    def __init__(self, c_low: int, c_high: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(c_low, c_high, 4, bias=False),  # (B, c_high, 1, 1)
            nn.LeakyReLU(0.1),
            nn.Conv2d(c_high, c_high, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        return high * self.net(low)


def run_conditioned(layers: nn.Sequential, x: Tensor, cond: Tensor | None) -> Tensor:
    """Apply ``layers`` in order, handing ``cond`` to the ``Modulate`` ones."""
    for layer in layers:
        x = layer(x, cond) if isinstance(layer, Modulate) else layer(x)
    return x


class UpStack(nn.Module):
    """Latent (B, D) -> linear to the smallest map, then per stage nearest-resize to exactly
    the next size + 3x3 conv + norm + activation; ends with a 3x3 conv to ``out_channels`` at
    (H, W) giving raw outputs (the family adds tanh/sigmoid).

    ``cond_dim`` > 0: a ``Modulate`` after every norm, so forward takes a (B, cond_dim) condition.
    ``sle``: each stage's output (from the third on, counting the first map) is gated by the
    output two stages earlier (``SkipExcite``).
    """

    def __init__(
        self,
        latent_dim: int,
        sizes: list[tuple[int, int]],
        channels: list[int],
        out_channels: int,
        norm: Norm,
        act: Act = "relu",
        full_res_channels: int = 0,
        fc_norm: bool = True,
        depth: int = 1,
        cond_dim: int = 0,
        sle: bool = False,
    ) -> None:
        super().__init__()
        assert len(channels) == len(sizes) - 1
        assert depth >= 1

        def mod(c: int) -> list[nn.Module]:
            return [Modulate(cond_dim, c)] if cond_dim else []

        h, w = sizes[-1]
        self.top = (channels[-1], h, w)
        self.fc = nn.Linear(latent_dim, channels[-1] * h * w)
        # fc_norm=False keeps the scale of z visible downstream (a per-sample norm right after
        # the linear layer would make the output depend only on the direction of z)
        self.fc_post = nn.Sequential(
            norm2d(norm if fc_norm else "none", channels[-1]), *mod(channels[-1]), activation(act)
        )
        layers: list[nn.Module] = []
        stage_ends: list[tuple[int, int]] = []  # (index in net of a stage's last layer, its channels)
        for i in range(len(channels) - 1, 0, -1):  # channels[i] at sizes[i + 1] -> sizes[i]
            layers += [
                nn.Upsample(size=sizes[i], mode="nearest"),
                nn.Conv2d(channels[i], channels[i - 1], 3, padding=1, bias=norm != "batch"),
                norm2d(norm, channels[i - 1]),
                *mod(channels[i - 1]),
                activation(act),
            ]
            layers += same_res_convs(channels[i - 1], depth - 1, norm, act)
            stage_ends.append((len(layers) - 1, channels[i - 1]))
        layers.append(nn.Upsample(size=sizes[0], mode="nearest"))
        c_last = channels[0]
        if full_res_channels:  # one more conv + norm + act at full resolution
            layers += [
                nn.Conv2d(c_last, full_res_channels, 3, padding=1, bias=norm != "batch"),
                norm2d(norm, full_res_channels),
                *mod(full_res_channels),
                activation(act),
            ]
            c_last = full_res_channels
            stage_ends.append((len(layers) - 1, full_res_channels))
        layers.append(nn.Conv2d(c_last, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        # sle: stage k (0 = the first map, after fc) gates stage k + 2; only then are there
        # modules (and state-dict keys) for it, so runs without it keep their keys
        self.excite: nn.ModuleList | None = None
        self._stage_at: dict[int, int] = {}
        if sle:
            stage_channel = [channels[-1]] + [c for _, c in stage_ends]
            self.excite = nn.ModuleList(
                SkipExcite(stage_channel[k], stage_channel[k + 2]) for k in range(len(stage_channel) - 2)
            )
            self._stage_at = {idx: k + 1 for k, (idx, _) in enumerate(stage_ends)}

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.fc(z.flatten(1)).view(z.shape[0], *self.top)  # (B, C_k, h_k, w_k)
        x = run_conditioned(self.fc_post, x, cond)
        if self.excite is None:
            return run_conditioned(self.net, x, cond)  # (B, out_channels, H, W)
        stages = [x]  # each stage's output, gated where it has a source two stages back
        for idx, layer in enumerate(self.net):
            x = layer(x, cond) if isinstance(layer, Modulate) else layer(x)
            k = self._stage_at.get(idx)
            if k is not None:
                if k >= 2:
                    x = self.excite[k - 2](stages[k - 2], x)
                stages.append(x)
        return x  # (B, out_channels, H, W)


# -- init -----------------------------------------------------------------------------------


def dcgan_init_(module: nn.Module) -> None:
    """Conv/linear weights N(0, 0.02), biases 0; BatchNorm weight N(1, 0.02), bias 0 (Radford et al. 2016)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
