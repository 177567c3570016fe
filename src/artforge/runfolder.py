"""The run folder's format: the names of the files a run folder holds, and what a fresh start
(``train --restart`` / ``--overwrite``) removes. Every module that reads or writes a run folder
takes the names from here; the writers stay with what they write (config and weights:
runs.py and models/base.py; state/: training/checkpoint.py; snapshots: snapshots.py)::

    RUN/
      config.json          the complete RunConfig (runs.write_config)
      model.safetensors    the weights (EMA when on), what sample/eval load
      state/               the checkpoint for an exact resume (state.tmp/, state.old/ mid-swap)
      metrics.jsonl        the training log, one JSON object a line
      data_report.json     what the data loader kept and skipped, and why
      samples/             step-0000500.png grids (prompts.txt for text runs)
      plots/               losses.png, monitor.png, snapshots.png
      snapshots/           step-N.safetensors weight snapshots (snapshots.py)
      snapshots.json .md   eval --snapshots' table
      eval.json            eval RUN; eval-step0000500.json for RUN@STEP
      novelty.png          its novelty sheet; novelty-step0000500.png for RUN@STEP
      notmade.png          its not-made sheet (the real images no sample is near); notmade-step0000500.png
      generated/           what sample writes by default (generated/studio/ the studio's)
      create/              what project / img2img / inpaint write by default

This module imports nothing heavy: the studio's gallery and the CLI read it without torch.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# a cascaded run folder (cascade.py): config.json {"kind": "cascade", ...} and two run folders
CASCADE_KIND = "cascade"
CASCADE_BASE = "base"
CASCADE_UPSCALER = "upscaler"
STATE = "state"
STATE_OLD = STATE + ".old"  # the last checkpoint while a new one is swapped in
STATE_TMP = STATE + ".tmp"  # a checkpoint being written
METRICS = "metrics.jsonl"
DATA_REPORT = "data_report.json"
CAPTIONS_REPORT = "captions_report.json"
SAMPLES = "samples"
PLOTS = "plots"
SNAPSHOT_DIR = "snapshots"
TABLE_NAME = "snapshots.json"
TABLE_REPORT = "snapshots.md"
EVAL = "eval.json"
NOVELTY = "novelty.png"
NOT_MADE = "notmade.png"
GENERATED = "generated"
CREATE = "create"


def eval_name(weights: str = WEIGHTS_NAME) -> str:
    """Where ``eval`` writes for the run's weights (eval.json) or for a snapshot's
    (snapshots/step-0000500.safetensors -> eval-step0000500.json)."""
    return EVAL if weights == WEIGHTS_NAME else f"eval-{Path(weights).stem}.json"


def novelty_name(weights: str = WEIGHTS_NAME) -> str:
    """The novelty sheet beside ``eval_name(weights)``: novelty.png, novelty-step0000500.png."""
    return NOVELTY if weights == WEIGHTS_NAME else f"novelty-{Path(weights).stem}.png"


def not_made_name(weights: str = WEIGHTS_NAME) -> str:
    """The not-made sheet beside ``novelty_name(weights)``: notmade.png, notmade-step0000500.png."""
    return NOT_MADE if weights == WEIGHTS_NAME else f"notmade-{Path(weights).stem}.png"


def sample_grid(step: int) -> str:
    """The training sample grid of a step, inside samples/: step-0000500.png."""
    return f"step-{step:07d}.png"


def replaced_by_fresh_start(run_dir: str | Path) -> list[str]:
    """The names in ``run_dir`` a fresh start removes: its log, grids, plots, checkpoint,
    snapshots, and the measurements of the old weights (eval*.json, novelty*.png, notmade*.png: the studio
    would show them beside the new run). What the user made with the old model (generated/,
    create/, walks), the config (rewritten) and their favourites stay."""
    run_dir = Path(run_dir)
    patterns = ("eval*.json", "novelty*.png", "notmade*.png")
    measured = sorted(p.name for pattern in patterns for p in run_dir.glob(pattern))
    return [
        *(METRICS, SAMPLES, PLOTS, STATE, STATE_OLD, STATE_TMP),
        *(SNAPSHOT_DIR, TABLE_NAME, TABLE_REPORT),
        *measured,
    ]
