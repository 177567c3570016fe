"""The run folder: config.json + model.safetensors (+ state/, samples/, metrics.jsonl, plots/).

This module resolves a user's RunConfig into a complete one (every model and optimiser
field concrete, so config.json alone rebuilds the model) and loads models from folders.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig, run_config_from_dict
from .models import make_model_config, model_class
from .models.base import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    GenerativeModel,
    load_state_into,
    load_weights,
    write_json,
)
from .optim import resolve_optim


def resolve(cfg: RunConfig) -> tuple[RunConfig, GenerativeModel]:
    """Fill in the family's model config and optimiser defaults; build the model (on CPU)."""
    cls = model_class(cfg.family)
    cfg = _resolve_modality(cfg)
    mcfg = make_model_config(cfg.family, cfg.model, height=cfg.data.height, width=cfg.data.width)
    model = cls(mcfg)
    groups = list(model.param_groups())
    optim = resolve_optim(cfg, groups, model.default_optim())
    train = cfg.train.budget_defaulted()
    if train.ema is None:
        train = dataclasses.replace(train, ema=cls.ema_default)
    resolved = dataclasses.replace(cfg, model=dataclasses.asdict(mcfg), optim_groups=optim, train=train)
    return resolved, model


def _resolve_modality(cfg: RunConfig) -> RunConfig:
    """Decide image or audio from the data (once, saved in config.json); sound is one channel."""
    from .data.audio import resolve_modality

    data = resolve_modality(cfg.data)
    cfg = dataclasses.replace(cfg, data=data)
    if data.modality != "audio":
        return cfg
    if cfg.train.monitor_every:
        raise ValueError(
            "the training monitor (--monitor-every) measures pictures; use artforge eval for sound"
        )
    if "channels" in cfg.model and cfg.model["channels"] != 1:
        raise ValueError(f"sound spectrograms have one channel; model.channels={cfg.model['channels']!r}")
    return dataclasses.replace(cfg, model={**cfg.model, "channels": 1})


# Model settings added with a default other than the behaviour before them, per family, and
# that earlier behaviour: config.json holds every setting, so a saved run without one of these
# predates it and is rebuilt (and resumed) as it was trained.
ADDED_SETTINGS: dict[str, dict[str, Any]] = {
    "gan": {"cond_norm": False, "mismatch_weight": 0.0},  # sixth session: on for text runs
}


def config_to_json(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d["artforge_version"] = __version__
    d["format_version"] = FORMAT_VERSION
    return d


def write_config(cfg: RunConfig, run_dir: Path) -> None:
    write_json(config_to_json(cfg), run_dir / CONFIG_NAME)


def read_config(run_dir: str | Path) -> RunConfig:
    """Read and check a run folder's config.json."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no {CONFIG_NAME})")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object")
    version = d.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: run format version {version} is newer than this artforge understands "
            f"({FORMAT_VERSION}); upgrade artforge to load it"
        )
    model = d.get("model")
    if isinstance(model, dict):  # a run saved before a setting existed was trained without it
        for name, value in ADDED_SETTINGS.get(d.get("family"), {}).items():
            model.setdefault(name, value)
    try:
        return run_config_from_dict(d)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def build_from_config(cfg: RunConfig) -> GenerativeModel:
    cls = model_class(cfg.family)
    mcfg = make_model_config(cfg.family, cfg.model, height=cfg.data.height, width=cfg.data.width)
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


def load_model(run_dir: str | Path, weights: str = WEIGHTS_NAME) -> tuple[RunConfig, GenerativeModel]:
    """Rebuild a model from config.json and load its safetensors weights (never a pickle)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    model = build_from_config(cfg)
    path = run_dir / weights
    load_state_into(model, load_weights(path), path)
    return cfg, model.eval()
