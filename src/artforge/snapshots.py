"""Weight snapshots: keep numbered copies of the sampling weights during training, score them,
and load a chosen one as ``RUN@STEP`` or ``RUN@best``.

A GAN run oscillates: on emoji the default's 15-minute FID lands anywhere in 74-84 depending
on where the clock stops, while ``model.safetensors`` only holds the latest weights. With
``--snapshot-every N`` the Trainer's snapshot hook writes ``snapshots/step-0000500.safetensors``
(the sampling weights, EMA where used, with the step in the file's metadata) every N steps;
``--snapshot-keep K`` bounds their number by thinning the older ones evenly (never the first,
the newest or the best scored). ``artforge eval RUN --snapshots`` scores each one (FID at a
small n against the cached real features; ``evaluate.evaluate_snapshots``) into
``snapshots.json`` / ``snapshots.md`` and ``plots/snapshots.png``; ``RUN@best`` is that
table's best row. This module is the files and the hook; scoring is evaluation's.

Resume and rollback: a snapshot newer than the step training continues from belongs to a
history that was undone (the steps after the last checkpoint of a killed run, or the steps
after a rollback's checkpoint, which diverged), so the hook deletes such snapshots the first
time it runs after the jump back; they are replaced as training goes over those steps again.
Snapshots are only written when every weight is finite.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError, NotFound
from .io import save_safetensors, write_json
from .runfolder import SNAPSHOT_DIR, TABLE_NAME, WEIGHTS_NAME

if TYPE_CHECKING:
    from .training.trainer import Trainer

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{7,})\.safetensors$")


def snapshot_name(step: int) -> str:
    return f"step-{step:07d}.safetensors"


def list_snapshots(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot in the run folder, oldest first."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def save_snapshot(model: torch.nn.Module, run_dir: Path, step: int, meta: dict[str, str]) -> Path:
    """Write the model's weights as snapshots/step-N.safetensors via a temp name; returns the path."""
    folder = run_dir / SNAPSHOT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / snapshot_name(step)
    return save_safetensors(model.state_dict(), path, metadata={"format": "pt", "step": str(step), **meta})


def weights_meta(trainer: Trainer) -> dict[str, str]:
    """What a kept copy of the sampling weights records besides its step."""
    return {"family": trainer.cfg.family, "images_seen": str(trainer.state.images_seen)}


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every floating-point tensor of the model is finite (one host sync)."""
    return all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())


BEST_NAME = "best.safetensors"  # under snapshots/: --keep-best's weights
BEST_INFO = "best.json"  # ... and their step and monitor FID


def read_best(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """--keep-best's record ({"step", "fid", "n"}), or None when there is none or it is unreadable."""
    info = _read_object(Path(run_dir) / SNAPSHOT_DIR / BEST_INFO)
    if info is None or not isinstance(info.get("fid"), int | float):
        return None
    if not (Path(run_dir) / SNAPSHOT_DIR / BEST_NAME).is_file():
        return None
    return info


def save_best(
    model: torch.nn.Module, run_dir: Path, step: int, fid: float, n: int, meta: dict[str, str]
) -> None:
    """Keep ``model``'s weights as the best so far: the weights first, then the record naming
    them (each written whole), so a record never names weights it does not describe for long:
    a crash between the two leaves the new weights with the old record, which the next
    improvement replaces."""
    folder = run_dir / SNAPSHOT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"format": "pt", "step": str(step), "monitor_fid": repr(fid), **meta}
    save_safetensors(model.state_dict(), folder / BEST_NAME, metadata=extra)
    write_json({"step": step, "fid": fid, "n": n}, folder / BEST_INFO)


def to_remove(steps: list[int], keep: int, protect: set[int]) -> list[int]:
    """Which steps to delete so that at most ``keep`` remain.

    The first and the newest step and those in ``protect`` (the best scored) stay. Each
    removal takes the step whose neighbours are closest together (the densest spot), the
    oldest on ties: snapshots taken at a constant interval thin out from the old end, their
    spacing doubling there first, so the kept ones cover the whole run with the recent
    part finer.
    """
    kept = sorted(steps)
    removed: list[int] = []
    while len(kept) > keep:
        candidates = [
            (kept[i + 1] - kept[i - 1], kept[i]) for i in range(1, len(kept) - 1) if kept[i] not in protect
        ]
        if not candidates:
            break
        _, step = min(candidates)
        kept.remove(step)
        removed.append(step)
    return removed


