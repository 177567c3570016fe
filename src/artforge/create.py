"""Start from your own image: projection, img2img, inpainting, and GAN style mixing.

- ``project``: the latent whose image is closest to a target (GAN, DCGAN: optimised from the
  best of a pool of random latents, as StyleGAN2-ADA's projector starts from a good guess;
  VAE: the encoder's mean, optionally refined by the same optimisation).
- ``img2img``: diffusion: SDEdit (Meng et al. 2022), the image noised to the timestep of the
  strength and denoised by DDIM from there; GAN/VAE: the projected latent moved toward fresh
  random latents by slerp(strength). Strength 0 returns the input itself, 1 ignores it (the
  images of ``sample(n, seed=seed)``).
- ``inpaint``: mask white = fill, black = keep (diffusers' convention). Diffusion: the known
  region is replaced by the input noised to every step's timestep (RePaint, Lugmayr et al.
  2022, with optional resampling); GAN/VAE: projection with the loss on the known pixels only.
  Either way the output's kept pixels are the input's, exactly.
- ``mix``: GAN/VAE "coarse from A, fine from B": the generator has no per-layer latent input
  (z enters once, at the first linear layer), so StyleGAN's per-layer style mixing does not
  exist here. Its nearest honest counterpart is mixing feature statistics: A's image is
  generated as usual up to layer ``at``; from there on each layer's per-channel mean and
  standard deviation are replaced by those B's image has at that layer (AdaIN, Huang &
  Belongie 2017, the operation StyleGAN's styles act through). Layout comes from A, colour
  and texture statistics from B.

The distance a projection minimises needs no weights beyond the run's own: pixel mean squared
error plus a perceptual term on the run's own discriminator (GAN) or encoder (VAE) features,
unit-normalised per position like LPIPS. Never the FID Inception network: projecting through
it would tune images to the very features the reported FID measures.

Images in and out are float (B, C, H, W) in [0, 1] unless a name says otherwise; the input
file goes through the training data's decoder (size limits, fit, background).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import DataConfig
from .data.folder import MAX_FILE_BYTES, Skip, Spec, decode, parse_background
from .errors import ConfigError, Conflict, DataError, InternalError
from .io import save_safetensors, write_json
from .models.base import GenerativeModel, load_weights
from .models.diffusion import ddim_timesteps
from .runfolder import CREATE
from .sample import generate, latents_for_seed, make_grid, save_animation, save_image, slerp, to_unit

PIXEL_WEIGHT = 1.0
PERCEPTUAL_WEIGHT = 0.1
PRIOR_WEIGHT = 1e-3  # keeps |z| near sqrt(latent_dim), where the generator has been trained
CANDIDATES = 64  # random latents per target; the projection starts from the closest


# -- inputs ---------------------------------------------------------------------------------


def load_image(
    path: str | os.PathLike[str] | bytes,
    data: DataConfig,
    *,
    background: str | None = None,
    name: str = "upload",
) -> Tensor:
    """An image file (or its bytes, e.g. an upload, called ``name`` in messages) -> (1, 3, H, W)
    in [0, 1] at the run's size, fit and background, through the training data's decoder
    (format by content, pixel-count limit, EXIF orientation). A bad file raises DataError
    naming the file and the problem."""
    if isinstance(path, bytes):
        label, size = name, len(path)
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such image file")
        label, size = str(p), p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{label}: too large ({size / 2**20:,.0f} MiB file)")
    bg = parse_background(background or data.background)
    spec = Spec(data.height, data.width, data.fit, bg, data.max_pixels)
    try:
        arr = decode(path if isinstance(path, bytes) else Path(path), spec)  # (H, W, 3) uint8
    except Skip as e:
        raise DataError(f"{label}: {e.reason}") from None
    except OSError as e:
        raise DataError(f"{label}: unreadable ({e.strerror or e})") from None
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].float().div(255)


def load_mask(path: str | os.PathLike[str] | bytes, data: DataConfig, *, name: str = "mask") -> Tensor:
    """A mask file (or its bytes) -> (1, 1, H, W) bool, True where to fill (white), False where
    to keep (black), fitted like the image; padding (fit=pad) counts as keep."""
    grey = load_image(path, data, background="#000000", name=name).mean(1, keepdim=True)  # (1, 1, H, W)
    return grey >= 0.5


def box_mask(box: str, data: DataConfig) -> Tensor:
    """``"L,T,R,B"`` (edges as fractions of the width and height) -> (1, 1, H, W) bool, True
    inside the rectangle (fill): a hole without drawing a mask file."""
    try:
        left, top, right, bottom = (float(v) for v in box.split(","))
    except ValueError:
        raise ConfigError(
            f"--box must be four fractions L,T,R,B such as 0.25,0.25,0.75,0.75, got {box!r}"
        ) from None
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise ConfigError(f"--box needs 0 <= L < R <= 1 and 0 <= T < B <= 1, got {box!r}")
    h, w = data.height, data.width
    y0, y1 = round(top * h), max(round(bottom * h), round(top * h) + 1)  # at least one pixel
    x0, x1 = round(left * w), max(round(right * w), round(left * w) + 1)
    fill = torch.zeros(1, 1, h, w, dtype=torch.bool)
    fill[..., y0:y1, x0:x1] = True
    return fill


def as_images(image: Tensor | str | os.PathLike[str] | bytes, data: DataConfig) -> Tensor:
    """A path, file bytes or a (C, H, W) / (B, C, H, W) tensor in [0, 1] -> (B, C, H, W),
    checked against the run's size."""
    if not isinstance(image, Tensor):
        return load_image(image, data)  # a path, or the bytes of an upload
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, data.height, data.width):
        raise DataError(
            f"image must be (B, 3, {data.height}, {data.width}) in [0, 1], got {tuple(image.shape)}"
        )
    if not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1:
        raise DataError("image values must be finite and in [0, 1]")
    return x.float().cpu()


