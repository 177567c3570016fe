"""Cascades: a base run at a small size and an upscaler run (models/upscaler.py) composed into
one model that samples at the final size; upscaling any picture; training both in one budget.

A cascaded run folder (what ``train_cascade`` writes, ``artforge train --cascade``)::

    RUN/config.json      {"kind": "cascade", "height", "width", "factor", "base_height",
                          "base_width", "minutes", "split", "plan", "format_version", ...}
    RUN/base/            an ordinary run folder: the base model at height/factor x width/factor
    RUN/upscaler/        an ordinary run folder: family "upscaler", at height x width

Each stage is a complete, resumable run (config.json, model.safetensors, state/, samples/,
snapshots/), so every tool that takes a run takes a stage as it is. ``load_run`` loads a
cascade (or any run) and returns a ``runs.LoadedRun`` whose model samples at the final size
(``CascadeModel``: the base's latents and sample options, decoded by the base and then
upscaled), so sampling, interpolation and evaluation use it with no further flag.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import DataConfig, RunConfig, TrainConfig, load_config_file
from .create import load_image
from .data.folder import IMAGE_EXTENSIONS
from .errors import ConfigError, Conflict, DataError, NotFound, UsageError, UserError
from .io import write_json
from .models.base import FORMAT_VERSION, GenerativeModel
from .models.upscaler import FACTORS, Upscaler
from .resolve import resolve_run
from .runfolder import CASCADE_BASE, CASCADE_KIND, CASCADE_UPSCALER, CONFIG_NAME, WEIGHTS_NAME
from .runs import LoadedRun
from .runs import load_run as load_plain_run
from .training import Trainer
from .version import __version__

log = logging.getLogger(__name__)

KIND = CASCADE_KIND
BASE_DIR = CASCADE_BASE
UPSCALER_DIR = CASCADE_UPSCALER
# The plan ``train --cascade`` follows when it is not told otherwise. The base side: 32 px, the
# size at which 15 CPU-minutes of the default GAN reach FID 74-84 on emoji while 64 px reaches
# 91.9 in 30 (benchmarks/RESULTS.md). The split: provisional (the share of the minutes the base
# gets; the upscaler converges in fewer); benchmarks/bench_cascade.py is where it is measured.
BASE_SIDE = 32
MIN_BASE_SIDE = 16
SPLIT = 0.7
Hook = Callable[[Trainer, int], None]


# -- the folder -------------------------------------------------------------------------------


def is_cascade(path: str | Path) -> bool:
    """True when ``path`` is a cascaded run folder (its config.json says so)."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        return False
    try:
        return load_config_file(cfg).get("kind") == KIND
    except UserError:
        return False  # not ours to judge here: loading it as a run names the problem


