"""Seeds, sampling in chunks, grids, latent interpolation (slerp) and GIF/MP4 output.

Images here are float tensors (n, C, H, W) in [0, 1] unless a name says otherwise; the
models work in [-1, 1] and ``to_unit`` converts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import ConfigError, DataError
from .io import replacing
from .models.base import GenerativeModel


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] model output -> [0, 1], quantised to 8 bits so it equals what PNGs hold."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().div(255)


def to_uint8_nhwc(x: Tensor) -> np.ndarray:
    """[0, 1] images (n, C, H, W) -> uint8 (n, H, W, C)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


MAX_IMAGES = 100_000  # images one sample/interpolate call may draw (they are held in memory)


def parse_seeds(text: str) -> list[int]:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; at most MAX_IMAGES seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            lo_s, sep, hi_s = part.partition("-")
            lo, hi = int(lo_s), int(hi_s) if sep else int(lo_s)
            if lo < 0 or hi < lo:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"bad seed list {text!r}: use non-negative numbers and ranges like 1,2,5-8"
            ) from None
        if len(seeds) + hi - lo + 1 > MAX_IMAGES:
            raise ConfigError(f"seed list {text[:40]!r} names more than {MAX_IMAGES:,} seeds")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ConfigError(f"bad seed list {text!r}: no seeds")
    return seeds


@torch.no_grad()
def generate(
    model: GenerativeModel,
    latents: Tensor,
    *,
    chunk: int | None = None,
    source: str | None = None,
    **options: Any,
) -> Tensor:
    """Decode latents in chunks; returns [0, 1] images on the CPU.

    With ``source`` (the run, for the message), images with a NaN or Inf pixel raise
    DataError instead of being returned: clamped to [0, 1] they would pass for pictures.
    Training grids leave it out (a diverging run is rolled back by its checkpoint's check).

    The default chunk is 64 images on a CPU (where larger chunks spill out of the caches:
    diffusion sampling at 32x32 took 118 s per 1,000 images in chunks of 256 and ~50 s in
    chunks of 32-64) and 1,024 on a GPU, where the chunks stay on the device and come back
    in one copy at the end: the host never waits for the device between chunks.
    """
    if chunk is None:
        chunk = 1024 if model.device.type == "cuda" else 64
    done: list[Tensor] = []  # on the CPU
    outs: list[Tensor] = []  # on the device until the end, or until they pass 1 GiB
    held = 0
    finite = torch.ones((), dtype=torch.bool, device=model.device)
    for i in range(0, latents.shape[0], chunk):
        z = latents[i : i + chunk].to(model.device, non_blocking=True)
        out = model.decode(z, **options_slice(options, latents.shape[0], i, i + chunk))
        if source is not None:  # a device flag, read once at the end: no host sync per chunk
            finite = finite & torch.isfinite(out).all()
        outs.append(to_unit(out))
        held += outs[-1].numel() * outs[-1].element_size()
        if held > 2**30:
            done.append(torch.cat(outs).cpu())
            outs, held = [], 0
    if source is not None and not bool(finite):
        raise DataError(
            f"{source}: the model drew images with NaN or Inf pixels (its weights or the sampling "
            "options overflow, e.g. a huge --truncation or --temperature); nothing was written"
        )
    return torch.cat(done + ([torch.cat(outs).cpu()] if outs else []))


def check_options(model: GenerativeModel, options: dict[str, Any]) -> dict[str, Any]:
    """Sampling options checked against a run's model (api.Run and the studio take them
    through here): each must be one its family takes, and a prompt needs a text-conditioned
    run (refused, never silently ignored). A new dict of the same options."""
    allowed = model.sample_options
    for k in options:
        if k not in allowed:
            raise ConfigError(
                f"option {k!r} does not apply to {model.family} runs; "
                + (f"it takes {list(allowed)}" if allowed else "it takes none")
            )
    if options.get("prompt") and not getattr(model, "conditional", False):
        raise ConfigError(
            f"this {model.family} run is not text-conditioned (trained without captions): it takes no prompt"
        )
    return dict(options)


def seed_names(seeds: Iterable[int]) -> list[str]:
    """The file of each image of ``sample_seeds(seeds)``: seed0007.png (CLI and studio alike)."""
    return [f"seed{s:04d}.png" for s in seeds]


