"""The Python face of artforge: train a run, load it, sample and interpolate.

Everything the CLI (and later the studio) does goes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import RunConfig, check_device, from_dict
from .models.base import WEIGHTS_NAME, GenerativeModel
from .runs import load_model
from .sample import generate, interpolation_path, latents_for_seed, latents_per_seed


class Run:
    """A trained model loaded from its run folder. Images come back as (n, 3, H, W) in [0, 1]."""

    def __init__(self, path: Path, config: RunConfig, model: GenerativeModel):
        self.path = path
        self.config = config
        self.model = model

    def __repr__(self) -> str:
        c = self.config
        return f"Run({str(self.path)!r}, family={c.family!r}, size={c.data.width}x{c.data.height})"

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: str | torch.device) -> Run:
        self.model.to(device)
        return self

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        allowed = self.model.sample_options
        for k in options:
            if k not in allowed:
                raise ValueError(
                    f"option {k!r} does not apply to {self.config.family} runs"
                    + (f"; it takes {list(allowed)}" if allowed else "; it takes none")
                )
        return options

    def sample(self, n: int, *, seed: int | None = None, **options: Any) -> Tensor:
        """n images from one generator seeded with ``seed`` (random when None)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        z = latents_for_seed(self.model, n, seed)
        return generate(self.model, z, source=str(self.path), **self._check_options(options))

    def sample_seeds(self, seeds: list[int], **options: Any) -> Tensor:
        """One image per seed: image i depends only on seeds[i] (reproducible one by one)."""
        z = latents_per_seed(self.model, seeds)
        return generate(self.model, z, source=str(self.path), **self._check_options(options))

    def interpolate(self, seeds: list[int], frames: int = 60, *, loop: bool = True, **options: Any) -> Tensor:
        """A walk through the latents of ``seeds`` by spherical interpolation: (frames, 3, H, W)."""
        keys = latents_per_seed(self.model, seeds)
        path = interpolation_path(keys, frames, loop)
        return generate(self.model, path, source=str(self.path), **self._check_options(options))

    def interpolate_prompts(
        self, prompts: list[str], frames: int = 60, *, seed: int = 0, **options: Any
    ) -> Tensor:
        """A walk from prompt to prompt (text runs): the noise stays that of ``seed`` while the
        condition vector moves linearly between the prompts' vectors; (frames, 3, H, W)."""
        condition = getattr(self.model, "condition", None)
        if condition is None or not getattr(self.model, "conditional", False):
            raise ValueError(f"{self.path}: this run was trained without captions, so it takes no prompt")
        if len(prompts) < 2 or frames < 2:
            raise ValueError("interpolating prompts needs at least 2 prompts and 2 frames")
        with torch.no_grad():
            keys = condition(list(prompts), len(prompts)).cpu()  # (P, D)
        t = torch.linspace(0, len(prompts) - 1, frames)
        lo = t.floor().long().clamp(max=len(prompts) - 2)
        w = (t - lo)[:, None]
        cond = keys[lo] * (1 - w) + keys[lo + 1] * w  # (frames, D)
        z = latents_for_seed(self.model, 1, seed)
        z = z.expand(frames, *z.shape[1:]).contiguous()
        return generate(self.model, z, cond=cond, source=str(self.path), **self._check_options(options))

    # -- sound (runs trained on audio data; docs/audio.md) ---------------------------------------
    @property
    def is_audio(self) -> bool:
        """True for a run trained on sound: its images are (n, 1, mel bands, frames) spectrograms."""
        return self.config.data.modality == "audio"

    @property
    def sample_rate(self) -> int:
        return self._audio_spec().sample_rate

    def _audio_spec(self) -> Any:
        from .audio import spec_from_config

        if not self.is_audio:
            raise ValueError(f"{self.path} was trained on images, not sound; use sample() for pictures")
        return spec_from_config(self.config.data)

    def to_audio(self, images: Tensor, *, iters: int | None = None) -> Tensor:
        """Spectrogram images in [0, 1] (as sample() returns them) -> (n, samples) waveforms in [-1, 1]
        by mel inversion and Griffin-Lim (``iters``: the run's audio.gl_iters by default)."""
        from .audio import to_audio

        return to_audio(images.float() * 2 - 1, self._audio_spec(), iters=iters)

    def sample_audio(self, n: int, *, seed: int | None = None, **options: Any) -> tuple[Tensor, int]:
        """n sounds: ((n, samples) float waveforms in [-1, 1], sample rate). Sound i is the
        spectrogram sample(n, seed=seed)[i] turned back into sound."""
        self._audio_spec()
        return self.to_audio(self.sample(n, seed=seed, **options)), self.sample_rate


def load(path: str | Path, *, device: str = "auto", weights: str = WEIGHTS_NAME) -> Run:
    """Load a run folder (or a snapshot with the same layout). Never unpickles anything."""
    from .training.trainer import resolve_device

    path = Path(path)
    check_device(device)
    cfg, model = load_model(path, weights, device)  # after the size guard for ``device``
    model = model.to(resolve_device(device))
    if cfg.train.channels_last:  # as trained; sampling 1,000 images was 1.2-3.8x faster on a CPU
        model = model.to(memory_format=torch.channels_last)
    return Run(path, cfg, model)


def train(
    config: RunConfig | dict[str, Any],
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Run:
    """Train a run into ``out`` and return it loaded (from the weights it wrote)."""
    from .training.trainer import Trainer

    cfg = config if isinstance(config, RunConfig) else from_dict(RunConfig, config)
    run_dir = Trainer(cfg, out, progress=progress).train(resume=resume, overwrite=overwrite)
    return load(run_dir, device=cfg.train.device)