def check_strength(strength: float) -> float:
    if not 0 <= strength <= 1:
        raise ConfigError(f"strength must be in [0, 1], got {strength}")
    return float(strength)


# -- the distance ---------------------------------------------------------------------------


def feature_layers(model: GenerativeModel) -> nn.Sequential:
    """The run's own image-reading network whose activations the perceptual term compares:
    the discriminator's body (GAN, DCGAN) or the encoder's (VAE)."""
    if model.family == "gan":
        return model.D.body.net  # type: ignore[union-attr,return-value]
    if model.family == "dcgan":
        return model.D.main[:-1]  # type: ignore[index,union-attr,return-value]
    if model.family == "vae":
        return model.encoder.body.net  # type: ignore[union-attr,return-value]
    raise Conflict(f"{model.family} runs have no image features to project with")


_ACTS = (nn.ReLU, nn.LeakyReLU, nn.SiLU)


def activations(layers: nn.Sequential, x: Tensor) -> list[Tensor]:
    """Every activation layer's output, each unit-normalised over channels (LPIPS-style)."""
    out = []
    for layer in layers:
        x = layer(x)
        if isinstance(layer, _ACTS):
            out.append(x / (x.pow(2).sum(1, keepdim=True) + 1e-8).sqrt())
    return out


def distance(
    x: Tensor, target_feats: list[Tensor], target: Tensor, layers: nn.Sequential, keep: Tensor | None
) -> Tensor:
    """Per-image distance (B,): pixel MSE + weighted perceptual distance, on the ``keep``
    pixels only when a mask is given (both images are zeroed outside it before the features)."""
    if keep is not None:
        k = keep.to(x.dtype)
        pix = ((x - target).pow(2) * k).flatten(1).sum(1) / (k.flatten(1).sum(1) * x.shape[1]).clamp_min(1)
        x = x * k
    else:
        pix = (x - target).pow(2).flatten(1).mean(1)
    perc = torch.stack(
        [
            (a - b).pow(2).sum(1).flatten(1).mean(1)
            for a, b in zip(activations(layers, x), target_feats, strict=True)
        ]
    ).mean(0)
    return PIXEL_WEIGHT * pix + PERCEPTUAL_WEIGHT * perc


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB of [0, 1] images, per image (B,)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1 / mse)


# -- projection -----------------------------------------------------------------------------


@dataclass
class Projection:
    """The result of ``project``: latents (B, ...) on the CPU, their images and the targets
    (B, C, H, W) in [0, 1], the final distance and PSNR per image, and progress frames."""

    latents: Tensor
    images: Tensor
    targets: Tensor
    distance: Tensor
    psnr: Tensor
    frames: list[Tensor] = field(default_factory=list)  # each (B, C, H, W) in [0, 1]


class _Frozen:
    """Weights without gradients and the model in eval mode, for the duration of a block."""

    def __init__(self, model: GenerativeModel) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.training = self.model.training
        self.model.requires_grad_(False).eval()

    def __exit__(self, *exc: object) -> None:
        for p, f in zip(self.model.parameters(), self.flags, strict=True):
            p.requires_grad_(f)
        self.model.train(self.training)


