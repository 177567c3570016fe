"""Device profiles: settings filled in for what the user left unset, by the device they train on.

``artforge train --profile gpu`` on a CUDA machine fills in the settings of ``PROFILES["gpu"]``
that neither a flag, ``--config`` nor ``--section.field=value`` gave. What it fills in is
written to config.json like any other setting, so resume, sample and eval read the same
values and never consult this table again. On a CPU the profile changes nothing (the CPU
defaults were chosen by measurement on one, benchmarks/RESULTS.md).

The values below are PROVISIONAL: the only figure behind them is one 3.5-minute H200 try
(gan base_channels 64 at batch 128 ran 4,239 img/s end to end against 1,527 for the
defaults; no FID was measured for it). They are to be chosen by FID per GPU minute with
benchmarks/gpu_session.sh; until then the profile is opt-in (``GPU_PROFILE_BY_DEFAULT`` is
False) and says so when applied.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

from .config import set_path
from .errors import ConfigError

log = logging.getLogger(__name__)

# profile -> family ("*" = every family) -> dotted setting -> value
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "*": {"train.batch_size": 128},
        "gan": {"model.base_channels": 64},
        "diffusion": {"model.base_channels": 64},
    },
}
# once the sweep has chosen the values: a CUDA run with no --profile gets "gpu"
GPU_PROFILE_BY_DEFAULT = False
PROVISIONAL = {"gpu": True}  # values not yet chosen by FID (the note above)


def _has(d: dict[str, Any], dotted: str) -> bool:
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return False
        d = d[k]
    return True


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    """config.set_path, leaving a section that is not a table alone (the config's own
    validation reports it)."""
    with contextlib.suppress(ValueError):
        set_path(d, dotted, value)


def _on_cuda(device: str) -> bool:
    if not device.startswith(("cuda", "auto")):
        return False
    import torch

    return torch.cuda.is_available()


def apply_profile(d: dict[str, Any], cuda: bool | None = None) -> dict[str, Any]:
    """A copy of the config dict ``d`` with its profile's values added where ``d`` has none.

    ``cuda``: whether the run trains on a CUDA device (None: decided from train.device).
    Returns ``d`` unchanged (the same values) off CUDA or with profile "none".
    """
    train = d.get("train", {}) if isinstance(d.get("train"), dict) else {}
    if cuda is None:
        cuda = _on_cuda(str(train.get("device", "auto")))
    name = train.get("profile")
    if name is None:
        if not (cuda and GPU_PROFILE_BY_DEFAULT):
            return d
        name = "gpu"
    if name == "none":
        return d
    if not isinstance(name, str) or name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose from {['none', *PROFILES]}")
    out = copy.deepcopy(d)
    _set(out, "train.profile", name)  # recorded, so config.json says where the values came from
    if not cuda:
        log.warning("--profile %s applies on CUDA only; this run keeps the CPU defaults", name)
        return out
    family = str(d.get("family", "gan"))
    table = {**PROFILES[name].get("*", {}), **PROFILES[name].get(family, {})}
    filled = {k: v for k, v in table.items() if not _has(d, k)}
    for k, v in filled.items():
        _set(out, k, v)
    if filled:
        note = " (provisional values, not yet chosen by FID)" if PROVISIONAL.get(name) else ""
        log.warning("profile %s%s filled in %s", name, note, ", ".join(f"{k}={v}" for k, v in filled.items()))
    return out
