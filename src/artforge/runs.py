"""The run folder: config.json + model.safetensors (+ state/, samples/, metrics.jsonl, plots/).

This module reads and writes a run's config.json, builds a run's model (``build_model``, the
one builder, behind the size guard) and loads models from folders. Completing a user's
settings into the config.json of a run is resolve.py's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .config import RunConfig, check_device, load_config_file, run_config_from_dict
from .device import resolve_device
from .errors import ConfigError, DataError
from .io import write_json
from .models import make_model_config, model_class
from .models.base import (
    FORMAT_VERSION,
    GenerativeModel,
    load_state_into,
    load_weights,
)
from .runfolder import CONFIG_NAME, WEIGHTS_NAME
from .version import __version__

log = logging.getLogger(__name__)


# The image size: stored once, as data.height and data.width; each family's model config is
# given it by build_model. config.json files written by artforge 0.1 hold a copy in the model
# table too, which read_config checks and drops.
SIDES = ("height", "width")

# Model settings whose default differs from how a run folder that lacks them was trained, per
# family, with the value such a run had: config.json holds every setting, so a saved run
# without one of these is rebuilt (and resumed) with the value here, as it was trained.
ADDED_SETTINGS: dict[str, dict[str, Any]] = {
    "gan": {"cond_norm": False, "mismatch_weight": 0.0},  # both default on (text runs only)
}


def config_to_json(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d["artforge_version"] = __version__
    d["format_version"] = FORMAT_VERSION
    return d


def write_config(cfg: RunConfig, run_dir: Path) -> None:
    """Write config.json via a temp name; on failure (a full disk) say which file could not be
    written."""
    path = run_dir / CONFIG_NAME
    try:
        write_json(config_to_json(cfg), path)  # leaves no temporary file behind on failure
    except OSError as e:
        raise OSError(f"could not write {path} ({e.strerror or e})") from None


def read_config(run_dir: str | Path) -> RunConfig:
    """Read and check a run folder's config.json."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no {CONFIG_NAME})")
    d = load_config_file(path)  # bounded, parsed, an object, not nested too deep
    if d.get("kind") == "cascade":  # cascade.py's folder: two runs, loaded by cascade.load_run
        raise ConfigError(
            f"{run_dir} is a cascaded run: its stages are the runs {Path(run_dir) / 'base'} and "
            f"{Path(run_dir) / 'upscaler'}; artforge.load takes it whole"
        )
    version = d.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(
            f"{path}: format_version must be a whole number of at least 1 (this artforge writes "
            f"{FORMAT_VERSION}), got {version!r}"
        )
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: run format version {version} is newer than this artforge understands "
            f"({FORMAT_VERSION}); upgrade artforge to load it"
        )
    model = d.get("model")
    family = d.get("family")
    if isinstance(model, dict) and isinstance(family, str):  # a run saved before a setting existed
        for name, value in ADDED_SETTINGS.get(family, {}).items():  # was trained without it
            model.setdefault(name, value)
    copied = {k: model.pop(k) for k in SIDES if k in model} if isinstance(model, dict) else {}
    try:
        cfg = run_config_from_dict(d)
    except ConfigError as e:  # a setting's value: name the file; anything else is a bug
        raise ConfigError(f"{path}: {e}") from None
    for name, value in copied.items():  # written before the size was stored once: a copy
        if value != getattr(cfg.data, name):
            raise DataError(
                f"{path}: model.{name} {value!r} disagrees with data.{name} {getattr(cfg.data, name)!r}; "
                f"the run's image size is the data's (remove model.{name})"
            )
    return cfg


def build_model(
    cfg: RunConfig, device: str = "cpu", *, training: bool = False, meta: bool = False
) -> GenerativeModel:
    """The one builder of a run's model: the family's model config from ``cfg`` (its image size
    from the data), the size guard for ``device`` (training: weights, gradients, EMA and a
    batch; else the weights), then the model on the CPU, its weights drawn from torch's global
    RNG. ``meta=True`` returns the guard's shapes-only build instead (no storage, no random
    draws): what resolving a config needs (parameter groups, optimiser defaults)."""
    cls = model_class(cfg.family)
    mcfg = make_model_config(cfg.family, cfg.model, height=cfg.data.height, width=cfg.data.width)
    shapes = meta_model(cls, mcfg)
    if shapes is not None:
        params = sum(p.numel() for p in shapes.parameters())
        check_size(cfg, mcfg, params, training=training, device=device)
        if meta:
            return shapes
    if meta:  # a family that cannot be built on the meta device: a real build that draws nothing
        with torch.random.fork_rng(devices=[]):
            return cls(mcfg)
    return cls(mcfg)


def split_ref(ref: str | Path, weights: str = WEIGHTS_NAME) -> tuple[Path, str]:
    """A run reference -> (run folder, weights file inside it). ``RUN@STEP``, ``RUN@best`` and
    ``RUN@last`` name a snapshot (snapshots.py); a path that exists as given is a plain run
    folder even when its name holds an "@"."""
    path = Path(ref)
    text = str(ref)
    if path.exists() or "@" not in text:
        return path, weights
    folder, _, which = text.rpartition("@")
    from .snapshots import resolve_weights

    run_dir = Path(folder)
    if not (run_dir / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder}: not a run folder (no {CONFIG_NAME})")
    return run_dir, resolve_weights(run_dir, which)