def _condition(model: GenerativeModel, prompt: str | None, n: int) -> Tensor | None:
    condition = getattr(model, "condition", None)
    if not getattr(model, "conditional", False) or condition is None:
        if prompt:
            raise ConfigError("this run was trained without captions, so it takes no prompt")
        return None
    return condition(prompt, n)


def _decode(model: GenerativeModel, z: Tensor, cond: Tensor | None) -> Tensor:
    return model.decode(z, cond=cond) if cond is not None else model.decode(z)


def project(
    model: GenerativeModel,
    images: Tensor,
    *,
    steps: int = 200,
    seed: int = 0,
    mask: Tensor | None = None,
    prompt: str | None = None,
    lr: float = 0.05,
    candidates: int = CANDIDATES,
    frames: int = 0,
) -> Projection:
    """Latents reproducing ``images`` (B, C, H, W) in [0, 1]; deterministic for a seed.

    ``mask`` (B or 1, 1, H, W) bool, True = unknown (to fill): the distance counts the other
    pixels only. GAN/DCGAN start image i from the closest of its own ``candidates`` random
    latents; the VAE from its encoder's mean (for a masked image, a posterior sample, so
    several copies of one image get different fills). Then ``steps`` Adam steps on the
    latents (0 = the start as it is), keeping each image's best latent. ``frames`` > 0
    records that many snapshots of the images along the way (for a GIF).
    """
    if model.family not in ("gan", "dcgan", "vae"):
        raise Conflict(f"projection works for gan, dcgan and vae runs, not {model.family}; try img2img")
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    dev = model.device
    g = torch.Generator().manual_seed(seed)
    target = (images.to(dev).float() * 2 - 1).contiguous()  # (B, C, H, W) in [-1, 1]
    b = target.shape[0]
    keep = None if mask is None else (~mask.to(dev)).expand(b, 1, *target.shape[2:])
    layers = feature_layers(model)
    cond = _condition(model, prompt, b)
    with _Frozen(model):
        with torch.no_grad():
            t_feats = activations(layers, target if keep is None else target * keep.to(target.dtype))
            z0 = _start(model, target, keep, cond, t_feats, layers, g, candidates)
        z = z0.clone().to(dev).requires_grad_(True)
        best_z = z0.clone().to(dev)
        with torch.no_grad():
            best_d = distance(_decode(model, best_z, cond), t_feats, target, layers, keep)
        opt = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999))
        record = set(np.linspace(0, steps, frames).round().astype(int).tolist()) if frames else set()
        shots: list[Tensor] = []
        dim = z[0].numel()
        for i in range(steps + 1):
            x = _decode(model, z, cond)
            d = distance(x, t_feats, target, layers, keep)  # (B,)
            with torch.no_grad():
                better = d < best_d
                best_d = torch.where(better, d, best_d)
                best_z[better] = z[better].detach()
            if i in record:
                shots.append(to_unit(x.detach()).cpu())
            if i == steps:
                break
            for group in opt.param_groups:  # StyleGAN2-ADA's projector: warm up, cosine down
                group["lr"] = lr * _lr_ramp(i / steps)
            prior = (z.flatten(1).norm(dim=1) - math.sqrt(dim)).pow(2) / dim
            loss = (d + PRIOR_WEIGHT * prior).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = to_unit(_decode(model, best_z, cond)).cpu()
    targets = images.float().cpu()
    return Projection(best_z.detach().cpu(), out, targets, best_d.detach().cpu(), psnr(out, targets), shots)


def _lr_ramp(t: float, up: float = 0.05, down: float = 0.25) -> float:
    ramp = min(1.0, (1 - t) / down)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / up)


def _start(
    model: GenerativeModel,
    target: Tensor,
    keep: Tensor | None,
    cond: Tensor | None,
    t_feats: list[Tensor],
    layers: nn.Sequential,
    g: torch.Generator,
    candidates: int,
) -> Tensor:
    """Starting latents (B, D): the VAE's encoding, else the closest of each image's own pool."""
    b = target.shape[0]
    if model.family == "vae":
        x = target if keep is None else target * keep.to(target.dtype)
        mu, logvar = model.encoder(x, cond)  # type: ignore[operator]
        if keep is None:
            return mu.cpu()
        eps = torch.randn(mu.shape, generator=g).to(mu.device)
        return (mu + torch.exp(0.5 * logvar) * eps).cpu()
    pool = model.sample_latents(b * candidates, g).reshape(b, candidates, -1)  # (B, K, D)
    starts = []
    for i in range(b):
        zs = pool[i].to(model.device)
        c = None if cond is None else cond[i : i + 1].expand(candidates, -1)
        x = _decode(model, zs, c)
        feats_i = [f[i : i + 1].expand(candidates, *f.shape[1:]) for f in t_feats]
        k = None if keep is None else keep[i : i + 1].expand(candidates, -1, -1, -1)
        d = distance(x, feats_i, target[i : i + 1].expand_as(x), layers, k)
        starts.append(pool[i, int(d.argmin())])
    return torch.stack(starts)