def batch_names(seed: int, n: int) -> list[str]:
    """The files of ``sample(n, seed=seed)``'s images: seed7-0000.png, seed7-0001.png, ..."""
    return [f"seed{seed}-{k:04d}.png" for k in range(n)]


def options_slice(options: dict[str, Any], n: int, lo: int, hi: int) -> dict[str, Any]:
    """The options for latents lo:hi of n: per-image options (one prompt or condition vector
    per latent, i.e. a list or tensor of length n) are sliced, the others passed as they are."""
    if n < 2:
        return options
    return {
        k: v[lo:hi] if isinstance(v, list | tuple | Tensor) and len(v) == n else v for k, v in options.items()
    }


def latents_for_seed(model: GenerativeModel, n: int, seed: int) -> Tensor:
    return model.sample_latents(n, torch.Generator().manual_seed(seed))


def latents_per_seed(model: GenerativeModel, seeds: Iterable[int]) -> Tensor:
    """One latent per seed, each drawn from its own generator (stylegan2's generate.py)."""
    return torch.cat([latents_for_seed(model, 1, s) for s in seeds])


def make_grid(images: Tensor, nrow: int | None = None, pad: int = 2, pad_value: float = 1.0) -> Tensor:
    """(n, C, H, W) -> one (C, rows*(H+pad)+pad, cols*(W+pad)+pad) image."""
    n, c, h, w = images.shape
    if nrow is not None and nrow < 1:
        raise ConfigError(f"--nrow must be at least 1, got {nrow}")
    cols = min(nrow, n) if nrow else max(1, math.ceil(math.sqrt(n)))  # wider than n is empty space
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), pad_value)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}
MAX_SCALE = 16
MAX_OUTPUT_PIXELS = 2**28  # one scaled grid or frame (a 16,384-pixel square, ~800 MB as RGB)


def image_format(path: str | Path) -> str:
    """The Pillow format of an output image named ``path``; ConfigError for other suffixes."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ConfigError(
            f"{path}: images are written as {', '.join(IMAGE_FORMATS)}; not {suffix or 'no suffix'!r}"
        )
    return IMAGE_FORMATS[suffix]


def check_scale(scale: int, resample: str, size: tuple[int, int]) -> None:
    """A clear error for a scale out of 1..MAX_SCALE, an unknown filter or a scaled (h, w)
    image too big to hold, before any image is drawn."""
    if not 1 <= scale <= MAX_SCALE:
        raise ConfigError(f"--scale must be between 1 and {MAX_SCALE}, got {scale}")
    if resample not in RESAMPLE:
        raise ConfigError(f"--resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
    h, w = size
    if h * w * scale * scale > MAX_OUTPUT_PIXELS:
        raise ConfigError(
            f"--scale {scale} makes a {w * scale}x{h * scale} image, more than {MAX_OUTPUT_PIXELS:,} "
            "pixels; use a smaller --scale or fewer images per grid"
        )


def _pil(img: Tensor, scale: int = 1, resample: str = "nearest") -> Image.Image:
    """A [0, 1] (C, H, W) image as a Pillow image, ``scale`` times larger: nearest keeps pixel
    art's hard edges (each pixel a scale x scale block), lanczos smooths photos."""
    arr = to_uint8_nhwc(img[None])[0]
    if arr.shape[-1] == 1:  # one channel (sound spectrograms): greyscale
        arr = arr[..., 0]
    pil = Image.fromarray(arr)
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), RESAMPLE[resample])
    return pil


def _write(pil: Image.Image, path: Path) -> Path:
    """Write via a temp name in the format the suffix names (JPEG and WebP at quality 95)."""
    fmt = image_format(path)
    options: dict[str, Any] = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    with replacing(path) as tmp:  # a full disk leaves no half-written file behind
        pil.save(tmp, format=fmt, **options)
    return path


def save_image(img: Tensor, path: str | Path, scale: int = 1, resample: str = "nearest") -> Path:
    """Save a [0, 1] (C, H, W) image as PNG, JPEG or WebP (by the suffix), ``scale`` times larger."""
    return _write(_pil(img, scale, resample), Path(path))