def read_cascade(path: str | Path) -> dict[str, Any]:
    """The checked config.json of a cascaded run folder."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise NotFound(f"{path}: not a run folder (no {CONFIG_NAME})")
    d = load_config_file(file)
    if d.get("kind") != KIND:
        raise ConfigError(f'{file}: not a cascaded run (no "kind": "{KIND}")')
    version = d.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ConfigError(
            f"{file}: format_version {version!r} is not one this artforge reads ({FORMAT_VERSION})"
        )
    for key in ("height", "width", "factor", "base_height", "base_width"):
        v = d.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 4096:
            raise ConfigError(f"{file}: {key} must be a whole number of pixels in [1, 4096], got {v!r}")
    if d["factor"] not in FACTORS or (d["base_height"] * d["factor"], d["base_width"] * d["factor"]) != (
        d["height"],
        d["width"],
    ):
        raise ConfigError(
            f"{file}: base size {d['base_width']}x{d['base_height']} times factor {d['factor']!r} "
            f"is not the size {d['width']}x{d['height']}"
        )
    return d


def plan(height: int, width: int, factor: int | None = None) -> tuple[int, int, int]:
    """(factor, base height, base width) of a cascade to ``height`` x ``width``: the factor in
    FACTORS that divides the size and puts the base's shorter side nearest BASE_SIDE (the
    smaller factor on a tie), or the one given."""
    options = [factor] if factor is not None else list(FACTORS)
    if factor is not None and factor not in FACTORS:
        raise ConfigError(f"a cascade's factor must be one of {list(FACTORS)}, got {factor!r}")
    fits = [
        f for f in options if height % f == 0 and width % f == 0 and min(height, width) // f >= MIN_BASE_SIDE
    ]
    if not fits:
        raise ConfigError(
            f"a cascade to {width}x{height} needs a size divisible by "
            f"{' or '.join(map(str, options))} whose shorter side is at least "
            f"{MIN_BASE_SIDE * min(options)} (the base's at least {MIN_BASE_SIDE}); e.g. --size 128"
        )
    f = min(fits, key=lambda f: (abs(math.log2(min(height, width) / f / BASE_SIDE)), f))
    return f, height // f, width // f


# -- composing ----------------------------------------------------------------------------------


class CascadeModel(GenerativeModel):
    """A base model followed by an upscaler: the base's latents, sample options and (for text
    runs) prompts; ``decode`` draws with the base and enlarges with the upscaler. Not a family
    (nothing trains it): ``cascade.load_run`` builds it from two run folders."""

    family = "cascade"

    def __init__(self, base: GenerativeModel, upscaler: Upscaler) -> None:
        super().__init__(base.config)
        self.base = base
        self.upscaler = upscaler
        self.sample_options = base.sample_options  # type: ignore[misc]
        self.option_ranges = base.option_ranges  # type: ignore[misc]

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.base, "conditional", False))

    def condition(self, prompt: Any, n: int) -> Tensor | None:
        """The base's condition vectors (text runs): what api.Run.interpolate_prompts uses."""
        return self.base.condition(prompt, n)  # type: ignore[operator]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        raise UsageError("a cascade is not trained as one model; train --cascade trains its two stages")

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.base.sample_latents(n, generator)

    def decode(self, latents: Tensor, **options: Any) -> Tensor:
        return self.upscaler.upscale(self.base.decode(latents, **options))


def compose(base: LoadedRun, upscaler: LoadedRun, path: str | Path | None = None) -> LoadedRun:
    """One loaded run of ``base`` followed by ``upscaler``. Its config is the base's at the
    final size (so evaluation compares with the real images at that size); its model a
    CascadeModel. A base whose size is not the upscaler's input size is a ConfigError."""
    up = upscaler.model
    if not isinstance(up, Upscaler):
        raise ConfigError(
            f"{upscaler.path} is a {upscaler.config.family} run, not an upscaler (--model upscaler)"
        )
    if base.is_audio or base.config.family == "upscaler":
        kind = "a sound run" if base.is_audio else "an upscaler"
        raise ConfigError(f"{base.path} is {kind}; a cascade starts from a picture model (gan, vae, ...)")
    bh, bw = base.config.data.height, base.config.data.width
    uh, uw = up.in_size
    f = up.config.factor
    if (bh, bw) != (uh, uw):
        raise ConfigError(
            f"the base run {base.path} makes {bw}x{bh} images, but the upscaler {upscaler.path} takes "
            f"{uw}x{uh} (to make {uw * f}x{uh * f}); use an upscaler trained with --size {bw * f}x{bh * f} "
            f"--model.factor={f}, or a base trained at {uw}x{uh}"
        )
    channels = getattr(base.model.config, "channels", 3)
    if channels != up.config.channels:
        raise ConfigError(
            f"the base run makes {channels}-channel images, the upscaler takes {up.config.channels}"
        )
    model = CascadeModel(base.model, up.to(base.device)).eval()
    data = dataclasses.replace(base.config.data, height=up.config.height, width=up.config.width)
    config = dataclasses.replace(base.config, data=data)
    return LoadedRun(Path(path) if path is not None else base.path, config, model, base.weights)


def load_cascade(path: str | Path, *, device: str = "auto") -> LoadedRun:
    """A cascaded run folder (RUN/config.json, RUN/base, RUN/upscaler) loaded as one run."""
    path = Path(path)
    info = read_cascade(path)
    base = load_plain_run(path / BASE_DIR, device=device)
    up = load_plain_run(path / UPSCALER_DIR, device=device)
    run = compose(base, up, path)
    if (run.config.data.height, run.config.data.width) != (info["height"], info["width"]):
        raise ConfigError(
            f"{path / CONFIG_NAME} says {info['width']}x{info['height']}, but its stages make "
            f"{run.config.data.width}x{run.config.data.height}"
        )
    return run