# -- img2img --------------------------------------------------------------------------------


def img2img(
    model: GenerativeModel,
    image: Tensor,
    strength: float,
    n: int = 1,
    *,
    seed: int = 0,
    prompt: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    project_steps: int = 200,
) -> Tensor:
    """n variations (n, C, H, W) in [0, 1] of one image (1, C, H, W) in [0, 1].

    Strength 0 returns the image itself n times; 1 ignores it and gives ``sample(n, seed)``'s
    images. Diffusion: SDEdit, the image noised to timestep strength * (T - 1) with seed's
    noise, then DDIM in about strength * ``steps`` steps. GAN/VAE: the projected latent
    slerped toward seed's random latents by the strength.
    """
    strength = check_strength(strength)
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    image = image[:1].float().cpu()
    if strength == 0:
        return image.expand(n, -1, -1, -1).clone()
    noise = latents_for_seed(model, n, seed)  # the latents sample(n, seed) draws
    cond = _condition(model, prompt, n)
    if model.family == "diffusion":
        return _sdedit(model, image, strength, noise, prompt, cond, steps, guidance)
    if steps is not None or guidance is not None:
        raise ConfigError("steps and guidance apply to diffusion runs")
    if strength == 1:
        z = noise
    else:
        proj = project(model, image, steps=project_steps, seed=seed, prompt=prompt)
        z = slerp(proj.latents.expand(n, *proj.latents.shape[1:]), noise, strength)
    with _Frozen(model), torch.no_grad():
        return to_unit(_decode(model, z.to(model.device), cond)).cpu()


def _schedule(model: Any, strength: float, steps: int | None) -> list[int]:
    """DDIM timesteps from strength * (T - 1) down to 0, about strength * steps of them."""
    steps = model.config.sample_steps if steps is None else int(steps)
    total = model.config.timesteps
    if strength >= 1:
        return ddim_timesteps(total, steps)
    start = round(strength * (total - 1))
    k = max(1, min(start + 1, round(steps * strength)))
    return [round(x) for x in torch.linspace(start, 0, k).tolist()]


@torch.no_grad()
def _sdedit(
    model: Any,
    image: Tensor,
    strength: float,
    noise: Tensor,
    prompt: str | None,
    cond: Tensor | None,
    steps: int | None,
    guidance: float | None,
) -> Tensor:
    n = noise.shape[0]
    ts = _schedule(model, strength, steps)
    cond, g = model.guided_condition(n, prompt, guidance, cond)
    noise = noise.to(model.device)
    x0 = (image.to(model.device) * 2 - 1).expand(n, -1, -1, -1)
    x = noise if strength >= 1 else model.add_noise(x0, ts[0], noise)
    with _Frozen(model):
        return to_unit(model.denoise(x, ts, cond, g)).cpu()


# -- inpainting -----------------------------------------------------------------------------


def inpaint(
    model: GenerativeModel,
    image: Tensor,
    mask: Tensor,
    n: int = 1,
    *,
    seed: int = 0,
    prompt: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    resample: int = 1,
    project_steps: int = 200,
) -> Tensor:
    """n fills (n, C, H, W) in [0, 1] of the ``mask``ed (1, 1, H, W; True = fill) part of
    ``image`` (1, C, H, W) in [0, 1]; the other pixels are the image's, exactly."""
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if resample < 1:
        raise ConfigError(f"resample must be at least 1, got {resample}")
    image = image[:1].float().cpu()
    fill = mask[:1].bool().cpu()
    if tuple(fill.shape[-2:]) != tuple(image.shape[-2:]):
        raise DataError(f"mask is {tuple(fill.shape[-2:])}, the image {tuple(image.shape[-2:])}")
    if model.family == "diffusion":
        out = _repaint(model, image, fill, n, seed, prompt, steps, guidance, resample)
    else:
        if steps is not None or guidance is not None or resample != 1:
            raise ConfigError("steps, guidance and resample apply to diffusion runs")
        many = image.expand(n, -1, -1, -1)
        out = project(model, many, steps=project_steps, seed=seed, mask=fill, prompt=prompt).images
    return torch.where(fill, out, image)  # known pixels: the input's, bit for bit