def save_grid(
    images: Tensor,
    path: str | Path,
    nrow: int | None = None,
    *,
    scale: int = 1,
    resample: str = "nearest",
    labels: list[str] | None = None,
) -> Path:
    """A grid of (n, C, H, W) images; ``labels`` (one per row) are written left of the rows."""
    pil = _pil(make_grid(images, nrow), scale, resample)
    if labels:
        rows = math.ceil(images.shape[0] / (nrow or max(1, math.ceil(math.sqrt(images.shape[0])))))
        pil = label_rows(pil, labels[:rows], row_height=(images.shape[2] + 2) * scale, pad=2 * scale)
    return _write(pil, Path(path))


LABEL_CHARS = 40  # a longer prompt is cut with "..." in the image (the .txt has it whole)


def label_rows(grid: Image.Image, labels: list[str], row_height: int, pad: int) -> Image.Image:
    """``grid`` with a white margin on its left holding one label per row, vertically centred
    on the row, in Pillow's built-in font (no font file needed) sized to fit the row."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(8, min(24, row_height // 2)))
    texts = [t if len(t) <= LABEL_CHARS else t[: LABEL_CHARS - 3] + "..." for t in labels]
    width = max(int(font.getlength(t)) for t in texts) + 2 * max(pad, 4)
    mode = "L" if grid.mode == "L" else "RGB"
    out = Image.new(mode, (grid.width + width, grid.height), 255 if mode == "L" else (255, 255, 255))
    out.paste(grid.convert(mode), (width, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(texts):
        y = pad + r * row_height + (row_height - pad) // 2
        draw.text((max(pad, 4), y), text, fill=0 if mode == "L" else (0, 0, 0), font=font, anchor="lm")
    return out


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between latents (flattened per row); t=0 gives a, t=1 gives b."""
    shape = a.shape
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    an = a2 / a2.norm(dim=1, keepdim=True).clamp_min(1e-12)
    bn = b2 / b2.norm(dim=1, keepdim=True).clamp_min(1e-12)
    omega = torch.acos((an * bn).sum(1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    lerp = (1 - t) * a2 + t * b2
    s = (torch.sin((1 - t) * omega) / so) * a2 + (torch.sin(t * omega) / so) * b2
    out = torch.where(so.abs() < 1e-6, lerp, s)
    return out.reshape(shape)


def interpolation_path(keys: Tensor, frames: int, loop: bool = True) -> Tensor:
    """``frames`` latents walking through ``keys`` (k, ...) by slerp, back to the first if loop."""
    k = keys.shape[0]
    if k < 2:
        raise ConfigError("interpolation needs at least two seeds")
    if frames < 2:
        raise ConfigError("interpolation needs at least two frames")
    segments = k if loop else k - 1
    out = []
    for f in range(frames):
        # position along the path in segment units; a loop never repeats its first frame
        pos = f * segments / (frames if loop else frames - 1)
        i = min(int(pos), segments - 1)
        t = pos - i
        out.append(slerp(keys[i : i + 1], keys[(i + 1) % k : (i + 1) % k + 1], t))
    return torch.cat(out)


def save_animation(
    frames: Tensor, path: str | Path, fps: float = 20, scale: int = 1, resample: str = "nearest"
) -> Path:
    """[0, 1] frames (n, C, H, W) -> GIF (looping) or MP4, chosen by the file suffix, each
    frame ``scale`` times larger (nearest: pixel art's blocks; lanczos: smooth)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8_nhwc(frames)
    if scale != 1:
        arr = np.stack([np.asarray(_pil(f, scale, resample)) for f in frames])
        if arr.ndim == 3:  # greyscale frames lost their channel axis in Pillow
            arr = arr[..., None]
    if arr.shape[-1] == 1:  # greyscale frames (sound spectrograms)
        arr = np.repeat(arr, 3, axis=-1)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ConfigError(f"{path}: animation output must end in .gif or .mp4")
    with replacing(path) as tmp:
        if suffix == ".gif":
            iio.imwrite(tmp, arr, extension=".gif", duration=1000 / fps, loop=0)
            return path
        # H.264 in yuv420p needs even sizes: repeat the last row/column of an odd-sized frame
        # instead of letting imageio rescale every frame to a multiple of 16
        pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        try:
            iio.imwrite(tmp, arr, extension=".mp4", fps=fps, macro_block_size=1)
        except (OSError, ImportError, RuntimeError) as e:  # no ffmpeg back-end, or ffmpeg failed
            raise ConfigError(
                f"{path}: writing MP4 needs imageio-ffmpeg, which setup installs "
                f"(pip install imageio-ffmpeg; or write a .gif): {e}"
            ) from None
    return path