def load_run(ref: str | Path, *, device: str = "auto", weights: str = WEIGHTS_NAME) -> LoadedRun:
    """``runs.load_run`` that also takes a cascaded run folder (sampled at its final size)."""
    if is_cascade(ref):
        if weights != WEIGHTS_NAME:
            raise UsageError(f"{ref} is a cascade; load a snapshot of one stage (RUN/base@STEP) instead")
        return load_cascade(ref, device=device)
    return load_plain_run(ref, device=device, weights=weights)


# -- upscaling any picture -------------------------------------------------------------------


def input_data(up_run: LoadedRun) -> DataConfig:
    """The upscaler run's data settings at its input size: how a picture is fitted to it."""
    model = up_run.model
    if not isinstance(model, Upscaler):
        raise ConfigError(
            f"{up_run.path} is a {up_run.config.family} run, not an upscaler (--model upscaler)"
        )
    h, w = model.in_size
    return dataclasses.replace(up_run.config.data, height=h, width=w)


def read_picture(up_run: LoadedRun, image: str | os.PathLike[str] | bytes, *, name: str = "upload") -> Tensor:
    """One picture file (or its bytes) -> (1, 3, h, w) in [0, 1] at the upscaler's input size,
    decoded, fitted and checked as the training loader does (data/folder.py): format by content,
    the pixel-count limit, EXIF orientation, transparency over the run's background. A file that
    cannot be used raises DataError naming it (a missing one NotFound)."""
    try:
        return load_image(image, input_data(up_run), name=name)
    except FileNotFoundError as e:
        raise NotFound(str(e)) from None


@torch.no_grad()
def upscale_images(up_run: LoadedRun, images: Tensor | str | os.PathLike[str] | bytes) -> Tensor:
    """Pictures -> (n, C, H, W) in [0, 1] at the upscaler's output size. ``images``: a file path
    or its bytes (any size: fitted to the input size as the training loader fits), or a tensor
    (n, C, h, w) / (C, h, w) in [0, 1] already at the input size (e.g. another run's samples)."""
    if isinstance(images, Tensor):
        x = images[None] if images.dim() == 3 else images
        if not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1:
            raise ConfigError("images must be finite and in [0, 1]")
    else:
        x = read_picture(up_run, images)
    model = up_run.model
    assert isinstance(model, Upscaler)
    out = [model.upscale(x[i : i + 64].float() * 2 - 1).cpu() for i in range(0, x.shape[0], 64)]
    return ((torch.cat(out) + 1) * 127.5).round().div(255)  # 8-bit levels, as sample.to_unit


def picture_files(folder: str | Path) -> list[Path]:
    """The picture files under ``folder`` (recursively, sorted; hidden names left out), as the
    training loader lists them."""
    root = Path(folder)
    if not root.is_dir():
        raise NotFound(f"{root}: no such folder")
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )


def upscale_folder(
    up_run: LoadedRun, folder: str | Path
) -> tuple[list[Path], Tensor, list[tuple[Path, str]]]:
    """Every picture under ``folder`` upscaled: (files, (n, C, H, W) in [0, 1], skipped), where
    ``skipped`` names each file the loader's checks refused and why (nothing is dropped
    silently; the caller reports them)."""
    files, pics, skipped = [], [], []
    for p in picture_files(folder):
        try:
            pics.append(read_picture(up_run, p))
            files.append(p)
        except DataError as e:
            skipped.append((p, str(e).removeprefix(f"{p}: ")))
    if not pics:
        raise DataError(
            f"{folder}: no picture could be read" + (f" ({skipped[0][1]}, ...)" if skipped else "")
        )
    return files, upscale_images(up_run, torch.cat(pics)), skipped


# -- training both stages in one budget ---------------------------------------------------------


