"""One resolution step: (flags, a config file, a saved run) -> the complete RunConfig.

Every way to start training gets its settings here: ``artforge train`` (and its --dry-run,
and so bench's and the studio's training processes, which run it), ``artforge.train`` and
the studio's check of a job before it starts. ``resolve_run`` applies, in this order:

1. the settings as given, later ones winning: a saved run's config.json (--resume, --restart)
   < a TOML/JSON config file < flags ({dotted path: value}) < ``--section.name=value`` words
   (with config.ALIASES); each layer's ``data.size`` becomes its data.height and data.width;
2. defaults that depend on what was given: sound data gets 128 mel bands x 64 frames when no
   size was given; a device profile (profiles.py) fills what the user left unset, except on
   --resume, whose saved run already holds everything its profile filled in;
3. the typed RunConfig (config.from_dict: unknown settings and bad values are refused);
4. ``complete_config``: the modality of the data, the family's model config (every field
   concrete but the image size, which the model is built with from data.height and
   data.width, so config.json alone rebuilds the model), optimiser settings per parameter
   group, EMA and budget defaults, and the size guard (runs.build_model on the meta device);
5. on --resume, the rule that only config.RESUMABLE train settings may change.

``complete_config`` alone is what the Trainer applies to a config it is given (a no-op on one
from ``resolve_run``), so a RunConfig built in Python trains as the command line's would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import (
    ALIASES,
    RESUMABLE,
    RunConfig,
    from_dict,
    load_config_file,
    merge,
    parse_override,
    parse_size,
    set_path,
)
from .errors import ConfigError, UsageError
from .models import model_class
from .models.base import GenerativeModel
from .optim import resolve_optim
from .runs import SIDES, build_model, read_config

AUDIO_SIZE = (128, 64)  # (mel bands, frames): docs/audio.md, 64 bands lose much more in the round trip


def resolve_run(
    given: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    *,
    config: str | Path | Mapping[str, Any] | None = None,
    saved: str | Path | None = None,
    resume: bool = False,
) -> RunConfig:
    """The complete RunConfig of a training run (the module docstring gives the order).

    ``given``: {dotted path: value} of the flags given, e.g. {"train.steps": 5, "family": "vae"};
    ``overrides``: "--section.name=value" words (anything else is refused); ``config``: a
    TOML/JSON file or the table read from one; ``saved``: a run folder whose config.json is
    the base (--resume, --restart); ``resume``: continue ``saved``, so only config.RESUMABLE
    train settings may differ.
    Raises ValueError naming the setting (UsageError for a resume that changes a fixed one).
    """
    if resume and saved is None:
        raise UsageError("--resume needs --out RUN (the run folder to continue or start over)")
    base = read_config(saved) if saved is not None else None
    d = settings_dict(given or {}, overrides, config=config, base=base)
    d = audio_size_default(d)
    if not resume:  # a resumed run already holds every setting its profile filled in
        from .profiles import apply_profile

        d = apply_profile(d)
    cfg: RunConfig = from_dict(RunConfig, d)
    if resume and base is not None:
        before = complete_config(base)
        resolved = complete_config(cfg)
        check_resume_changes(before, resolved)
        return resolved
    return complete_config(cfg)


def settings_dict(
    given: Mapping[str, Any],
    overrides: Iterable[str],
    *,
    config: str | Path | Mapping[str, Any] | None = None,
    base: RunConfig | None = None,
) -> dict[str, Any]:
    """The settings as given, as one nested dict: base < config < given < overrides.

    A saved run's ``optim_groups`` hold every optimiser setting per group, filled in from the
    run-wide ``optim`` ones it was trained with; a run-wide setting given now (``--lr`` on a
    ``--restart``) replaces those filled-in values, or it would lose to them unseen (and a
    ``--resume`` that changes one is refused as a change of optim_groups)."""
    d: dict[str, Any] = {}
    if config is not None:
        table = config if isinstance(config, Mapping) else load_config_file(config)
        d = merge(d, size_to_sides(dict(table)))
    flags: dict[str, Any] = {}
    for path, value in given.items():
        set_path(flags, path, value)
    words: dict[str, Any] = {}
    for word in overrides:
        if not word.startswith("--"):
            raise UsageError(f"unexpected argument {word!r}")
        key, value = parse_override(word)
        set_path(words, ALIASES.get(key, key), value)
    d = merge(merge(d, size_to_sides(flags)), size_to_sides(words))
    if base is None:
        return d
    saved = base.to_dict()
    run_wide = d.get("optim")
    if isinstance(run_wide, dict):
        for group in saved.get("optim_groups", {}).values():
            for key in run_wide:
                group.pop(key, None)
    return merge(saved, d)


def size_to_sides(table: dict[str, Any]) -> dict[str, Any]:
    """A layer of settings (a config file, the flags, the ``--section.name=value`` words) with
    its ``data.size`` replaced by data.height and data.width, the sides config.json stores, so
    a later layer's height or width still wins over an earlier layer's size. The size is N or
    "WIDTHxHEIGHT" (config.parse_size), or the (height, width) the --size flag read."""
    data = table.get("data")
    if not isinstance(data, dict) or "size" not in data:
        return table
    data = dict(data)
    size = data.pop("size")
    if isinstance(size, tuple):  # the --size flag's value, read by parse_size
        data["height"], data["width"] = size
    elif isinstance(size, int | str) and not isinstance(size, bool):
        data["height"], data["width"] = parse_size(str(size))
    else:
        raise ConfigError(f"data.size must be N or WIDTHxHEIGHT like 80x48, got {size!r}")
    return {**table, "data": data}


def audio_size_default(d: dict[str, Any]) -> dict[str, Any]:
    """Sound data with no size given: AUDIO_SIZE (docs/audio.md)."""
    data = d.get("data", {})
    if not isinstance(data, dict) or "height" in data or "width" in data:
        return d
    from .data.audio import detect_modality

    modality = data.get("modality", "auto")
    if modality == "auto":
        modality = detect_modality(str(data.get("path", "builtin")))
    if modality == "audio":
        d = {**d, "data": {**data, "height": AUDIO_SIZE[0], "width": AUDIO_SIZE[1]}}
    return d


def complete_config(cfg: RunConfig) -> RunConfig:
    """Every default filled in: modality, the family's model config, optimiser settings per
    group, EMA and budget; after the training size guard. Idempotent."""
    model_class(cfg.family)  # an unknown family is named before anything else is looked at
    cfg = _resolve_modality(cfg)
    shapes = build_model(cfg, cfg.train.device, training=True, meta=True)  # allocates nothing
    return _filled_in(cfg, shapes)


def config_and_model(cfg: RunConfig) -> tuple[RunConfig, GenerativeModel]:
    """What training starts from: the complete config (as ``complete_config`` gives it) and
    its model, built once (after the size guard, weights from torch's global RNG): the
    model's parameter groups and defaults fill in the config, no second build."""
    model_class(cfg.family)
    cfg = _resolve_modality(cfg)
    model = build_model(cfg, cfg.train.device, training=True)
    return _filled_in(cfg, model), model


def _filled_in(cfg: RunConfig, shapes: GenerativeModel) -> RunConfig:
    """``cfg`` with the defaults ``shapes`` (the family's model for it) gives: its model
    config, optimiser settings per group, EMA; and the budget's defaults."""
    optim = resolve_optim(cfg, list(shapes.param_groups()), shapes.default_optim())
    train = cfg.train.budget_defaulted()
    if train.ema is None:
        train = dataclasses.replace(train, ema=model_class(cfg.family).ema_default)
    model = {k: v for k, v in dataclasses.asdict(shapes.config).items() if k not in SIDES}
    return dataclasses.replace(cfg, model=model, optim_groups=optim, train=train)


def _resolve_modality(cfg: RunConfig) -> RunConfig:
    """Decide image or audio from the data (once, saved in config.json); sound is one channel."""
    from .data.audio import resolve_modality

    data = resolve_modality(cfg.data)
    cfg = dataclasses.replace(cfg, data=data)
    if data.modality != "audio":
        return cfg
    if cfg.train.monitor_every:
        raise ConfigError(
            "the training monitor (--monitor-every) measures pictures; use artforge eval for sound"
        )
    if "channels" in cfg.model and cfg.model["channels"] != 1:
        raise ConfigError(f"sound spectrograms have one channel; model.channels={cfg.model['channels']!r}")
    return dataclasses.replace(cfg, model={**cfg.model, "channels": 1})


def check_resume_changes(saved: RunConfig, new: RunConfig) -> None:
    """Refuse a resume that changes a setting fixed for the run's life (both complete)."""
    for section in ("family", "model", "data", "optim_groups"):
        if getattr(saved, section) != getattr(new, section):
            raise UsageError(f"--resume cannot change {section} settings; start a new run with another --out")
    for f in dataclasses.fields(saved.train):
        if f.name not in RESUMABLE and getattr(saved.train, f.name) != getattr(new.train, f.name):
            raise UsageError(f"--resume cannot change train.{f.name}; only {sorted(RESUMABLE)}")