@torch.no_grad()
def _repaint(
    model: Any,
    image: Tensor,
    fill: Tensor,
    n: int,
    seed: int,
    prompt: str | None,
    steps: int | None,
    guidance: float | None,
    resample: int,
) -> Tensor:
    """DDIM with the known region replaced at every step by the input noised to that step's
    timestep; with ``resample`` r > 1, each step is taken r times, going back up by fresh
    noise in between (RePaint's resampling, which lets the fill and the known part agree)."""
    dev = model.device
    g = torch.Generator().manual_seed(seed)
    ts = ddim_timesteps(model.config.timesteps, model.config.sample_steps if steps is None else int(steps))
    cond, gs = model.guided_condition(n, prompt, guidance, _condition(model, prompt, n))
    known = (image.to(dev) * 2 - 1).expand(n, -1, -1, -1)
    hole = fill.to(dev).to(known.dtype)

    def randn() -> Tensor:
        return model.sample_latents(n, g).to(dev)

    x = randn()  # x at ts[0]
    x0 = known
    with _Frozen(model):
        for i, t in enumerate(ts):
            for r in range(resample):
                x = hole * x + (1 - hole) * model.add_noise(known, t, randn())
                x0, eps = model.predict(x, t, cond, gs)
                if i + 1 == len(ts):
                    break
                x_next = model.ddim_step(x0, eps, ts[i + 1])
                if r + 1 < resample:  # back up from ts[i + 1] to t: q(x_t | x_{t_next})
                    ratio = model.alpha_bar[t] / model.alpha_bar[ts[i + 1]]
                    x = ratio.sqrt() * x_next + (1 - ratio).sqrt() * randn()
                else:
                    x = x_next
    return to_unit(x0).cpu()


# -- style mixing ---------------------------------------------------------------------------


def mix_layers(model: GenerativeModel) -> list[nn.Module]:
    """The generator's activation layers in order (layer 0 is the first, smallest map)."""
    if model.family in ("gan", "vae"):
        stack = model.G.net if model.family == "gan" else model.decoder.net  # type: ignore[union-attr]
        seqs = [stack.fc_post, stack.net]  # not SLE's gates: they read maps, they are not maps
        return [m for s in seqs for m in s if isinstance(m, _ACTS)]  # type: ignore[union-attr]
    if model.family == "dcgan":
        return [m for m in model.G.main if isinstance(m, _ACTS)]  # type: ignore[union-attr]
    raise Conflict(
        f"{model.family} runs cannot mix styles: their latent is the starting noise of a "
        "denoising chain, with no generator layers that coarse and fine features come from"
    )


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.flatten(2)  # (B, C, HW)
    return flat.mean(2)[..., None, None], flat.std(2, unbiased=False)[..., None, None] + 1e-5


@torch.no_grad()
def mix(model: GenerativeModel, z_a: Tensor, z_b: Tensor, at: int, **options: Any) -> Tensor:
    """Images (n, C, H, W) in [0, 1] with A's layout (layers < ``at``) and B's per-channel
    feature statistics from layer ``at`` on; ``at`` = the number of layers gives A itself."""
    layers = mix_layers(model)
    if not 0 <= at <= len(layers):
        raise ConfigError(
            f"--at must be a layer in 0..{len(layers)} for this run (0 = B's statistics from the first map)"
        )
    recorded: dict[int, tuple[Tensor, Tensor]] = {}
    handles = []

    def record(i: int) -> Any:
        def hook(_m: nn.Module, _inp: Any, out: Tensor) -> None:
            recorded[i] = _stats(out)

        return hook

    def swap(i: int) -> Any:
        def hook(_m: nn.Module, _inp: Any, out: Tensor) -> Tensor:
            mean, std = _stats(out)
            mean_b, std_b = recorded[i]
            return (out - mean) / std * std_b + mean_b

        return hook

    try:
        handles = [layer.register_forward_hook(record(i)) for i, layer in enumerate(layers) if i >= at]
        generate(model, z_b, chunk=z_b.shape[0], **options)
        for h in handles:
            h.remove()
        handles = [layer.register_forward_hook(swap(i)) for i, layer in enumerate(layers) if i >= at]
        return generate(model, z_a, chunk=z_a.shape[0], **options)
    finally:
        for h in handles:
            h.remove()


