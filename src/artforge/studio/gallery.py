"""The runs under RUNS_DIR: finding them, summarising each, and its live training progress.

A run is any folder holding ``config.json`` (nested ones too, e.g. ``bench/runs/gan``); its id
is its path relative to RUNS_DIR with '/' separators. Everything is read from the run folder
on each request, so a run trained from a terminal shows up and updates like one started from
the page. A broken or half-written file yields a note on the card, never an error page.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..runfolder import (
    CASCADE_BASE,
    CASCADE_KIND,
    CASCADE_UPSCALER,
    CONFIG_NAME,
    DATA_REPORT,
    EVAL,
    METRICS,
    PLOTS,
    SAMPLES,
    WEIGHTS_NAME,
)
from ..training.budget import RECENT_WINDOWS, Budget, recent_rate

MAX_DEPTH = 4  # how deep below RUNS_DIR runs are looked for
LIVE_WINDOW_S = 60.0  # metrics.jsonl written this recently, budget not reached: still training
SKIP_FILES = {CONFIG_NAME, DATA_REPORT}


def find_runs(root: Path) -> list[str]:
    """Ids of the runs below ``root``, newest first. Hidden folders and symlinks are skipped, and
    a run's own subfolders (samples/, state/ ...) are not searched."""
    found: list[tuple[float, str]] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith(".") or e.is_symlink() or not e.is_dir(follow_symlinks=False):
                continue
            path = Path(e.path)
            if (path / CONFIG_NAME).is_file():
                found.append((_mtime(path / CONFIG_NAME), path.relative_to(root).as_posix()))
            elif depth < MAX_DEPTH:
                walk(path, depth + 1)

    walk(root, 1)
    return [run for _, run in sorted(found, key=lambda t: (-t[0], t[1]))]