def load_model(
    run_dir: str | Path, weights: str = WEIGHTS_NAME, device: str = "cpu"
) -> tuple[RunConfig, GenerativeModel]:
    """Rebuild a model from config.json and load its safetensors weights (never a pickle).

    Weights holding NaN or Inf are refused: every image drawn from them would be garbage."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    try:
        model = build_model(cfg, device)
    except ConfigError as e:  # a model setting out of bounds, or too large for this machine
        raise ConfigError(f"{run_dir / CONFIG_NAME}: {e}") from None
    path = run_dir / weights
    state = load_weights(path)
    load_state_into(model, state, path)
    for name, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise DataError(
                f"{path}: tensor {name!r} holds NaN or Inf values, so the model cannot draw anything; "
                "resume the run from its last checkpoint (train --resume) or train it again"
            )
    return cfg, model.eval()


@dataclass(eq=False)
class LoadedRun:
    """A run folder's config and model (weights ``weights``) on a device: what evaluation reads.
    ``api.Run`` adds sampling, interpolation and the create tools to it."""

    path: Path
    config: RunConfig
    model: GenerativeModel
    weights: str = WEIGHTS_NAME  # or snapshots/step-N.safetensors for RUN@STEP

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_audio(self) -> bool:
        """True for a run trained on sound: its images are (n, 1, mel bands, frames) spectrograms."""
        return self.config.data.modality == "audio"


def load_run(ref: str | Path, *, device: str = "auto", weights: str = WEIGHTS_NAME) -> LoadedRun:
    """Load a run folder, or one of its weight snapshots as ``RUN@STEP`` / ``RUN@best`` /
    ``RUN@last`` (snapshots.py), on ``device``. Never unpickles anything."""
    path, weights = split_ref(ref, weights)
    check_device(device)
    cfg, model = load_model(path, weights, device)  # after the size guard for ``device``
    model = model.to(resolve_device(device))
    if cfg.train.channels_last:  # as trained; sampling 1,000 images was 1.2-3.8x faster on a CPU
        model = model.to(memory_format=torch.channels_last)
    return LoadedRun(path, cfg, model, weights)


# -- the size guard ---------------------------------------------------------------------------
# Every entry point (train, --dry-run, sample, interpolate, eval, artforge.load, studio jobs)
# builds its model, or resolves its config, through build_model(), so this one guard runs
# before any of them allocates. Each setting that sizes memory has an upper bound beside its field
# (config.bounded), checked when the model config is built; combinations of in-bound settings
# can still be huge, so the parameters are counted on the meta device (shapes, no storage) and
# a lower bound of the memory needed is refused above what the machine has.

SIZE_SETTINGS = "model.base_channels, model.max_channels, model.depth, model.latent_dim, the image size"


class _ShapesOnly(TorchFunctionMode):
    """Inside ``torch.device("meta")``: skip in-place initialisation of meta tensors (only shapes
    matter, and meta normal_ loads torch's Python decompositions, ~2 s) and make the few 1-D
    ranges schedules are computed from on the CPU (they are sized by bounded settings)."""

    CPU_FACTORIES = (torch.arange, torch.linspace, torch.logspace)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in self.CPU_FACTORIES:
            return func(*args, **{**kwargs, "device": "cpu"})
        name = getattr(func, "__name__", "")
        first = next(iter([*args, *kwargs.values()]), None)
        in_place = name.endswith("_") and not name.endswith("__")
        if in_place and isinstance(first, torch.Tensor) and first.is_meta:
            return first
        return func(*args, **kwargs)


def meta_model(cls: type[GenerativeModel], mcfg: Any) -> GenerativeModel | None:
    """The model built on the meta device (shapes only: allocates nothing, draws no random
    numbers); None if a family cannot be built there (then only the field bounds apply)."""
    try:
        with torch.device("meta"), _ShapesOnly():
            return cls(mcfg)
    except (RuntimeError, NotImplementedError, TypeError) as e:
        log.debug("size guard: could not build %s on the meta device (%s)", cls.__name__, e)
        return None


def machine_memory(device: str) -> tuple[int, str]:
    """(bytes, what) of the memory a model on ``device`` lives in: a GPU's memory, or RAM (the
    smaller of the physical memory and a cgroup limit)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index < torch.cuda.device_count():
            props = torch.cuda.get_device_properties(index)
            return props.total_memory, f"GPU memory of {device} ({props.name})"
    from .data import total_ram_bytes

    ram = total_ram_bytes()
    return ram, "RAM"


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def check_size(cfg: RunConfig, mcfg: Any, params: int, *, training: bool, device: str) -> None:
    """Refuse a model whose memory need (a lower bound) exceeds the machine's, before building it.

    Training needs at least the weights, their gradients, an EMA copy if on (4 bytes per
    parameter each) and the batch twice (reals and fakes/noise) on the device; sampling the
    weights. Models are built on the CPU first, so RAM must hold the weights in any case.
    Activations are not counted: a run that passes can still run out of memory.
    """
    weights = 4 * params
    need = weights
    what = "its weights"
    if training:
        ema = cfg.train.ema if cfg.train.ema is not None else model_class(cfg.family).ema_default
        c = getattr(mcfg, "channels", 3)
        per_rank = cfg.train.batch_size // max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))  # torchrun
        batch = 2 * 4 * per_rank * c * cfg.data.height * cfg.data.width
        need = weights * (3 if ema else 2) + batch
        what = f"weights, gradients{', EMA' if ema else ''} and a batch of {cfg.train.batch_size}"
    checks = [(need, *machine_memory(device))]
    if machine_memory(device)[1] != "RAM":
        checks.append((weights, *machine_memory("cpu")))  # built on the CPU, then moved
    for bytes_needed, have, where in checks:
        if bytes_needed > have:
            raise ConfigError(
                f"model too large: {cfg.family} with these settings has {params:,} parameters and needs "
                f"at least {_gib(bytes_needed)} ({what}), more than the {_gib(have)} of {where}; lower "
                f"{SIZE_SETTINGS} or train.batch_size"
            )