# -- latent files ---------------------------------------------------------------------------

LATENTS_KEY = "latents"


def save_latents(latents: Tensor, path: str | os.PathLike[str], meta: dict[str, str]) -> Path:
    """Write latents (n, ...) as safetensors (key "latents") via a temp name."""
    return save_safetensors({LATENTS_KEY: latents.float()}, path, metadata=meta)


def load_latents(path: str | os.PathLike[str], model: GenerativeModel) -> Tensor:
    """Latents (n, ...) from a file ``save_latents`` wrote, checked against the run's latent shape."""
    tensors = load_weights(path)  # safetensors only: never unpickles
    if LATENTS_KEY not in tensors:
        raise DataError(f"{path}: no {LATENTS_KEY!r} tensor (write it with artforge project)")
    z = tensors[LATENTS_KEY]
    want = tuple(model.sample_latents(1).shape[1:])
    if z.dim() < 2 or tuple(z.shape[1:]) != want or z.shape[0] < 1:
        raise DataError(
            f"{path}: latents of shape {tuple(z.shape)}; this run's are (n, {', '.join(map(str, want))})"
        )
    if not z.is_floating_point() or not bool(torch.isfinite(z).all()):
        raise DataError(f"{path}: latents must be finite floating-point numbers")
    return z.float()


# -- the files an operation writes: the CLI, the studio and api.Run all write these names -----

LATENT_FILE = "latent.safetensors"  # what sample/interpolate --latents and Run.read_latents read
RECONSTRUCTION_FILE = "reconstruction.png"
TARGET_FILE = "target.png"
PROGRESS_FILE = "progress.gif"
PROJECT_FILE = "project.json"
PROGRESS_FPS = 10


def create_dir(run_path: str | os.PathLike[str], kind: str, image: str | os.PathLike[str]) -> Path:
    """Where ``artforge project/img2img/inpaint`` write by default: RUN/create/KIND-IMAGESTEM."""
    return Path(run_path) / CREATE / f"{kind}-{Path(image).stem}"


def save_projection(
    proj: Projection, out: str | os.PathLike[str], *, family: str, run: str, image: str, steps: int, seed: int
) -> list[str]:
    """Write a projection's files into ``out``: the latents (with where they came from), the
    reconstruction and the target, progress.gif when the projection kept frames, and
    project.json (image, steps, seed, psnr, distance). The names written, in that order."""
    out = Path(out)
    meta = {"kind": "artforge-latents", "family": family, "run": run, "image": image}
    save_latents(proj.latents, out / LATENT_FILE, meta)
    save_image(proj.images[0], out / RECONSTRUCTION_FILE)
    save_image(proj.targets[0], out / TARGET_FILE)
    written = [LATENT_FILE, RECONSTRUCTION_FILE, TARGET_FILE]
    if proj.frames:  # each (B, C, H, W): the first image's progress
        save_animation(torch.cat([f[:1] for f in proj.frames]), out / PROGRESS_FILE, fps=PROGRESS_FPS)
        written.append(PROGRESS_FILE)
    psnr, dist = float(proj.psnr[0]), float(proj.distance[0])
    record = {
        "image": image,
        "steps": steps,
        "seed": seed,
        "psnr": round(psnr, 3),
        "distance": round(dist, 6),
    }
    write_json(record, out / PROJECT_FILE)
    written.append(PROJECT_FILE)
    return written


def variation_stem(kind: str, seed: int, strength: float | None = None) -> str:
    """The shared start of an img2img or inpaint set's file names: img2img-s0.60-seed4, inpaint-seed4."""
    if kind == "img2img":
        if strength is None:
            raise InternalError("an img2img set's name needs its strength")
        return f"img2img-s{strength:.2f}-seed{seed}"
    if kind == "inpaint":
        return f"inpaint-seed{seed}"
    raise InternalError(f"unknown kind {kind!r}: img2img or inpaint")


def save_variations(images: Tensor, out: str | os.PathLike[str], stem: str, source: Tensor) -> list[str]:
    """Write an img2img/inpaint set into ``out``: STEM-0000.png, ... one per image, then
    STEM-grid.png (the input first). The names written, the grid last."""
    out = Path(out)
    names = [f"{stem}-{k:04d}.png" for k in range(len(images))]
    for img, name in zip(images, names, strict=True):
        save_image(img, out / name)
    grid = f"{stem}-grid.png"
    save_image(make_grid(torch.cat([source.to(images.device), images])), out / grid)
    return [*names, grid]