def file_url(run_id: str, rel: str, path: Path) -> str:
    """The /files URL of a run's file, with its mtime so a browser never shows a stale image."""
    return f"/files/{quote(run_id)}/{quote(rel)}?v={_mtime_ns(path)}"


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when missing or unreadable (a card notes it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line cut short by a crash (or being written now) is skipped."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(_finite(row))
    return rows


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf are not JSON: send them as null (a diverged loss must not break the page)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


TEXT_OPTIONS = ("prompt", "cond", "guidance")  # only text-conditioned runs take these


def sample_options(family: str, cfg: dict[str, Any] | None = None) -> list[str]:
    """The numeric sampling options a run takes (truncation, temperature, steps; guidance for
    text-conditioned diffusion). The prompt is not one of them: see ``conditioning``."""
    from ..models import MODELS

    cls = MODELS.get(family)
    if cls is None:
        return []
    text = conditioning(cfg or {}) == "text"
    return [k for k in cls.sample_options if k not in TEXT_OPTIONS or (text and k == "guidance")]


def conditioning(cfg: dict[str, Any]) -> str | None:
    """ "text" for a run trained on captions (its config's model.text_encoder is hash or minilm):
    the page shows a prompt box and /api/generate passes the prompt on; None otherwise."""
    model = cfg.get("model") if isinstance(cfg, dict) else None
    encoder = model.get("text_encoder", "none") if isinstance(model, dict) else "none"
    return "text" if encoder not in (None, "none") else None


def progress(cfg: dict[str, Any], last: dict[str, Any] | None) -> float | None:
    """How far through its budget a run is, 0..1 (the first budget reached ends training)."""
    if not last:
        return 0.0
    budget = Budget.of(cfg.get("train") or {})
    return budget.spent(last.get("step") or 0, last.get("elapsed") or 0, last.get("epoch") or 0)


def time_left(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    """Seconds of training left by the budget that ends first: a minutes budget's own clock, a
    steps or epochs budget at the recent speed (the training rows' img_per_s, as the progress
    bar takes it). None before the first row or without a budget."""
    last = rows[-1] if rows else None
    if not last or not isinstance(last.get("elapsed"), int | float) or last["elapsed"] <= 0:
        return None
    train = cfg.get("train") or {}
    batch = train.get("batch_size")
    rate = recent_rate(
        r["img_per_s"] for r in rows[-RECENT_WINDOWS:] if isinstance(r.get("img_per_s"), int | float)
    )
    step = last.get("step") if isinstance(last.get("step"), int | float) else 0
    if isinstance(batch, int) and batch > 0 and rate is not None:
        steps_per_s = rate / batch
    else:  # no speed logged: the average since the start
        steps_per_s = step / last["elapsed"] if step else None
    epoch = last.get("epoch") if isinstance(last.get("epoch"), int | float) else None
    left = Budget.of(train).time_left(step, float(last["elapsed"]), steps_per_s, epoch)
    return round(left, 1) if left is not None else None


def modality(cfg: dict[str, Any]) -> str:
    """ "audio" for a run trained on sound (its samples are spectrograms, its outputs WAVs)."""
    data = cfg.get("data") if isinstance(cfg, dict) else None
    return "audio" if isinstance(data, dict) and data.get("modality") == "audio" else "image"


def _training_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the training loop (they carry img_per_s); the monitor's rows are interleaved."""
    return [r for r in rows if "img_per_s" in r]


def status(path: Path, cfg: dict[str, Any], rows: list[dict[str, Any]], job: str | None) -> str:
    """'training', 'finished', 'stopped' (budget not reached), 'failed' or 'new'.

    ``job`` is the status of the run's latest studio job, if it has one. A run started from a
    terminal has none; it counts as training while metrics.jsonl keeps changing and its budget
    is not spent.
    """
    if job == "running":
        return "training"
    train_rows = _training_rows(rows)
    done = (progress(cfg, train_rows[-1] if train_rows else None) or 0) >= 1.0
    if done and (path / WEIGHTS_NAME).is_file():
        return "finished"
    if job == "failed":
        return "failed"
    if job is None and not done and time.time() - _mtime(path / METRICS) < LIVE_WINDOW_S:
        return "training"
    return "stopped" if train_rows else "new"


def latest_sample(run_id: str, path: Path) -> dict[str, Any] | None:
    """The newest samples/step-NNNNNNN.png, with its step."""
    grids = sorted((path / SAMPLES).glob("step-*.png"))
    if not grids:
        return None
    g = grids[-1]
    try:
        step = int(g.stem.split("-", 1)[1])
    except ValueError:
        step = None
    return {"url": file_url(run_id, f"samples/{g.name}", g), "step": step}


def plots(run_id: str, path: Path) -> list[dict[str, str]]:
    return [
        {"name": p.stem, "url": file_url(run_id, f"plots/{p.name}", p)}
        for p in sorted((path / PLOTS).glob("*.png"))
        if ".tmp" not in p.name
    ]


def evals(path: Path) -> list[dict[str, Any]]:
    """Evaluation results in the run folder: eval.json (written by ``artforge eval RUN``, for a
    picture run or a sound run) and any other top-level JSON holding a FID (``--json FILE``
    saved into the run). Numbers and text are kept, and the ``caveats`` list (small samples)."""
    out = []
    for p in sorted(path.glob("*.json")):
        if p.name in SKIP_FILES:
            continue
        d = read_json(p)
        if isinstance(d, dict) and ("fid" in d or p.name == EVAL):
            row = {"file": p.name, **{k: v for k, v in d.items() if not isinstance(v, dict | list)}}
            if isinstance(d.get("caveats"), list):
                row["caveats"] = [str(c) for c in d["caveats"]]
            out.append(row)
    return out


CURVE_POINTS = 120  # rows of a card's loss chart: enough for its ~260 px, small for the poll


def loss_curve(train_rows: list[dict[str, Any]], points: int = CURVE_POINTS) -> list[dict[str, Any]]:
    """The losses (``PHASE/loss``) of at most ``points`` training rows, evenly spread and
    always with the last, for a gallery card's own chart: plots/losses.png is drawn at 450
    px per phase, so a GAN's two or three panels squeezed into a card were unreadable."""
    if not train_rows:
        return []
    stride = max(1, math.ceil(len(train_rows) / points))
    picked = train_rows[::stride]
    if picked[-1] is not train_rows[-1]:
        picked.append(train_rows[-1])
    return [
        {"step": r.get("step"), **{k: v for k, v in r.items() if k.endswith("/loss") and "/" in k}}
        for r in picked
    ]


def upscaler_sizes(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """An upscaler run's {"from": [w, h], "to": [W, H], "factor": f} from its config.json
    (None for any other run): what the Create page offers as output sizes."""
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    f, h, w = model.get("factor"), data.get("height"), data.get("width")
    if cfg.get("family") != "upscaler" or not all(isinstance(v, int) and v > 0 for v in (f, h, w)):
        return None
    return {"from": [w // f, h // f], "to": [w, h], "factor": f}


def cascade_summary(root: Path, run_id: str, cfg: dict[str, Any], jobs: dict[str, str]) -> dict[str, Any]:
    """A cascaded run folder's card (cascade.py): its base stage's, at the final size; it can
    be sampled once both stages have saved weights."""
    out = summary(root, f"{run_id}/{CASCADE_BASE}", jobs)
    path = root / run_id
    up = read_json(path / CASCADE_UPSCALER / CONFIG_NAME)
    out.update(
        id=run_id,
        name=path.name,
        family=CASCADE_KIND,
        base_family=out["family"],
        size=[cfg.get("width"), cfg.get("height")],
        has_model=all((path / s / WEIGHTS_NAME).is_file() for s in (CASCADE_BASE, CASCADE_UPSCALER)),
        cascade={
            "plan": cfg.get("plan"),
            "base_size": [cfg.get("base_width"), cfg.get("base_height")],
            "upscaler": upscaler_sizes(up) if isinstance(up, dict) else None,
        },
    )
    return out


def summary(root: Path, run_id: str, jobs: dict[str, str]) -> dict[str, Any]:
    """What a gallery card shows about one run."""
    path = root / run_id
    raw = read_json(path / CONFIG_NAME)
    cfg = raw if isinstance(raw, dict) else {}
    if cfg.get("kind") == CASCADE_KIND:
        return cascade_summary(root, run_id, cfg, jobs)
    data = cfg.get("data") or {}
    rows = read_rows(path / METRICS)
    train_rows = _training_rows(rows)
    last = train_rows[-1] if train_rows else None
    family = str(cfg.get("family", "?"))
    return {
        "id": run_id,
        "name": path.name,
        "family": family,
        "size": [data.get("width"), data.get("height")],
        "data": data.get("path"),
        "budget": {k: (cfg.get("train") or {}).get(k) for k in ("steps", "minutes", "epochs")},
        "status": status(path, cfg, rows, jobs.get(run_id)),
        "progress": progress(cfg, last),
        "last": last,
        "has_model": (path / WEIGHTS_NAME).is_file(),
        "latest_sample": latest_sample(run_id, path),
        "plots": plots(run_id, path),
        "evals": evals(path),
        "sample_options": sample_options(family, cfg),
        "conditioning": conditioning(cfg),
        "modality": modality(cfg),
        "upscale": upscaler_sizes(cfg),
        "time_left_s": time_left(cfg, train_rows),
        "loss_curve": loss_curve(train_rows),
        "error": None if raw is not None else "config.json is unreadable",
        "modified": _mtime(path / METRICS) or _mtime(path / CONFIG_NAME),
    }


def detail(root: Path, run_id: str, jobs: dict[str, str]) -> dict[str, Any]:
    """A run's page: its summary plus the whole config, every grid and the data report."""
    path = root / run_id
    out = summary(root, run_id, jobs)
    out["config"] = read_json(path / CONFIG_NAME)
    out["samples"] = [
        {"url": file_url(run_id, f"samples/{g.name}", g), "name": g.name}
        for g in sorted((path / SAMPLES).glob("step-*.png"))
    ]
    report = read_json(path / DATA_REPORT)
    if isinstance(report, dict):
        out["data_report"] = {k: v for k, v in report.items() if not isinstance(v, list | dict)}
        skipped = report.get("skipped")
        out["data_report"]["skipped"] = len(skipped) if isinstance(skipped, list) else skipped
    else:
        out["data_report"] = None
    return out


def live(root: Path, run_id: str, since: int, jobs: dict[str, str]) -> dict[str, Any]:
    """What the live view polls: metrics rows after the first ``since`` (all of them, with
    ``reset``, when the file shrank because a resume truncated it), progress and the newest grid."""
    path = root / run_id
    raw = read_json(path / CONFIG_NAME)
    cfg = raw if isinstance(raw, dict) else {}
    rows = read_rows(path / METRICS)
    reset = since > len(rows)
    train_rows = _training_rows(rows)
    last = train_rows[-1] if train_rows else None
    return {
        "id": run_id,
        "rows": rows if reset else rows[since:],
        "total_rows": len(rows),
        "reset": reset,
        "status": status(path, cfg, rows, jobs.get(run_id)),
        "progress": progress(cfg, last),
        "time_left_s": time_left(cfg, train_rows),
        "last": last,
        "latest_sample": latest_sample(run_id, path),
        "plots": plots(run_id, path),
    }
