"""Checkpoints: everything needed to resume exactly, written so a crash never breaks a run.

``state/`` holds the raw training weights (and EMA weights), optimiser states, the grad
scaler, step counters and every RNG state (torch CPU/CUDA, Python ``random``, NumPy). It is
written to ``state.tmp/`` (each file fsynced) and swapped in with renames; ``model.safetensors``
(what users sample from) is written via a temp name too. A write that fails (a full disk)
removes its partial files and raises ``SaveError``; the previous checkpoint is never touched
before the new one is complete.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from ..errors import Conflict, DataError, TrainingError
from ..models.base import load_state_into, load_weights, save_weights
from ..runfolder import METRICS, SAMPLES, STATE, STATE_OLD, STATE_TMP, WEIGHTS_NAME


class SaveError(TrainingError):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is intact."""


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


def _fsync_file(path: Path) -> None:
    """Flush a written file to the disk (a full or failing disk can report it only here)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_failure(run_dir: Path, what: str, e: BaseException) -> str:
    """'could not write X (No space left on device; 12 KiB free on the disk of RUN)'."""
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, OSError):  # torch.save wraps the OSError
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.strerror:
        reason = cause.strerror
    else:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    try:
        free = f"; {shutil.disk_usage(run_dir).free / 2**20:,.1f} MiB free on the disk of {run_dir}"
    except OSError:
        free = ""
    return f"could not write {what} ({reason}{free})"


def _rng_states() -> dict[str, Any]:
    """Every global RNG the training process may draw from, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_python": random.getstate(),
        "rng_numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
    }


def _set_rng_states(ts: dict[str, Any]) -> None:
    torch.set_rng_state(ts["rng_cpu"])
    if torch.cuda.is_available() and ts.get("rng_cuda"):
        torch.cuda.set_rng_state_all(ts["rng_cuda"])
    if ts.get("rng_python") is not None:  # absent in checkpoints written before it was saved
        version, internal, gauss = ts["rng_python"]
        random.setstate((version, tuple(internal), gauss))
    if ts.get("rng_numpy") is not None:
        kind, keys, pos, has_gauss, gauss = ts["rng_numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None,
    state: TrainState,
) -> None:
    """Write state/ and model.safetensors for ``state.step``, or raise SaveError.

    A failure while writing state.tmp/ (a full disk, a quota) deletes state.tmp/ and leaves
    state/ and model.safetensors as they were.
    """
    tmp = run_dir / STATE_TMP
    final = run_dir / STATE
    old = run_dir / STATE_OLD
    if not final.exists() and state_dir(run_dir) == old:
        # a crash between the two renames left the last checkpoint in state.old/: put it back
        # first, or the swap below would delete it before the new one is in place
        os.replace(old, final)
    shutil.rmtree(tmp, ignore_errors=True)
    kept = (
        "the previous checkpoint in state/ is intact"
        if state_dir(run_dir)
        else "there is no earlier checkpoint"
    )
    try:
        tmp.mkdir()
        save_weights(model, tmp / WEIGHTS_NAME)  # with the usual file mode (io.py)
        if ema_model is not None:
            save_weights(ema_model, tmp / "ema.safetensors")
        trainer_state = {
            "step": state.step,
            "images_seen": state.images_seen,
            "elapsed": state.elapsed,
            "extra": state.extra,
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            **_rng_states(),
        }
        with open(tmp / "trainer.pt", "wb") as f:  # a file object: its OSError (ENOSPC) is kept
            torch.save(trainer_state, f)
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports ENOSPC as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)  # give the space back
        what = f"the checkpoint for step {state.step} to {tmp}"
        raise SaveError(f"{_write_failure(run_dir, what, e)}; {kept}") from e
    # swap: state -> state.old, state.tmp -> state, drop state.old (renames need no space)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    # the weights users sample from
    weights = run_dir / WEIGHTS_NAME
    had_weights = weights.is_file()
    try:
        save_weights(ema_model if ema_model is not None else model, weights)  # no temp file left on failure
        _fsync_file(weights)
    except (OSError, RuntimeError, SafetensorError) as e:
        what = f"{weights} for step {state.step}"
        before = "still holds the previous weights" if had_weights else "was not written yet"
        raise SaveError(
            f"{_write_failure(run_dir, what, e)}; state/ holds step {state.step} and {WEIGHTS_NAME} {before}"
        ) from e
    _fsync_dir(run_dir)


