"""Checkpoints: everything needed to resume exactly, written so a crash never breaks a run.

``state/`` holds the raw training weights (and EMA weights), optimiser states, the grad
scaler, step counters and RNG states. It is written to ``state.tmp/`` and swapped in with
renames; ``model.safetensors`` (what users sample from) is written via a temp name too.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.base import WEIGHTS_NAME, load_state_into, load_weights, save_weights

STATE = "state"


@dataclass
class TrainState:
    step: int = 0  # optimisation steps done
    images_seen: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumes
    extra: dict[str, Any] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None,
    state: TrainState,
) -> None:
    tmp = run_dir / (STATE + ".tmp")
    final = run_dir / STATE
    old = run_dir / (STATE + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_weights(model, tmp / "model.safetensors")
    if ema_model is not None:
        save_weights(ema_model, tmp / "ema.safetensors")
    trainer_state = {
        "step": state.step,
        "images_seen": state.images_seen,
        "elapsed": state.elapsed,
        "extra": state.extra,
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(trainer_state, tmp / "trainer.pt")
    _fsync_dir(tmp)
    # swap: state -> state.old, state.tmp -> state, drop state.old
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    # the weights users sample from
    save_weights(ema_model if ema_model is not None else model, run_dir / WEIGHTS_NAME)
    _fsync_dir(run_dir)


def state_dir(run_dir: Path) -> Path | None:
    """The newest complete state folder (state/, or state.old/ if a crash hit mid-swap)."""
    for name in (STATE, STATE + ".old"):
        d = run_dir / name
        if (d / "trainer.pt").is_file() and (d / "model.safetensors").is_file():
            return d
    return None


def load_checkpoint(
    run_dir: Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None,
) -> TrainState:
    d = state_dir(run_dir)
    if d is None:
        raise FileNotFoundError(
            f"{run_dir}: no checkpoint to resume from ({STATE}/ is missing or incomplete)"
        )
    load_state_into(model, load_weights(d / "model.safetensors"), d / "model.safetensors")
    if ema_model is not None:
        ema_path = d / "ema.safetensors"
        src = ema_path if ema_path.is_file() else d / "model.safetensors"
        load_state_into(ema_model, load_weights(src), src)
    try:
        ts = torch.load(d / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{d / 'trainer.pt'}: cannot read trainer state ({e})") from None
    missing = sorted(set(optimizers) - set(ts["optimizers"]))
    if missing:
        raise ValueError(f"{d}: no optimiser state for group(s) {missing}")
    for k, opt in optimizers.items():
        opt.load_state_dict(ts["optimizers"][k])
    if scaler is not None and ts.get("scaler"):
        scaler.load_state_dict(ts["scaler"])
    torch.set_rng_state(ts["rng_cpu"])
    if torch.cuda.is_available() and ts.get("rng_cuda"):
        torch.cuda.set_rng_state_all(ts["rng_cuda"])
    return TrainState(ts["step"], ts["images_seen"], ts["elapsed"], ts.get("extra", {}))
