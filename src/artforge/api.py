"""The Python face of artforge: train a run, load it, sample and interpolate.

Everything the CLI (and later the studio) does goes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .audio import spec_from_config, to_audio
from .cascade import compose, upscale_images
from .cascade import load_run as load_any_run
from .config import RunConfig
from .create import (
    Projection,
    as_images,
    img2img,
    inpaint,
    load_latents,
    load_mask,
    mix,
    project,
    save_projection,
    save_variations,
    variation_stem,
)
from .errors import ConfigError, Conflict
from .evaluate import training_hooks
from .resolve import resolve_run
from .runfolder import WEIGHTS_NAME
from .runs import LoadedRun
from .sample import check_options, generate, interpolation_path, latents_for_seed, latents_per_seed
from .training import Trainer


class Run(LoadedRun):
    """A trained model loaded from its run folder (``path``, ``config``, ``model``, ``weights``,
    ``device``, ``is_audio``). Images come back as (n, 3, H, W) in [0, 1]."""

    def __repr__(self) -> str:
        c = self.config
        return f"Run({str(self.path)!r}, family={c.family!r}, size={c.data.width}x{c.data.height})"

    def to(self, device: str | torch.device) -> Run:
        self.model.to(device)
        return self

    def sample(self, n: int, *, seed: int | None = None, **options: Any) -> Tensor:
        """n images from one generator seeded with ``seed`` (random when None)."""
        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        z = self.latents(n, seed)
        return generate(self.model, z, source=str(self.path), **check_options(self.model, options))

    def sample_seeds(self, seeds: list[int], **options: Any) -> Tensor:
        """One image per seed: image i depends only on seeds[i] (reproducible one by one)."""
        z = latents_per_seed(self.model, seeds)
        return generate(self.model, z, source=str(self.path), **check_options(self.model, options))

    def interpolate(self, seeds: list[int], frames: int = 60, *, loop: bool = True, **options: Any) -> Tensor:
        """A walk through the latents of ``seeds`` by spherical interpolation: (frames, 3, H, W)."""
        keys = latents_per_seed(self.model, seeds)
        path = interpolation_path(keys, frames, loop)
        return generate(self.model, path, source=str(self.path), **check_options(self.model, options))

    def interpolate_prompts(
        self, prompts: list[str], frames: int = 60, *, seed: int = 0, **options: Any
    ) -> Tensor:
        """A walk from prompt to prompt (text runs): the noise stays that of ``seed`` while the
        condition vector moves linearly between the prompts' vectors; (frames, 3, H, W)."""
        condition = getattr(self.model, "condition", None)
        if condition is None or not getattr(self.model, "conditional", False):
            raise ConfigError(f"{self.path}: this run was trained without captions, so it takes no prompt")
        if len(prompts) < 2 or frames < 2:
            raise ConfigError("interpolating prompts needs at least 2 prompts and 2 frames")
        with torch.no_grad():
            keys = condition(list(prompts), len(prompts)).cpu()  # (P, D)
        t = torch.linspace(0, len(prompts) - 1, frames)
        lo = t.floor().long().clamp(max=len(prompts) - 2)
        w = (t - lo)[:, None]
        cond = keys[lo] * (1 - w) + keys[lo + 1] * w  # (frames, D)
        z = latents_for_seed(self.model, 1, seed)
        z = z.expand(frames, *z.shape[1:]).contiguous()
        return generate(self.model, z, cond=cond, source=str(self.path), **check_options(self.model, options))

    # -- start from an image, latents, mixing (create.py; docs/create.md) ------------------------
    def latent(self, seed: int | list[int]) -> Tensor:
        """The latent of a seed, (1, ...), or one per seed: what sample_seeds draws (CPU)."""
        seeds = [seed] if isinstance(seed, int) else list(seed)
        return latents_per_seed(self.model, seeds)

    def latents(self, n: int, seed: int) -> Tensor:
        """The n latents, (n, ...), that ``sample(n, seed=seed)`` draws (CPU)."""
        return latents_for_seed(self.model, n, seed)

    def decode(self, latents: Tensor, **options: Any) -> Tensor:
        """Images (n, 3, H, W) in [0, 1] of latents (n, ...): for latent arithmetic, e.g.
        ``run.decode(run.latent(1) - run.latent(2) + run.latent(3))``."""
        if latents.dim() < 2 or tuple(latents.shape[1:]) != tuple(self.model.sample_latents(1).shape[1:]):
            raise ConfigError(
                f"latents must be (n, {', '.join(map(str, self.model.sample_latents(1).shape[1:]))}) "
                f"for this run, got {tuple(latents.shape)}"
            )
        return generate(self.model, latents.float(), **check_options(self.model, options))

    def read_latents(self, path: str | Path) -> Tensor:
        """Latents from a file ``artforge project`` wrote (latent.safetensors), checked against
        this run's latent shape: ``run.decode(run.read_latents(path))``."""
        return load_latents(path, self.model)

    def _images(self, image: Any) -> Tensor:
        if self.is_audio:
            raise Conflict(f"{self.path}: a sound run; project, img2img and inpaint take pictures")
        return as_images(image, self.config.data)

    def project(
        self, image: Any, *, steps: int = 200, seed: int = 0, prompt: str | None = None, frames: int = 0
    ) -> Any:
        """The latent that reproduces an image (a path, or (B, 3, H, W) in [0, 1]); GAN, DCGAN,
        VAE. Returns a create.Projection (latents, images, targets, distance, psnr, frames)."""
        return project(self.model, self._images(image), steps=steps, seed=seed, prompt=prompt, frames=frames)

    def img2img(self, image: Any, strength: float, n: int = 1, *, seed: int = 0, **options: Any) -> Tensor:
        """n variations (n, 3, H, W) in [0, 1] of an image: strength 0 gives it back, 1 ignores
        it (diffusion: SDEdit; GAN/VAE: projection, then slerp toward random latents)."""
        return img2img(self.model, self._images(image), strength, n, seed=seed, **options)

    def inpaint(self, image: Any, mask: Any, n: int = 1, *, seed: int = 0, **options: Any) -> Tensor:
        """n fills of the mask's white part (a path, or (1, 1, H, W) bool, True = fill); the
        black part keeps the image's pixels exactly."""
        fill = load_mask(mask, self.config.data) if not isinstance(mask, Tensor) else mask
        return inpaint(self.model, self._images(image), fill, n, seed=seed, **options)

    def write_projection(
        self, proj: Projection, out: str | Path, *, image: str, steps: int, seed: int, run: str | None = None
    ) -> list[str]:
        """Write ``project()``'s result into the folder ``out`` as ``artforge project`` and the
        studio do (create.save_projection): latent.safetensors, reconstruction.png, target.png,
        progress.gif (with frames), project.json. ``image`` and ``run`` (default this run's
        folder) are recorded as where the latents came from. The names written."""
        return save_projection(
            proj,
            out,
            family=self.config.family,
            run=run or str(self.path),
            image=image,
            steps=steps,
            seed=seed,
        )

    def write_variations(
        self,
        images: Tensor,
        out: str | Path,
        source: Tensor,
        *,
        kind: str,
        seed: int,
        strength: float | None = None,
    ) -> list[str]:
        """Write an ``img2img()`` (``kind`` "img2img", its ``strength``) or ``inpaint()`` set made
        from ``source`` (1, 3, H, W) with ``seed`` into ``out`` as ``artforge img2img/inpaint``
        and the studio do: img2img-s0.60-seed4-0000.png, ... and the grid, input first. The names
        written, the grid last."""
        return save_variations(images, out, variation_stem(kind, seed, strength), source)

    def mix(self, seed_a: int | list[int], seed_b: int | list[int], at: int, **options: Any) -> Tensor:
        """Coarse from A, fine from B: A's layout with B's per-channel feature statistics from
        generator layer ``at`` on (GAN, DCGAN, VAE; create.mix explains why not per-layer z)."""
        options = check_options(self.model, options)
        return mix(self.model, self.latent(seed_a), self.latent(seed_b), at, **options)

    def upscale(self, images: Tensor | str | Path | bytes) -> Tensor:
        """An upscaler run (``--model upscaler``) enlarging pictures: a file path or its bytes
        (any size, fitted to the input size as the training loader fits) or a tensor
        (n, 3, h, w) in [0, 1] at the input size -> (n, 3, H, W) in [0, 1] (cascade.upscale_images)."""
        return upscale_images(self, images)

    # -- sound (runs trained on audio data; docs/audio.md) ---------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._audio_spec().sample_rate

    def _audio_spec(self) -> Any:
        if not self.is_audio:
            raise Conflict(f"{self.path} was trained on images, not sound; use sample() for pictures")
        return spec_from_config(self.config.data)

    def to_audio(self, images: Tensor, *, iters: int | None = None) -> Tensor:
        """Spectrogram images in [0, 1] (as sample() returns them) -> (n, samples) waveforms in [-1, 1]
        by mel inversion and Griffin-Lim (``iters``: the run's audio.gl_iters by default)."""
        return to_audio(images.float() * 2 - 1, self._audio_spec(), iters=iters)

    def sample_audio(self, n: int, *, seed: int | None = None, **options: Any) -> tuple[Tensor, int]:
        """n sounds: ((n, samples) float waveforms in [-1, 1], sample rate). Sound i is the
        spectrogram sample(n, seed=seed)[i] turned back into sound."""
        self._audio_spec()
        return self.to_audio(self.sample(n, seed=seed, **options)), self.sample_rate