def state_dir(run_dir: Path) -> Path | None:
    """The newest complete state folder (state/, or state.old/ if a crash hit mid-swap)."""
    for name in (STATE, STATE_OLD):
        d = run_dir / name
        if (d / "trainer.pt").is_file() and (d / WEIGHTS_NAME).is_file():
            return d
    return None


def missing_state(run_dir: Path) -> str:
    """What is wrong with a run's checkpoint when ``state_dir`` finds none, in words."""
    d = run_dir / STATE
    if d.is_symlink() and not d.is_dir():
        return f"{d} is a link to {os.readlink(d)}, not a checkpoint folder"
    if not d.exists():
        return f"{d}/ (the checkpoint) is missing"
    if not d.is_dir():
        return f"{d} is not a folder"
    gone = [name for name in ("trainer.pt", WEIGHTS_NAME) if not (d / name).is_file()]
    return f"{d}/ is incomplete ({' and '.join(gone)} missing or unreadable)"


def results_in(run_dir: Path) -> list[str]:
    """What a start from step 0 would replace: weights, the log, grids, a checkpoint folder.

    A run killed before its first checkpoint has none of these (only config.json and the data
    report), so starting it afresh loses nothing."""
    found = []
    for name in (WEIGHTS_NAME, METRICS, SAMPLES, STATE, STATE_OLD):
        p = run_dir / name
        try:
            if p.is_symlink() or (p.is_file() and p.stat().st_size) or (p.is_dir() and any(p.iterdir())):
                found.append(name + ("/" if p.is_dir() else ""))
        except OSError:  # unreadable: still something a fresh start would replace
            found.append(name)
    return found


def check_resumable(run_dir: Path) -> bool:
    """True if ``run_dir`` has a checkpoint to resume; False if it holds nothing a start from
    step 0 would lose. Otherwise raise Conflict naming what is missing: --resume never
    replaces a run's weights, log or grids."""
    if state_dir(run_dir) is not None:
        return True
    results = results_in(run_dir)
    if not results:
        return False
    raise Conflict(
        f"cannot resume {run_dir}: {missing_state(run_dir)}. Nothing was changed ({', '.join(results)} "
        "kept as they are). To train this run again from step 0, replacing them, use --restart; "
        "or train into a new --out"
    )


# the trainer state holds tensors, numbers, strings, lists and dicts only; anything that asks
# to import a name (a class, a function) is a pickle meant to run code, and is never loaded
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _read_trainer_state(path: Path) -> dict[str, Any]:
    """torch.load(weights_only) with our own messages: torch's advises retrying with
    weights_only=False, which would run whatever code the file carries; never say that."""
    try:
        ts = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _UNSAFE_GLOBAL.search(str(e))
        what = f" ({found.group(1)})" if found else ""
        raise DataError(
            f"{path}: cannot read trainer state: it holds Python objects{what}, not only tensors and "
            "numbers, so it is not an artforge checkpoint; refused without loading it"
        ) from None
    except Exception as e:  # noqa: BLE001 - any other failure means a broken file
        first = str(e).strip().split(". ")[0].splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{path}: cannot read trainer state ({first}); the file is damaged or not an artforge checkpoint"
        ) from None
    need = {"step": int, "images_seen": int, "elapsed": float | int, "optimizers": dict}
    need["rng_cpu"] = torch.Tensor
    if not isinstance(ts, dict) or any(not isinstance(ts.get(k), t) for k, t in need.items()):
        raise DataError(f"{path}: cannot read trainer state (not an artforge checkpoint: fields missing)")
    return ts


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
    load_state_into(model, load_weights(d / WEIGHTS_NAME), d / WEIGHTS_NAME)
    if ema_model is not None:
        ema_path = d / "ema.safetensors"
        src = ema_path if ema_path.is_file() else d / WEIGHTS_NAME
        load_state_into(ema_model, load_weights(src), src)
    ts = _read_trainer_state(d / "trainer.pt")
    missing = sorted(set(optimizers) - set(ts["optimizers"]))
    if missing:
        raise DataError(f"{d}: no optimiser state for group(s) {missing}")
    for k, opt in optimizers.items():
        opt.load_state_dict(ts["optimizers"][k])
    if scaler is not None and ts.get("scaler"):
        scaler.load_state_dict(ts["scaler"])
    _set_rng_states(ts)
    return TrainState(ts["step"], ts["images_seen"], ts["elapsed"], ts.get("extra", {}))