def _stage(
    run_dir: Path,
    given: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    hooks: Callable[[TrainConfig], list[Hook]] | None,
) -> Trainer:
    """Train (or resume) one stage into ``run_dir``; the Trainer, done."""
    again = resume and (run_dir / CONFIG_NAME).is_file()
    cfg: RunConfig = resolve_run(given, saved=run_dir if again else None, resume=again)
    trainer = Trainer(cfg, run_dir, progress=progress, hooks=hooks(cfg.train) if hooks else None)
    trainer.train(resume=again, overwrite=overwrite)
    return trainer


def train_cascade(
    out: str | Path,
    *,
    data: str,
    size: tuple[int, int],
    minutes: float | None = None,
    common: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
    upscaler: Mapping[str, Any] | None = None,
    factor: int | None = None,
    split: float = SPLIT,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    hooks: Callable[[TrainConfig], list[Hook]] | None = None,
    device: str = "auto",
) -> LoadedRun:
    """Train a cascade to ``size`` (height, width) on ``data`` into ``out``: the base at the
    planned small size (``plan``), then the upscaler, and return it loaded.

    ``minutes`` is the budget of both: the base gets ``split`` of it, the upscaler what is left
    (at least half its share). ``common``, ``base`` and ``upscaler`` are settings as
    ``resolve.resolve_run`` takes them ({dotted path: value}, e.g. {"train.seed": 1}) for both
    stages, the base only (e.g. {"family": "vae"}) and the upscaler only; a stage budget given
    there (``train.steps``) stands beside the minutes. ``resume`` continues each stage where it
    stopped (a finished stage is left as it is; one never started starts). ``hooks`` builds a
    stage's Trainer hooks from its train settings (``evaluate.training_hooks``)."""
    out = Path(out)
    height, width = size
    if not 0 < split < 1:
        raise ConfigError(f"the base's share of the minutes must be in (0, 1), got {split}")
    if minutes is not None and not 0 < minutes < math.inf:
        raise ConfigError(f"--minutes must be positive, got {minutes}")
    f, bh, bw = plan(height, width, factor)
    top = out / CONFIG_NAME
    if top.is_file() and not overwrite:
        if not resume:
            raise Conflict(
                f"{out} already holds a run; continue it with --resume, or pick another --out "
                "(or --overwrite to replace it)"
            )
        saved = read_cascade(out)  # a plain run here is refused by name
        if (saved["height"], saved["width"]) != (height, width) or (
            factor is not None and saved["factor"] != factor
        ):
            raise UsageError(
                f"--resume cannot change the size of the cascade {out} ({saved['width']}x{saved['height']}, "
                f"factor {saved['factor']}); start a new run with another --out"
            )
        f, bh, bw, split = (
            saved["factor"],
            saved["base_height"],
            saved["base_width"],
            saved.get("split", split),
        )
    elif overwrite:
        for stage in (BASE_DIR, UPSCALER_DIR):
            if (out / stage).is_dir():
                shutil.rmtree(out / stage)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "artforge_version": __version__,
            "height": height,
            "width": width,
            "factor": f,
            "base_height": bh,
            "base_width": bw,
            "data": data,
            "minutes": minutes,
            "split": split,
            "plan": (
                f"the base at {bw}x{bh} (shorter side nearest {BASE_SIDE} px), the upscaler x{f}; "
                f"{split:.0%} of the minutes to the base, the rest to the upscaler"
            ),
        },
        top,
    )
    shared = {**(common or {}), "data.path": data}
    shared.setdefault("train.device", device)
    first = {**shared, **(base or {}), "data.height": bh, "data.width": bw}
    if minutes is not None:
        first["train.minutes"] = minutes * split
    kw = {"resume": resume, "overwrite": overwrite, "progress": progress, "hooks": hooks}
    done = _stage(out / BASE_DIR, first, **kw)  # type: ignore[arg-type]
    second = {**shared, **(upscaler or {}), "family": "upscaler", "model.factor": f}
    second.update({"data.height": height, "data.width": width})
    if minutes is not None:  # what the base left, but never under half the upscaler's share
        left = minutes - done.state.elapsed / 60
        second["train.minutes"] = max(left, 0.5 * (1 - split) * minutes)
    _stage(out / UPSCALER_DIR, second, **kw)  # type: ignore[arg-type]
    return load_cascade(out, device=device)