def load(
    path: str | Path,
    *,
    device: str = "auto",
    weights: str = WEIGHTS_NAME,
    upscale: str | Path | None = None,
) -> Run:
    """Load a run folder, or one of its weight snapshots as ``RUN@STEP`` / ``RUN@best`` /
    ``RUN@last`` (snapshots.py). Never unpickles anything. A cascaded run folder (``train
    --cascade``) samples at its final size; ``upscale`` (an upscaler run) makes one of any
    picture run whose size is the upscaler's input size (a ConfigError otherwise)."""
    r = load_any_run(path, device=device, weights=weights)  # a run, or a cascade (cascade.py)
    if upscale is not None:
        r = compose(r, load_any_run(upscale, device=device))
    return Run(r.path, r.config, r.model, r.weights)


def train(
    config: RunConfig | dict[str, Any],
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Run:
    """Train a run into ``out`` and return it loaded (from the weights it wrote).

    ``config`` is resolved as ``artforge train --config`` resolves a file (resolve.resolve_run):
    a dict may leave out what the command line would default (a sound run's size, a profile's
    settings)."""
    cfg = resolve_run(config=config.to_dict() if isinstance(config, RunConfig) else config)
    trainer = Trainer(cfg, out, progress=progress, hooks=training_hooks(cfg.train))
    run_dir = trainer.train(resume=resume, overwrite=overwrite)
    return load(run_dir, device=cfg.train.device)