def read_table(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The eval table (snapshots.json) of a run, or None when there is none or it is unreadable."""
    return _read_object(Path(run_dir) / TABLE_NAME)


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def best_step(run_dir: str | os.PathLike[str]) -> int | None:
    """The best scored snapshot's step from snapshots.json (None when not scored, or "final")."""
    table = read_table(run_dir)
    best = table.get("best") if table else None
    return best if isinstance(best, int) else None


def _drop_after(run_dir: Path, step: int) -> None:
    """Delete snapshots of steps after ``step`` (an undone history) and the stale eval table."""
    dropped = [(s, p) for s, p in list_snapshots(run_dir) if s > step]
    for _, p in dropped:
        p.unlink(missing_ok=True)
    if dropped:
        log.info(
            "removed snapshots of steps %s: after step %d (resume/rollback)", [s for s, _ in dropped], step
        )
        (run_dir / TABLE_NAME).unlink(missing_ok=True)


def make_snapshot_hook(every: int, keep: int) -> Callable[[Trainer, int], None]:
    """A Trainer hook (main process): every ``every`` steps, snapshot the sampling weights,
    then thin the snapshots to at most ``keep``."""
    if every < 1 or keep < 3:
        raise ConfigError(f"snapshots need every >= 1 and keep >= 3, got every={every}, keep={keep}")
    state = {"last": -1}

    def hook(trainer: Trainer, step: int) -> None:
        run_dir = trainer.run_dir
        if step <= state["last"] or state["last"] < 0:  # first call, or training jumped back
            _drop_after(run_dir, step - 1)
        state["last"] = step
        if step % every:
            return
        model = trainer.sampling_model
        if not finite_weights(model):
            log.warning("step %d: non-finite weights, no snapshot", step)
            return
        try:
            save_snapshot(model, run_dir, step, weights_meta(trainer))
        except OSError as e:  # a full disk: snapshots are extras, the checkpoint decides
            log.warning("could not write snapshot of step %d (%s)", step, e.strerror or e)
            return
        steps = [s for s, _ in list_snapshots(run_dir)]
        best = best_step(run_dir)
        for s in to_remove(steps, keep, {best} if best is not None else set()):
            (run_dir / SNAPSHOT_DIR / snapshot_name(s)).unlink(missing_ok=True)

    return hook


# -- RUN@STEP -------------------------------------------------------------------------------------


def resolve_weights(run_dir: Path, ref: str) -> str:
    """The weights file (relative to the run folder) for ``ref``: a step number, "best" (the
    eval table's best, from ``artforge eval RUN --snapshots``; else the monitor's best kept by
    ``--keep-best``) or "last" (the newest snapshot)."""
    snaps = list_snapshots(run_dir)
    have = ", ".join(str(s) for s, _ in snaps[-8:]) or "none"
    if ref == "best":
        table = read_table(run_dir)
        if table is None or "best" not in table:
            if read_best(run_dir) is not None:  # --keep-best's, when no eval table chose one
                return f"{SNAPSHOT_DIR}/{BEST_NAME}"
            raise NotFound(
                f"{run_dir}@best: no scored snapshots; run 'artforge eval {run_dir} --snapshots' first "
                "(or train with --keep-best)"
            )
        if table["best"] == "final":
            return WEIGHTS_NAME
        ref = str(table["best"])
    if ref == "last":
        if not snaps:
            raise NotFound(f"{run_dir}@last: this run has no snapshots (train with --snapshot-every N)")
        return f"{SNAPSHOT_DIR}/{snapshot_name(snaps[-1][0])}"
    if not ref.isdigit():
        raise ConfigError(f"{run_dir}@{ref}: use RUN@STEP (a number), RUN@best or RUN@last")
    step = int(ref)
    if not any(s == step for s, _ in snaps):
        raise NotFound(f"{run_dir}@{step}: no snapshot of step {step} (latest snapshots: {have})")
    return f"{SNAPSHOT_DIR}/{snapshot_name(step)}"
